//! Stamping an ingest entry with its log position, for the user's log and the live fan-out.
//!
//! Two steps, because the second needs what the first finds: [`route`] reads who the entry is
//! for (the worker then looks up the newest position of that user's log), [`Routed::stamp`]
//! writes the entry's position (`pos`) and the position before it in the user's log (`prev`),
//! by which an edge notices that its connection missed an event in between.
//!
//! The publish API writes compact JSON objects without a position: those get the fields
//! appended to their bytes, with nothing else parsed into values or re-serialized (this runs
//! once per persisted event). Any other entry goes the long way.

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
    #[serde(default)]
    prev: Present,
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

/// An ingest entry whose addressee is known, waiting for its positions.
pub struct Routed<'a> {
    body: &'a [u8],
    routing: Routing<'a>,
    user: Cow<'a, str>,
}

/// Reads who the ingest entry `body` is for; `None` for an entry addressed to no user. Fails
/// for an entry that is not an event.
pub fn route(body: &[u8]) -> Result<Option<Routed<'_>>, serde_json::Error> {
    let mut routing: Routing<'_> = serde_json::from_slice(body)?;
    let Some(user) = routing.user.take() else { return Ok(None) };
    Ok(Some(Routed { body, routing, user }))
}

impl Routed<'_> {
    /// The addressed user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Stamps the entry with its position `id` and the position `prev` before it in the user's
    /// log (the event's `pos` and `prev` fields).
    pub fn stamp(self, id: LogId, prev: LogId) -> Result<Stamped, serde_json::Error> {
        let Routed { body, routing, user } = self;
        let (position, prev) = (id.to_string(), prev.to_string());
        let fresh = !routing.position.0 && !routing.prev.0;
        if !routing.id.is_empty() && fresh && body.last() == Some(&b'}') {
            let mut bytes = Vec::with_capacity(body.len() + position.len() + prev.len() + 20);
            bytes.extend_from_slice(&body[..body.len() - 1]);
            // Positions are `<digits>-<digits>`: nothing in them needs escaping.
            for (name, value) in [(&b",\"pos\":\""[..], &position), (b"\",\"prev\":\"", &prev)] {
                bytes.extend_from_slice(name);
                bytes.extend_from_slice(value.as_bytes());
            }
            bytes.extend_from_slice(b"\"}");
            return Ok(Stamped {
                user: user.into_owned(),
                event_id: routing.id.into_owned(),
                position,
                bytes: bytes.into(),
                traceparent: routing.traceparent.map(Cow::into_owned),
            });
        }
        let mut event: Event = serde_json::from_slice(body)?;
        if event.id.is_empty() {
            event.id = format!("evt_{position}");
        }
        event.position = Some(position.clone());
        event.prev = Some(prev);
        let bytes = Bytes::from(serde_json::to_vec(&event)?);
        let traceparent = event.traceparent;
        Ok(Stamped { user: user.into_owned(), event_id: event.id, position, bytes, traceparent })
    }
}

/// Stamps the ingest entry at `id` in one go ([`route`], then [`Routed::stamp`] with `prev`);
/// `None` for an entry addressed to no user.
pub fn stamp(id: LogId, prev: LogId, body: &[u8]) -> Result<Option<Stamped>, serde_json::Error> {
    route(body)?.map(|routed| routed.stamp(id, prev)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> LogId {
        LogId::parse("1770552000000-7").expect("a log id")
    }

    fn prev() -> LogId {
        LogId::parse("1770551999000-0").expect("a log id")
    }

    #[test]
    fn an_entry_from_the_publish_api_gets_its_positions_appended_and_stays_one_valid_event() {
        let body = br#"{"id":"evt_1","type":"notification","user":"al\"ice","ts":5,"payload":{"a":[1,{"pos":"x"}]}}"#;
        let stamped = stamp(id(), prev(), body).expect("valid").expect("addressed to a user");
        assert_eq!((stamped.user.as_str(), stamped.event_id.as_str()), ("al\"ice", "evt_1"));
        assert_eq!(stamped.position, "1770552000000-7");
        let event: Event = serde_json::from_slice(&stamped.bytes).expect("still one JSON event");
        assert_eq!(event.position.as_deref(), Some("1770552000000-7"));
        assert_eq!(event.prev.as_deref(), Some("1770551999000-0"));
        assert_eq!(event.payload.get(), r#"{"a":[1,{"pos":"x"}]}"#, "the payload untouched");
        assert_eq!((event.user.as_deref(), event.ts), (Some("al\"ice"), 5));
    }

    #[test]
    fn other_entries_take_the_long_way_and_come_out_the_same_shape() {
        // No id: one is made from the position. Positions already there: replaced, not repeated.
        for body in [
            &br#"{"id":"","type":"t","user":"u","ts":1,"payload":{}}"#[..],
            br#"{"id":"e","type":"t","user":"u","ts":1,"payload":{},"pos":"1-1"}"#,
            br#"{"id":"e","type":"t","user":"u","ts":1,"payload":{},"pos":null}"#,
            br#"{"id":"e","type":"t","user":"u","ts":1,"payload":{},"prev":"0-1"}"#,
            b" {\"id\":\"e\",\"type\":\"t\",\"user\":\"u\",\"ts\":1,\"payload\":{}} ",
        ] {
            let stamped = stamp(id(), prev(), body).expect("valid").expect("addressed");
            let text = std::str::from_utf8(&stamped.bytes).expect("UTF-8");
            assert_eq!(text.matches("\"pos\"").count(), 1, "{text}");
            assert_eq!(text.matches("\"prev\"").count(), 1, "{text}");
            let event: Event = serde_json::from_slice(&stamped.bytes).expect("valid");
            assert_eq!(event.position.as_deref(), Some("1770552000000-7"));
            assert_eq!(event.prev.as_deref(), Some("1770551999000-0"));
            assert!(!event.id.is_empty() && event.id == stamped.event_id, "{text}");
        }
    }

    #[test]
    fn entries_for_nobody_are_skipped_and_garbage_is_an_error() {
        let channel = br#"{"id":"e","type":"t","channel":"c","ts":1,"payload":{}}"#;
        assert!(stamp(id(), prev(), channel).expect("valid").is_none());
        assert!(stamp(id(), prev(), b"{not json").is_err());
        let routed = route(br#"{"id":"e","type":"t","user":"bob","ts":1,"payload":{}}"#).expect("valid");
        assert_eq!(routed.as_ref().map(Routed::user), Some("bob"));
    }
}
