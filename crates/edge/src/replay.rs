//! Replay on connect: send what the user missed, oldest first, before any live event.
//!
//! The connection is registered for live events first and holds them back; then the user's
//! log is read after the resume point, the missed events go out marked `replayed`, then
//! `replay_complete`, then the held live events the replay did not already cover. No gap (live
//! events are captured before the read) and no reordering (held events follow the replay and
//! are dropped if the replay had them).
//!
//! An open connection catches up the same way ([`Replayer::catch_up`], a gap-fill) whenever it
//! may have missed persisted events live: after the node's broker subscriptions were restored
//! from a loss (a dropped pub/sub connection, a slot that moved, a failover), and when a live
//! event's `prev` shows that the one before it never arrived. Its live events are held, the
//! log is read after the newest position it has, the missed events go out, then the held
//! ones. The saved cursor is the last event written, so it never moves past one that was not.
//!
//! The resume point is the client's `last_event_id` (an event id, or a log position), else the
//! position last delivered to the user on this endpoint, else (a first connection) the start of
//! the retention window. A position a client gives is never trusted beyond the log: one past
//! the newest entry is clamped to it, so a bogus or future value can neither break this replay
//! nor, saved as the cursor, every later one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard_broker::{BrokerError, LogId, SharedBroker};
use switchboard_protocol::keyspace::{delivery_cursor, event_position, user_log, user_topic};
use switchboard_protocol::{Event, Reply};

use crate::connection::{ConnHandle, LazyPayload, SendOutcome};
use crate::metrics::Metrics;

/// How long a gap-fill whose read failed waits before it tries again.
const CATCH_UP_RETRY: Duration = Duration::from_secs(1);

/// Replays users' logs to their connections.
pub struct Replayer {
    broker: SharedBroker,
    retention: Duration,
    limit: usize,
    metrics: Arc<Metrics>,
}

fn parse_position(bytes: &[u8]) -> Option<LogId> {
    std::str::from_utf8(bytes).ok().and_then(LogId::parse)
}

impl Replayer {
    /// A replayer over `broker`'s logs, sending at most `limit` events at most `retention` old.
    pub fn new(broker: SharedBroker, retention: Duration, limit: usize, metrics: Arc<Metrics>) -> Replayer {
        Replayer { broker, retention, limit, metrics }
    }

    /// Where a connection's replay starts (exclusive); `None` for a user with no history on
    /// this endpoint (the whole retention window is replayed).
    pub async fn resume_point(
        &self,
        endpoint_path: &str,
        user: &str,
        last_event_id: Option<&str>,
    ) -> Result<Option<LogId>, BrokerError> {
        if let Some(given) = last_event_id.filter(|s| !s.is_empty()) {
            // An event id first: publishers choose ids, and a numeric one is not a position.
            if let Some(pos) = self.broker.get(&event_position(user, given)).await? {
                if let Some(id) = parse_position(&pos) {
                    return Ok(Some(id));
                }
            }
            if given.contains('-') {
                if let Some(id) = LogId::parse(given) {
                    return self.clamped(user, id).await.map(Some);
                }
            }
        }
        match self.broker.get(&delivery_cursor(endpoint_path, user)).await? {
            Some(cursor) => Ok(parse_position(&cursor)),
            None => Ok(None),
        }
    }

    /// `id`, or the newest position of the user's log if `id` is past it.
    async fn clamped(&self, user: &str, id: LogId) -> Result<LogId, BrokerError> {
        let (newest, _) = self.broker.read_last_after(&user_log(user), None, 1).await?;
        let top = newest.first().map_or(LogId { ms: 0, seq: 0 }, |(top, _)| *top);
        Ok(id.min(top))
    }

