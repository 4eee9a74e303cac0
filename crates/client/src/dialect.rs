//! What a client needs of a dialect, taken from the protocol crate's codecs, so the client
//! speaks exactly what the server decodes: how a subscription is spelled, and what a server
//! message is (an event with an id, an error, a control message).

use bytes::Bytes;
use switchboard_protocol::{Command, DialectKind, FrameKind, ServerMessage, SubscriptionTarget};

/// A message as its dialect frames it (text or binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMessage {
    /// Text or binary frame.
    pub frame: FrameKind,
    /// The message.
    pub bytes: Bytes,
}

/// The client side of a dialect.
pub trait ClientDialect {
    /// The messages that subscribe to `topics`: event types where the dialect's clients pick
    /// types, channels otherwise (one message per channel where the dialect says so).
    fn subscriptions(self, topics: &[&str]) -> Vec<ClientMessage>;

    /// What a server message is, or `None` if it does not decode.
    fn classify(self, message: &[u8]) -> Option<ServerMessage>;
}

impl ClientDialect for DialectKind {
    fn subscriptions(self, topics: &[&str]) -> Vec<ClientMessage> {
        let codec = self.codec();
        let target = |t: &&str| {
            if codec.opt_in_event_types() {
                SubscriptionTarget::EventType(t.to_string())
            } else {
                SubscriptionTarget::Channel(t.to_string())
            }
        };
        let command =
            Command::Subscribe { targets: topics.iter().map(target).collect(), filter: None, request_id: None };
        // Every dialect can subscribe to its own kind of target without a filter.
        codec
            .encode_command(&command)
            .unwrap_or_default()
            .into_iter()
            .map(|bytes| ClientMessage { frame: codec.frame_kind(), bytes })
            .collect()
    }

    fn classify(self, message: &[u8]) -> Option<ServerMessage> {
        self.codec().decode_server(message).ok()
    }
}

/// The id of `message` if it is an event of `dialect`.
pub fn event_id(dialect: DialectKind, message: &[u8]) -> Option<String> {
    match dialect.classify(message) {
        Some(ServerMessage::Event { id, .. }) => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn json_of(m: &ClientMessage) -> Value {
        serde_json::from_slice(&m.bytes).expect("JSON")
    }

    #[test]
    fn subscriptions_are_spelled_per_dialect() {
        let orbnet = DialectKind::Orbnet.subscriptions(&["notification", "server_alert"]);
        assert_eq!(orbnet.len(), 1);
        assert_eq!(json_of(&orbnet[0]), json!({"type": "subscribe", "channels": ["notification", "server_alert"]}));
        let basic = DialectKind::Basic.subscriptions(&["a", "b"]);
        assert_eq!(
            basic.iter().map(json_of).collect::<Vec<_>>(),
            [
                json!({"type": "subscribe", "data": {"channel": "a"}}),
                json!({"type": "subscribe", "data": {"channel": "b"}})
            ]
        );
        assert!(basic.iter().all(|m| m.frame == FrameKind::Text));
    }

    #[test]
    fn events_are_told_from_control_messages() {
        let orbnet = DialectKind::Orbnet;
        let basic = DialectKind::Basic;
        let text = |v: Value| v.to_string().into_bytes();
        assert_eq!(
            event_id(orbnet, &text(json!({"type": "notification", "id": "evt_1", "payload": {}}))),
            Some("evt_1".into())
        );
        assert_eq!(
            event_id(basic, &text(json!({"type": "status_update", "id": "evt_2", "data": {}}))),
            Some("evt_2".into())
        );
        assert_eq!(event_id(orbnet, &text(json!({"type": "replay_complete", "count": 0}))), None);
        assert_eq!(event_id(orbnet, &text(json!({"type": "error", "code": "x", "message": "m"}))), None);
        assert!(matches!(
            basic.classify(&text(json!({"type": "error", "data": {"code": "x"}}))),
            Some(ServerMessage::Error { .. })
        ));
    }
}
