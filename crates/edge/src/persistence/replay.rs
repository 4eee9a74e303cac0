//! Replay on connect: send what the user missed, oldest first, before any live event.
//!
//! The connection is registered for live events first and holds them back; then the user's
//! log is read after the resume point, the missed events go out marked `replayed`, then
//! `replay_complete`, then the held live events the replay did not already cover. No gap (live
//! events are captured before the read) and no reordering (held events follow the replay and
//! are dropped if the replay had them).

use std::sync::Arc;

use bytes::Bytes;
use switchboard_broker::{BrokerError, LogId};
use switchboard_protocol::{Event, Reply};

use super::{delivery_cursor_key, event_position_key, user_log};
use crate::connection::ConnHandle;
use crate::node::Node;

/// Where a connection's replay starts: the client's `last_event_id` (a log position, or an
/// event id looked up in the log's index), else the position last written to this user on
/// this endpoint, else (a first connection) the current end of the user's log.
pub async fn resume_point(
    node: &Node,
    path: &str,
    user: &str,
    last_event_id: Option<&str>,
) -> Result<LogId, BrokerError> {
    if let Some(given) = last_event_id.filter(|s| !s.is_empty()) {
        if let Some(id) = LogId::parse(given).or_else(|| given.strip_prefix("evt_").and_then(LogId::parse)) {
            return Ok(id);
        }
        if let Some(pos) = node.broker.get(&event_position_key(user, given)).await? {
            if let Some(id) = LogId::parse(&String::from_utf8_lossy(&pos)) {
                return Ok(id);
            }
        }
    }
    if let Some(cursor) = node.broker.get(&delivery_cursor_key(path, user)).await? {
        if let Some(id) = LogId::parse(&String::from_utf8_lossy(&cursor)) {
            return Ok(id);
        }
    }
    let (top, _) = node.broker.read_last_after(&user_log(user), None, 1).await?;
    Ok(top.first().map_or(LogId { ms: 0, seq: 0 }, |(id, _)| *id))
}

/// Sends the missed events after `after` (at most the configured limit, at most the retention
/// old), then `replay_complete`, then releases the held live events.
pub async fn replay(node: &Node, conn: &Arc<ConnHandle>, user: &str, after: LogId) -> Result<(), BrokerError> {
    let p = &node.config.persistence;
    let ep = &conn.endpoint;
    let mut count = 0;
    let oldest = LogId { ms: node.broker.now_ms().saturating_sub(p.retention.as_millis() as u64), seq: 0 };
    let (entries, truncated) =
        node.broker.read_last_after(&user_log(user), Some(after.max(oldest)), p.replay_limit).await?;
    for (sid, body) in entries {
        let Ok(event) = serde_json::from_slice::<Event>(&body) else { continue };
        if !ep.allows_type(&event.kind) {
            continue;
        }
        conn.send_replayed(ep.codec.encode_event(&event, true), sid);
        count += 1;
    }
    node.metrics.replayed.inc_by(count as u64);
    if let Some(frame) = ep.codec.encode_reply(&Reply::ReplayComplete { count, truncated }) {
        conn.send(frame);
    }
    conn.end_hold();
    Ok(())
}

/// Remembers where this connection got to (the last persisted event written to it, or where
/// its replay started), for the user's next connection.
pub async fn save_cursor(node: &Node, conn: &ConnHandle, user: &str, started_at: LogId) {
    let last = conn.last_written().map_or(started_at, |w| w.max(started_at));
    let key = delivery_cursor_key(&conn.endpoint.config.path, user);
    let ttl = node.config.persistence.retention;
    if let Err(e) = node.broker.set(&key, Bytes::from(last.to_string()), Some(ttl)).await {
        tracing::warn!(error = %e, "could not save the replay cursor; the next connection may get duplicates");
    }
}
