//! The worker loop: owns ingest shards by lease and, for each entry in order, stores it in the
//! user's replay log (under its ingest position) and publishes it for live fan-out.
//!
//! At-least-once: the shard cursor advances only after a batch is stored and published, so
//! a worker that dies mid-batch leaves the batch to its successor, which copies idempotently
//! and publishes again (edges drop events a connection already has, by position). Leases are
//! fenced: every acquisition by a new owner gets a newer token, and the commit of a batch
//! (cursor, trim) carries it, so a worker that stalled past its lease while another took over
//! writes nothing when it resumes and stands down. Its copies into users' logs meanwhile are
//! harmless: a log only takes an entry newer than its newest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_broker::{BrokerError, LogId, SharedBroker};
use switchboard_protocol::keyspace::{
    event_position, ingest_cursor, ingest_log, user_log, user_topic, worker_fence, worker_lease, INGEST_WAKE_TOPIC,
};
use switchboard_protocol::timefmt::now_millis;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::WorkerMetrics;
use crate::stamp::stamp;

/// Entries processed per shard per round.
const BATCH: usize = 256;

/// What a worker needs to know (the `persistence` section of the node's config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Ingest log shards.
    pub shards: u32,
    /// How long events are kept in the users' logs.
    pub retention: Duration,
    /// Most events one replay sends (a user's log keeps one more).
    pub replay_limit: usize,
    /// A dead worker's shards are taken over within this time.
    pub lease: Duration,
    /// How often an idle worker looks at its shards anyway.
    pub idle_poll: Duration,
    /// This worker's name in shard leases (unique in the cluster).
    pub holder: String,
}

/// What a worker works with.
struct Worker {
    broker: SharedBroker,
    settings: Settings,
    metrics: WorkerMetrics,
}

