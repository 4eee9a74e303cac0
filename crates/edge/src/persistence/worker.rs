//! The persistence worker: owns ingest shards by lease and, for each entry in order, stores
//! it in the user's replay log (under the ingest id) and publishes it for live fan-out.
//!
//! At-least-once: the shard cursor advances only after a batch is stored and published, so
//! a worker that dies mid-batch leaves the batch to its successor, which copies idempotently
//! and publishes again (edges drop events a connection already has, by `sid`).

use std::sync::Arc;
use std::time::Instant;

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use switchboard_broker::{BrokerError, LogId};
use switchboard_protocol::Event;
use tokio_util::sync::CancellationToken;

use super::{event_position_key, ingest_cursor_key, ingest_log, user_log, worker_lease_key, INGEST_WAKE_TOPIC};
use crate::endpoint::user_topic;
use crate::node::Node;

/// Entries processed per shard per round.
const BATCH: usize = 256;

/// Runs the worker until `stop` is cancelled, then gives its shards up.
///
/// Between rounds with nothing to do it waits for an edge's [`INGEST_WAKE_TOPIC`] message, or
/// `idle_poll` (for entries written to the ingest log by other means), or a third of its lease
/// (to renew it), whichever comes first.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let shards = node.config.persistence.shards;
    let lease = node.config.persistence.worker_lease;
    let idle = node.config.persistence.idle_poll.min(lease / 3);
    let wake = [INGEST_WAKE_TOPIC.to_owned()];
    if let Err(e) = node.broker.subscribe(&wake).await {
        tracing::warn!(error = %e, "no wake-ups from edges; polling the ingest log every {idle:?}");
    }
    let holder = node.id.clone();
    let mut owned = vec![false; shards as usize];
    // The cursor of a shard this worker owns changes only through this worker: it is read
    // from the broker when the shard is taken, then kept here.
    let mut cursors: Vec<Option<Option<LogId>>> = vec![None; shards as usize];
    let mut renewed_at = Instant::now();
    while !stop.is_cancelled() {
        let renew_due = renewed_at.elapsed() >= lease / 3;
        if renew_due {
            renewed_at = Instant::now();
        }
        let mut worked = 0;
        for shard in 0..shards {
            let key = worker_lease_key(shard);
            let held = &mut owned[shard as usize];
            let outcome = if *held && renew_due {
                node.broker.renew(&key, std::slice::from_ref(&holder), lease).await.map(|n| n == 1)
            } else if !*held {
                node.broker.try_acquire(&key, &holder, 1, lease).await
            } else {
                Ok(true)
            };
            let now_held = outcome.unwrap_or(false);
            if now_held != *held {
                tracing::info!(shard, owned = now_held, "ingest shard ownership changed");
                cursors[shard as usize] = None;
            }
            *held = now_held;
            if *held {
                match process(&node, shard, &mut cursors[shard as usize]).await {
                    Ok(n) => worked += n,
                    Err(e) => tracing::warn!(shard, error = %e, "persisting a batch failed; it will be retried"),
                }
            }
        }
        if worked == 0 {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = node.dispatcher.ingest_appended().notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }
    for shard in (0..shards).filter(|s| owned[*s as usize]) {
        let _ = node.broker.release(&worker_lease_key(shard), &holder).await;
    }
    let _ = node.broker.unsubscribe(&wake).await;
}

/// Processes one batch of a shard; returns how many entries it handled.
async fn process(node: &Node, shard: u32, cached: &mut Option<Option<LogId>>) -> Result<usize, BrokerError> {
    let broker = &node.broker;
    let retention = node.config.persistence.retention;
    let cursor_key = ingest_cursor_key(shard);
    let cursor = match *cached {
        Some(c) => c,
        None => broker.get(&cursor_key).await?.and_then(|b| LogId::parse(&String::from_utf8_lossy(&b))),
    };
    *cached = Some(cursor);
    let entries = broker.read_after(&ingest_log(shard), cursor, BATCH).await?;
    let Some((last, _)) = entries.last() else { return Ok(0) };
    let last = *last;
    // The whole batch goes out in three round trips: copy into the users' logs, index the
    // event ids, publish. Each step is idempotent, so a batch cut short is simply redone.
    let mut copies = Vec::with_capacity(entries.len());
    let mut index = Vec::with_capacity(entries.len());
    let mut live = Vec::with_capacity(entries.len());
    for (id, body) in &entries {
        let stamped = match stamp(*id, body) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(shard, %id, error = %e, "skipping a malformed ingest entry");
                continue;
            }
        };
        copies.push((user_log(&stamped.user), *id, stamped.bytes.clone()));
        index.push((event_position_key(&stamped.user, &stamped.event_id), Bytes::from(stamped.sid)));
        live.push((user_topic(&stamped.user), stamped.bytes));
    }
    // A replay sends at most `replay_limit` events; one more tells it that more were missed.
    broker.append_with_id_many(&copies, retention, node.config.persistence.replay_limit + 1).await?;
    broker.set_many(&index, Some(retention)).await?;
    broker.publish_many(&live).await?;
    broker.set(&cursor_key, Bytes::from(last.to_string()), None).await?;
    *cached = Some(Some(last));
    // Done with these: the ingest log holds only what is not yet stored (a failed trim is
    // made good by the next one, which trims through a later id).
    if let Err(e) = broker.trim_through(&ingest_log(shard), last).await {
        tracing::warn!(shard, error = %e, "could not trim the ingest log");
    }
    node.metrics.persisted.inc_by(entries.len() as u64);
    Ok(entries.len())
}

