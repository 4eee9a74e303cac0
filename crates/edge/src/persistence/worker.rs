//! The persistence worker: owns ingest shards by lease and, for each entry in order, stores
//! it in the user's replay log (under the ingest id) and publishes it for live fan-out.
//!
//! At-least-once: the shard cursor advances only after a batch is stored and published, so
//! a worker that dies mid-batch leaves the batch to its successor, which copies idempotently
//! and publishes again (edges drop events a connection already has, by `sid`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_broker::{BrokerError, LogId};
use switchboard_protocol::Event;
use tokio_util::sync::CancellationToken;

use super::{event_position_key, ingest_cursor_key, ingest_log, user_log, worker_lease_key};
use crate::endpoint::user_topic;
use crate::node::Node;

/// Entries processed per shard per round.
const BATCH: usize = 256;
/// Pause when no shard had work (a publish through this same process wakes the worker at
/// once; other edges' publishes are picked up at the next poll).
const IDLE_POLL: Duration = Duration::from_millis(10);

/// Runs the worker until `stop` is cancelled, then gives its shards up.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let shards = node.config.persistence.shards;
    let lease = node.config.persistence.worker_lease;
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
                _ = node.ingest_appended.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }
    for shard in (0..shards).filter(|s| owned[*s as usize]) {
        let _ = node.broker.release(&worker_lease_key(shard), &holder).await;
    }
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
        let mut event: Event = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(shard, %id, error = %e, "skipping a malformed ingest entry");
                continue;
            }
        };
        let Some(user) = event.user.clone() else { continue };
        let sid = id.to_string();
        if event.id.is_empty() {
            event.id = format!("evt_{sid}");
        }
        event.sid = Some(sid.clone());
        let bytes = Bytes::from(serde_json::to_vec(&event).map_err(|e| BrokerError::Protocol(e.to_string()))?);
        copies.push((user_log(&user), *id, bytes.clone()));
        index.push((event_position_key(&user, &event.id), Bytes::from(sid)));
        live.push((user_topic(&user), bytes));
    }
    broker.append_with_id_many(&copies, retention).await?;
    broker.set_many(&index, Some(retention)).await?;
    broker.publish_many(&live).await?;
    broker.set(&cursor_key, Bytes::from(last.to_string()), None).await?;
    *cached = Some(Some(last));
    node.metrics.persisted.inc_by(entries.len() as u64);
    Ok(entries.len())
}