    /// Sends the missed events after `after` (at most the limit, at most the retention old),
    /// then `replay_complete`, then releases the held live events. Returns where the replay
    /// started, which is where the next one starts if nothing newer is written.
    pub async fn replay(&self, conn: &Arc<ConnHandle>, user: &str, after: Option<LogId>) -> Result<LogId, BrokerError> {
        let ep = &conn.endpoint;
        let oldest = LogId { ms: self.broker.now_ms().saturating_sub(self.retention.as_millis() as u64), seq: 0 };
        let start = after.map_or(oldest, |a| a.max(oldest));
        // The live events held so far were published before this read: it covers them.
        let covered = conn.begin_hold();
        let (entries, truncated) = self.broker.read_last_after(&user_log(user), Some(start), self.limit).await?;
        // The missed events, the replay's end and the live events held meanwhile leave
        // together: one write for all of them rather than one each.
        conn.cork();
        let mut count = 0;
        for (position, body) in entries {
            let Ok(event) = serde_json::from_slice::<Event>(&body) else { continue };
            if !ep.allows_type(&event.kind) {
                conn.pass_replayed(position);
                continue;
            }
            conn.send_replayed(ep.codec.encode_event(&event, true), position);
            count += 1;
        }
        conn.done_through(start);
        self.metrics.replayed.inc_by(count as u64);
        if let Some(frame) = ep.codec.encode_reply(&Reply::ReplayComplete { count, truncated }) {
            conn.send(frame);
        }
        self.count_unrecoverable(conn.end_hold(covered));
        conn.uncork();
        Ok(start)
    }

    /// Fills a gap in what an open connection of `user` got live: holds its live events, sends
    /// the persisted events after the newest position it has from the user's log (as live
    /// events, in order), then the held ones (see [`ConnHandle::end_hold`]). A read that fails
    /// is tried again a moment later, the live events held meanwhile.
    pub async fn catch_up(&self, conn: &Arc<ConnHandle>, user: &str) {
        let ep = &conn.endpoint;
        let covered = conn.begin_hold();
        let after = conn.done_until();
        self.metrics.gap_fill_reads.inc();
        let entries = match self.broker.read_after(&user_log(user), after, self.limit + 1).await {
            Ok(entries) => entries,
            Err(e) => {
                self.metrics.broker_errors.with_label_values(&["gap_fill"]).inc();
                tracing::warn!(error = %e, "reading a user's log to fill a gap failed; trying again shortly");
                let conn = Arc::downgrade(conn);
                tokio::spawn(async move {
                    tokio::time::sleep(CATCH_UP_RETRY).await;
                    if let Some(conn) = conn.upgrade() {
                        conn.request_catch_up();
                    }
                });
                return;
            }
        };
        let topic = user_topic(user);
        conn.cork();
        let mut filled = 0;
        for (position, body) in entries {
            let Ok(event) = serde_json::from_slice::<Event>(&body) else { continue };
            if ep.allows_type(&event.kind) && conn.selects(&topic, &event, &mut LazyPayload::default()) {
                if conn.send_replayed(ep.codec.encode_event(&event, false), position) == SendOutcome::Queued {
                    filled += 1;
                }
            } else {
                conn.pass_replayed(position);
            }
        }
        self.metrics.gap_filled.inc_by(filled);
        self.count_unrecoverable(conn.end_hold(covered));
        conn.uncork();
    }

    fn count_unrecoverable(&self, gaps: usize) {
        if gaps > 0 {
            self.metrics.gap_unrecoverable.inc_by(gaps as u64);
            tracing::warn!(gaps, "a connection missed more persisted events than the user's log keeps");
        }
    }

    /// Remembers where this connection got to (the last persisted event written to it, or
    /// where its replay started), for the user's next connection.
    pub async fn save_cursor(&self, conn: &ConnHandle, user: &str, started_at: LogId) {
        let last = conn.last_written().map_or(started_at, |w| w.max(started_at));
        let key = delivery_cursor(conn.endpoint.path(), user);
        if let Err(e) = self.broker.set_lossy(&key, Bytes::from(last.to_string()), Some(self.retention)).await {
            tracing::warn!(error = %e, "could not save the replay cursor; the next connection may get duplicates");
        }
    }
}