/// An ingest entry made ready for the user's log and the live fan-out.
#[derive(Debug)]
pub struct Stamped {
    /// The addressed user.
    pub user: String,
    /// The event's id (what clients resume from).
    pub event_id: String,
    /// The entry's position, as the event's `sid`.
    pub sid: String,
    /// The event as stored and published: the entry with its `sid`.
    pub bytes: Bytes,
}

/// The fields the worker routes by, borrowed from the entry (the payload is skipped).
#[derive(Deserialize)]
struct Routing<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default)]
    sid: Present,
}

/// Whether a field is there at all (even as `null`).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// Stamps the ingest entry at `id` with its position (`sid`); `None` for an entry addressed
/// to no user. The publish API writes compact JSON objects without a `sid`: those get the
/// field appended to their bytes, with nothing else parsed into values or re-serialized. Any
/// other entry goes the long way (parse, set, serialize).
pub fn stamp(id: LogId, body: &[u8]) -> Result<Option<Stamped>, serde_json::Error> {
    let sid = id.to_string();
    let routing: Routing<'_> = serde_json::from_slice(body)?;
    let Some(user) = routing.user else { return Ok(None) };
    if !routing.id.is_empty() && !routing.sid.0 && body.last() == Some(&b'}') {
        let mut bytes = Vec::with_capacity(body.len() + sid.len() + 10);
        bytes.extend_from_slice(&body[..body.len() - 1]);
        // The sid is `<digits>-<digits>`: nothing in it needs escaping.
        bytes.extend_from_slice(b",\"sid\":\"");
        bytes.extend_from_slice(sid.as_bytes());
        bytes.extend_from_slice(b"\"}");
        return Ok(Some(Stamped {
            user: user.into_owned(),
            event_id: routing.id.into_owned(),
            sid,
            bytes: bytes.into(),
        }));
    }
    let mut event: Event = serde_json::from_slice(body)?;
    if event.id.is_empty() {
        event.id = format!("evt_{sid}");
    }
    event.sid = Some(sid.clone());
    let bytes = Bytes::from(serde_json::to_vec(&event)?);
    Ok(Some(Stamped { user: user.into_owned(), event_id: event.id, sid, bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> LogId {
        LogId::parse("1770552000000-7").expect("a log id")
    }

    #[test]
    fn an_entry_from_the_publish_api_gets_its_sid_appended_and_stays_one_valid_event() {
        let body = br#"{"id":"evt_1","type":"notification","user":"al\"ice","ts":5,"payload":{"a":[1,{"sid":"x"}]}}"#;
        let stamped = stamp(id(), body).expect("valid").expect("addressed to a user");
        assert_eq!((stamped.user.as_str(), stamped.event_id.as_str()), ("al\"ice", "evt_1"));
        assert_eq!(stamped.sid, "1770552000000-7");
        let event: Event = serde_json::from_slice(&stamped.bytes).expect("still one JSON event");
        assert_eq!(event.sid.as_deref(), Some("1770552000000-7"));
        assert_eq!(event.payload.get(), r#"{"a":[1,{"sid":"x"}]}"#, "the payload untouched");
        assert_eq!((event.user.as_deref(), event.ts), (Some("al\"ice"), 5));
    }

    #[test]
    fn other_entries_take_the_long_way_and_come_out_the_same_shape() {
        // No id: one is made from the position. A sid already there: replaced, not repeated.
        for body in [
            &br#"{"id":"","type":"t","user":"u","ts":1,"payload":{}}"#[..],
            br#"{"id":"e","type":"t","user":"u","ts":1,"payload":{},"sid":"1-1"}"#,
            br#"{"id":"e","type":"t","user":"u","ts":1,"payload":{},"sid":null}"#,
            b" {\"id\":\"e\",\"type\":\"t\",\"user\":\"u\",\"ts\":1,\"payload\":{}} ",
        ] {
            let stamped = stamp(id(), body).expect("valid").expect("addressed");
            let text = std::str::from_utf8(&stamped.bytes).expect("UTF-8");
            assert_eq!(text.matches("\"sid\"").count(), 1, "{text}");
            let event: Event = serde_json::from_slice(&stamped.bytes).expect("valid");
            assert_eq!(event.sid.as_deref(), Some("1770552000000-7"));
            assert!(!event.id.is_empty() && event.id == stamped.event_id, "{text}");
        }
    }

    #[test]
    fn entries_for_nobody_are_skipped_and_garbage_is_an_error() {
        assert!(stamp(id(), br#"{"id":"e","type":"t","channel":"c","ts":1,"payload":{}}"#).expect("valid").is_none());
        assert!(stamp(id(), b"{not json").is_err());
    }
}
