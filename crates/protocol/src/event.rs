//! The event: the one thing that flows from publishers through the broker to clients.
//!
//! Events travel between nodes as compact JSON (this struct's serde form). The payload is kept
//! as raw JSON text ([`RawValue`]) so that a node never re-serializes it: every dialect copies the
//! payload bytes as they are into its own frame.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One published event, as carried between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (`evt_` + sortable id, or the publisher's own id); clients deduplicate by it.
    pub id: String,
    /// Event type (`notification`, `threat_detected`, `chat_message`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Set when the event goes to a channel's subscribers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Set when the event is addressed to one user's connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When the event was generated, unix milliseconds.
    pub ts: u64,
    /// The event body, raw JSON exactly as the publisher sent it.
    pub payload: Box<RawValue>,
    /// The user who sent it, for client-published events (stamped by the server, never trusted
    /// from the client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Whether a client-sent event also goes back to the sender's own connections: a chat
    /// message does (the sending connection's confirmation, with the event's id and time; the
    /// sender's other devices' copy); typing indicators and presence announcements do not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub echo: bool,
    /// The payload is raw bytes a back end gave as `payload_base64`: `payload` holds them as a
    /// base64 JSON string. Binary dialects send the bytes as they are; no filter matches them.
    #[serde(default, rename = "bin", skip_serializing_if = "std::ops::Not::not")]
    pub binary: bool,
    /// Position in the user's replay log (`<ms>-<seq>`), for persisted events: edges use it
    /// to skip events a connection already got and to resume after a reconnect.
    #[serde(default, rename = "pos", skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// For persisted events: the position of the entry before this one in the user's log, as
    /// the worker that stored it knew it (`0-0` for a user's first). An edge whose connection
    /// got neither this position nor that one missed something in between (its subscription
    /// was down) and fills the gap from the log before sending this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// The W3C `traceparent` of the span that published it, while tracing is on: the worker's
    /// and the edges' spans for this event join its trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Where an event is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTarget<'a> {
    /// A named channel (`threats`, `conversation:conv-123`).
    Channel(&'a str),
    /// One user's stream.
    User(&'a str),
}

impl Event {
    /// Where this event goes. A user address wins if (wrongly) both are set.
    pub fn target(&self) -> Option<EventTarget<'_>> {
        match (&self.user, &self.channel) {
            (Some(u), _) => Some(EventTarget::User(u)),
            (None, Some(c)) => Some(EventTarget::Channel(c)),
            (None, None) => None,
        }
    }

    /// The payload parsed as a JSON value, for server-side filters (`None` for raw bytes:
    /// only unfiltered subscriptions receive those).
    pub fn payload_value(&self) -> Option<serde_json::Value> {
        if self.binary {
            return None;
        }
        serde_json::from_str(self.payload.get()).ok()
    }

    /// The payload as bytes on a binary wire: the raw bytes of a `payload_base64` event, else
    /// the JSON text.
    pub fn payload_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        use base64::Engine;
        if self.binary {
            let text = self.payload.get().trim_matches('"');
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) {
                return std::borrow::Cow::Owned(bytes);
            }
        }
        std::borrow::Cow::Borrowed(self.payload.get().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_raw_payload_untouched() {
        let text = r#"{"id":"evt_1","type":"notification","user":"alice","ts":5,"payload":{"b": 1,"a":[2, 3]}}"#;
        let ev: Event = serde_json::from_str(text).unwrap();
        assert_eq!(ev.payload.get(), r#"{"b": 1,"a":[2, 3]}"#);
        assert_eq!(ev.target(), Some(EventTarget::User("alice")));
        let again: Event = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(again.payload.get(), ev.payload.get());
        assert_eq!(again.id, "evt_1");
    }
}
