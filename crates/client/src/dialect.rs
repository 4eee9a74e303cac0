//! What differs between the dialects for a client: how a subscription is spelled, and how an
//! event is told from a control message. Both JSON dialects carry an `id` on every event.

use serde_json::{json, Value};

/// A Switchboard dialect this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OrbNET (`/ws/notifications`, `/ws/chat`, `/ws/threats`): subscriptions name event types.
    Orbnet,
    /// The generic JWT service (`/ws`): subscriptions name channels, one per message.
    Basic,
}

impl Dialect {
    /// The messages that subscribe to `topics`: event types for orbnet (one message), channels
    /// for basic (one message each, as the document defines `subscribe` for one channel).
    pub fn subscriptions(self, topics: &[&str]) -> Vec<Value> {
        match self {
            Dialect::Orbnet => vec![json!({"type": "subscribe", "channels": topics})],
            Dialect::Basic => {
                topics.iter().map(|channel| json!({"type": "subscribe", "data": {"channel": channel}})).collect()
            }
        }
    }
}

/// The id of `message` if it is an event (rather than an ack, error, pong or
/// `replay_complete`), in either dialect.
pub fn event_id(message: &Value) -> Option<&str> {
    let id = message.get("id")?.as_str()?;
    (message.get("type").and_then(Value::as_str) != Some("error")).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_spelled_per_dialect() {
        assert_eq!(
            Dialect::Orbnet.subscriptions(&["notification", "server_alert"]),
            [json!({"type": "subscribe", "channels": ["notification", "server_alert"]})]
        );
        assert_eq!(
            Dialect::Basic.subscriptions(&["a", "b"]),
            [
                json!({"type": "subscribe", "data": {"channel": "a"}}),
                json!({"type": "subscribe", "data": {"channel": "b"}})
            ]
        );
    }

    #[test]
    fn events_are_told_from_control_messages() {
        assert_eq!(event_id(&json!({"type": "notification", "id": "evt_1", "payload": {}})), Some("evt_1"));
        assert_eq!(event_id(&json!({"type": "status_update", "id": "evt_2", "data": {}})), Some("evt_2"));
        assert_eq!(event_id(&json!({"type": "replay_complete", "count": 0})), None);
        assert_eq!(event_id(&json!({"type": "error", "id": "x", "code": "INVALID"})), None);
    }
}
