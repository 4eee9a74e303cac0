//! Stamping an ingest entry with its log position, for the user's log and the live fan-out.
//!
//! The publish API writes compact JSON objects without a position: those get the field appended
//! to their bytes, with nothing else parsed into values or re-serialized (this runs once per
//! persisted event). Any other entry goes the long way.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use switchboard_broker::LogId;
use switchboard_protocol::Event;

/// An ingest entry made ready for the user's log and the live fan-out.
#[derive(Debug)]
pub struct Stamped {
    /// The addressed user.
    pub user: String,
    /// The event's id (what clients resume from).
    pub event_id: String,
    /// The entry's position in the ingest log, which becomes its position in the user's log.
    pub position: String,
    /// The event as stored and published: the entry with its position.
    pub bytes: Bytes,
    /// The publishing span's `traceparent`, when the event carries one (tracing is on).
    pub traceparent: Option<String>,
}

/// The fields the worker routes by, borrowed from the entry (the payload is skipped).
#[derive(Deserialize)]
struct Routing<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, rename = "pos")]
    position: Present,
    #[serde(default, borrow)]
    traceparent: Option<Cow<'a, str>>,
}

/// Whether a field is there at all (even as `null`).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// Stamps the ingest entry at `id` with its position (the event's `pos` field); `None` for an
/// entry addressed to no user. Fails for an entry that is not an event.
pub fn stamp(id: LogId, body: &[u8]) -> Result<Option<Stamped>, serde_json::Error> {
    let position = id.to_string();
    let routing: Routing<'_> = serde_json::from_slice(body)?;
    let Some(user) = routing.user else { return Ok(None) };
    if !routing.id.is_empty() && !routing.position.0 && body.last() == Some(&b'}') {
        let mut bytes = Vec::with_capacity(body.len() + position.len() + 10);
        bytes.extend_from_slice(&body[..body.len() - 1]);
        // The position is `<digits>-<digits>`: nothing in it needs escaping.
        bytes.extend_from_slice(b",\"pos\":\"");
        bytes.extend_from_slice(position.as_bytes());
        bytes.extend_from_slice(b"\"}");
        return Ok(Some(Stamped {
            user: user.into_owned(),
            event_id: routing.id.into_owned(),
            position,
            bytes: bytes.into(),
            traceparent: routing.traceparent.map(Cow::into_owned),
        }));
    }
    let mut event: Event = serde_json::from_slice(body)?;
    if event.id.is_empty() {
        event.id = format!("evt_{position}");
    }
    event.position = Some(position.clone());
    let bytes = Bytes::from(serde_json::to_vec(&event)?);
    let traceparent = event.traceparent;
    Ok(Some(Stamped { user: user.into_owned(), event_id: event.id, position, bytes, traceparent }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> LogId {
        LogId::parse("1770552000000-7").expect("a log id")
    }

    #[test]
    fn an_entry_from_the_publish_api_gets_its_position_appended_and_stays_one_valid_event() {
        let body = br#"{"id":"evt_1","type":"notification","user":"al\"ice","ts":5,"payload":{"a":[1,{"pos":"x"}]}}"#;
        let stamped = stamp(id(), body).expect("valid").expect("addressed to a user");
        assert_eq!((stamped.user.as_str(), stamped.event_id.as_str()), ("al\"ice", "evt_1"));
        assert_eq!(stamped.position, "1770552000000-7");
        let event: Event = serde_json::from_slice(&stamped.bytes).expect("still one JSON event");
        assert_eq!(event.position.as_deref(), Some("1770552000000-7"));
        assert_eq!(event.payload.get(), r#"{"a":[1,{"pos":"x"}]}"#, "the payload untouched");
        assert_eq!((event.user.as_deref(), event.ts), (Some("al\"ice"), 5));
    }

    #[test]
    fn other_entries_take_the_long_way_and_come_out_the_same_shape() {
        // No id: one is made from the position. A position already there: replaced, not repeated.
        for body in [
            &br#"{"id":"","type":"t","user":"u","ts":1,"payload":{}}"#[..],
            br#"{"id":"e","type":"t","user":"u","ts":1,"payload":{},"pos":"1-1"}"#,
            br#"{"id":"e","type":"t","user":"u","ts":1,"payload":{},"pos":null}"#,
            b" {\"id\":\"e\",\"type\":\"t\",\"user\":\"u\",\"ts\":1,\"payload\":{}} ",
        ] {
            let stamped = stamp(id(), body).expect("valid").expect("addressed");
            let text = std::str::from_utf8(&stamped.bytes).expect("UTF-8");
            assert_eq!(text.matches("\"pos\"").count(), 1, "{text}");
            let event: Event = serde_json::from_slice(&stamped.bytes).expect("valid");
            assert_eq!(event.position.as_deref(), Some("1770552000000-7"));
            assert!(!event.id.is_empty() && event.id == stamped.event_id, "{text}");
        }
    }

    #[test]
    fn entries_for_nobody_are_skipped_and_garbage_is_an_error() {
        assert!(stamp(id(), br#"{"id":"e","type":"t","channel":"c","ts":1,"payload":{}}"#).expect("valid").is_none());
        assert!(stamp(id(), b"{not json").is_err());
    }
}