/// Runs the worker until `stop` is cancelled, then gives its shards up.
///
/// Between rounds with nothing to do it waits for an edge's [`INGEST_WAKE_TOPIC`] message, or
/// `idle_poll` (for entries written to the ingest log by other means), or a third of its lease
/// (to renew it), whichever comes first.
pub async fn run(
    broker: SharedBroker,
    settings: Settings,
    metrics: WorkerMetrics,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let w = Worker { broker, settings, metrics };
    let shards = w.settings.shards;
    let lease = w.settings.lease;
    let idle = w.settings.idle_poll.min(lease / 3);
    let wake_topic = [INGEST_WAKE_TOPIC.to_owned()];
    if let Err(e) = w.broker.subscribe(&wake_topic).await {
        tracing::warn!(error = %e, "no wake-ups from edges; polling the ingest log every {idle:?}");
    }
    let holder = w.settings.holder.clone();
    let mut states: Vec<ShardState> = (0..shards).map(|_| ShardState::default()).collect();
    let mut renewed_at = Instant::now();
    while !stop.is_cancelled() {
        let renew_due = renewed_at.elapsed() >= lease / 3;
        if renew_due {
            renewed_at = Instant::now();
        }
        let mut worked = 0;
        let mut oldest_ms: Option<u64> = None;
        for (shard, state) in (0..shards).zip(states.iter_mut()) {
            let token = match state.token {
                Some(t) if !renew_due => Some(t),
                Some(t) => {
                    let renewed = w.broker.renew(&worker_lease(shard), std::slice::from_ref(&holder), lease).await;
                    renewed.is_ok_and(|n| n == 1).then_some(t)
                }
                None => w
                    .broker
                    .acquire_fenced(&worker_lease(shard), &worker_fence(shard), &holder, lease)
                    .await
                    .unwrap_or(None),
            };
            if token.is_some() != state.token.is_some() {
                tracing::info!(shard, owned = token.is_some(), "ingest shard ownership changed");
                state.cursor = None;
            }
            state.token = token;
            let Some(token) = token else { continue };
            match w.process(shard, token, &mut state.cursor, &mut oldest_ms).await {
                Ok(Some(n)) => worked += n,
                Ok(None) => {
                    tracing::warn!(shard, "another worker took this shard over while this one stalled; standing down");
                    *state = ShardState::default();
                }
                Err(e) => {
                    w.metrics.failed_batches.inc();
                    tracing::warn!(shard, error = %e, "persisting a batch failed; it will be retried");
                }
            }
        }
        w.metrics.shards_owned.set(states.iter().filter(|s| s.token.is_some()).count() as i64);
        let lag_ms = oldest_ms.map_or(0, |ms| now_millis().saturating_sub(ms));
        w.metrics.lag_seconds.set(lag_ms as f64 / 1000.0);
        if worked == 0 {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }
    for (shard, state) in (0..shards).zip(&states) {
        if state.token.is_some() {
            let _ = w.broker.release(&worker_lease(shard), &holder).await;
        }
    }
    w.metrics.shards_owned.set(0);
    w.metrics.lag_seconds.set(0.0);
    let _ = w.broker.unsubscribe(&wake_topic).await;
}

/// What a worker knows of one shard.
#[derive(Default)]
struct ShardState {
    /// The fencing token of this worker's lease on the shard, while it owns it.
    token: Option<u64>,
    /// The shard's cursor, read when the shard is taken and then kept here (it changes only
    /// through the owner): `None` until read.
    cursor: Option<Option<LogId>>,
}

impl Worker {
    /// Processes one batch of a shard under fencing token `token`; returns how many entries it
    /// handled, or `None` when its commit was refused: the shard has another owner now.
    /// `oldest_ms` is lowered to the log time of the oldest entry found waiting.
    async fn process(
        &self,
        shard: u32,
        token: u64,
        cached: &mut Option<Option<LogId>>,
        oldest_ms: &mut Option<u64>,
    ) -> Result<Option<usize>, BrokerError> {
        let broker = &self.broker;
        let retention = self.settings.retention;
        let cursor_key = ingest_cursor(shard);
        let cursor = match *cached {
            Some(c) => c,
            None => broker.get(&cursor_key).await?.and_then(|b| LogId::parse(&String::from_utf8_lossy(&b))),
        };
        *cached = Some(cursor);
        let entries = broker.read_after(&ingest_log(shard), cursor, BATCH).await?;
        let Some((last, _)) = entries.last() else { return Ok(Some(0)) };
        let last = *last;
        if let Some((first, _)) = entries.first() {
            *oldest_ms = Some(oldest_ms.map_or(first.ms, |o| o.min(first.ms)));
        }
        // The whole batch goes out in three round trips: copy into the users' logs, index the
        // event ids, publish. Each step is idempotent, so a batch cut short is simply redone.
        let mut copies = Vec::with_capacity(entries.len());
        let mut index = Vec::with_capacity(entries.len());
        let mut live = Vec::with_capacity(entries.len());
        // Events published while tracing was on: each gets a `persist` span for this batch.
        let mut traced = Vec::new();
        let started = std::time::SystemTime::now();
        for (id, body) in &entries {
            let stamped = match stamp(*id, body) {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(shard, %id, error = %e, "skipping a malformed ingest entry");
                    continue;
                }
            };
            if let Some(parent) = stamped.traceparent {
                traced.push((parent, stamped.event_id.clone()));
            }
            copies.push((user_log(&stamped.user), *id, stamped.bytes.clone()));
            index.push((event_position(&stamped.user, &stamped.event_id), Bytes::from(stamped.position)));
            live.push((user_topic(&stamped.user), stamped.bytes));
        }
        // A replay sends at most `replay_limit` events; one more tells it that more were missed.
        broker.append_with_id_many(&copies, retention, self.settings.replay_limit + 1).await?;
        broker.set_many(&index, Some(retention)).await?;
        broker.publish_many(&live).await?;
        // Move the cursor and let the ingest log go through `last` (it holds only what is not
        // yet stored), if this worker still owns the shard: one that stalled past its lease while
        // another took over must not move the cursor back.
        if !broker.commit_fenced(&worker_fence(shard), token, &cursor_key, &ingest_log(shard), last).await? {
            return Ok(None);
        }
        *cached = Some(Some(last));
        self.metrics.persisted.inc_by(entries.len() as u64);
        for (parent, event_id) in traced {
            let kind = switchboard_telemetry::Kind::Consumer;
            if let Some(mut span) = switchboard_telemetry::start_at("persist", kind, Some(&parent), Some(started)) {
                span.set("switchboard.event_id", event_id);
                span.set("switchboard.shard", i64::from(shard));
                span.set("switchboard.batch", entries.len() as i64);
            }
        }
        Ok(Some(entries.len()))
    }
}
