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
//!
//! Each event also carries the position of the entry before it in the user's log (its `prev`,
//! see [`crate::tails`]), so an edge that missed one live notices it at the next.

use std::time::{Duration, Instant};

use bytes::Bytes;
use switchboard_broker::{BrokerError, Fenced, LogId, SharedBroker};
use switchboard_protocol::keyspace::{
    event_position, ingest_cursor, ingest_log, user_log, user_topic, worker_fence, worker_lease,
};
use switchboard_protocol::timefmt::now_millis;
use tokio_util::sync::CancellationToken;

use crate::metrics::WorkerMetrics;
use crate::stamp::{route, Routed};
use crate::tails::LogTails;

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
    /// The longest one blocking read of the shards waits before the worker looks round anyway.
    pub idle_poll: Duration,
    /// This worker's name in shard leases (unique in the cluster).
    pub holder: String,
}

/// What a worker works with.
struct Worker {
    broker: SharedBroker,
    settings: Settings,
    metrics: WorkerMetrics,
    /// The newest position of the users' logs this worker wrote (locked only between awaits).
    tails: parking_lot::Mutex<LogTails>,
}

/// Runs the worker until `stop` is cancelled, then gives its shards up.
///
/// Each round is one blocking read of every shard it owns ([`switchboard_broker::Log::read_after_many`]):
/// it returns as soon as an edge appends to one of them, or after `idle_poll` (at most a third
/// of the lease) with nothing, and the shards that got entries are processed concurrently.
/// Every third of its lease it renews its leases and tries to take the shards nobody holds.
pub async fn run(broker: SharedBroker, settings: Settings, metrics: WorkerMetrics, stop: CancellationToken) {
    let w = Worker { broker, settings, metrics, tails: parking_lot::Mutex::default() };
    let shards = w.settings.shards;
    let lease = w.settings.lease;
    let idle = w.settings.idle_poll.min(lease / 3);
    let mut states: Vec<ShardState> = (0..shards).map(|_| ShardState::default()).collect();
    let mut renewed_at: Option<Instant> = None;
    while !stop.is_cancelled() {
        if renewed_at.is_none_or(|at| at.elapsed() >= lease / 3) {
            renewed_at = Some(Instant::now());
            w.hold_leases(&mut states).await;
        }
        // The cursor of a shard just taken is read once; it then changes only through this worker.
        let mut reads = Vec::new();
        for (shard, state) in (0..shards).zip(states.iter_mut()) {
            if state.token.is_none() {
                continue;
            }
            if state.cursor.is_none() {
                match w.broker.get(&ingest_cursor(shard)).await {
                    Ok(c) => state.cursor = Some(c.and_then(|b| LogId::parse(&String::from_utf8_lossy(&b)))),
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "reading a shard's cursor failed; retrying");
                        continue;
                    }
                }
            }
            reads.push((shard, (ingest_log(shard), state.cursor.flatten())));
        }
        if reads.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        let logs: Vec<(String, Option<LogId>)> = reads.iter().map(|(_, read)| read.clone()).collect();
        let found = tokio::select! {
            _ = stop.cancelled() => break,
            found = w.broker.read_after_many(&logs, BATCH, idle) => found,
        };
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                w.metrics.failed_batches.inc();
                tracing::warn!(error = %e, "reading the ingest shards failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(idle) => {}
                }
                continue;
            }
        };
        let oldest_ms = found.iter().filter_map(|entries| entries.first()).map(|(id, _)| id.ms).min();
        let lag_ms = oldest_ms.map_or(0, |ms| now_millis().saturating_sub(ms));
        w.metrics.lag_seconds.set(lag_ms as f64 / 1000.0);
        // Only owned shards were read: each has its token.
        let batches = reads
            .iter()
            .zip(found)
            .filter_map(|((shard, _), entries)| Some((*shard, states[*shard as usize].token?, entries)))
            .filter(|(_, _, entries)| !entries.is_empty())
            .map(|(shard, token, entries)| {
                let w = &w;
                async move { (shard, w.process(shard, token, entries).await) }
            });
        for (shard, outcome) in futures_util::future::join_all(batches).await {
            let state = &mut states[shard as usize];
            match outcome {
                Ok(Some(last)) => state.cursor = Some(Some(last)),
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
    }
    let holder = &w.settings.holder;
    for (shard, state) in (0..shards).zip(&states) {
        if state.token.is_some() {
            let _ = w.broker.release(&worker_lease(shard), holder).await;
        }
    }
    w.metrics.shards_owned.set(0);
    w.metrics.lag_seconds.set(0.0);
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
    /// Renews the leases of the shards this worker holds and tries to take the others.
    async fn hold_leases(&self, states: &mut [ShardState]) {
        let (holder, lease) = (&self.settings.holder, self.settings.lease);
        for (shard, state) in (0..self.settings.shards).zip(states.iter_mut()) {
            let token = match state.token {
                Some(t) => {
                    let renewed = self.broker.renew(&worker_lease(shard), std::slice::from_ref(holder), lease).await;
                    renewed.is_ok_and(|n| n == 1).then_some(t)
                }
                None => self
                    .broker
                    .acquire_fenced(&worker_lease(shard), &worker_fence(shard), holder, lease)
                    .await
                    .unwrap_or(None),
            };
            if token.is_some() != state.token.is_some() {
                tracing::info!(shard, owned = token.is_some(), "ingest shard ownership changed");
                state.cursor = None;
                // Another worker may have written this shard's users' logs meanwhile.
                self.tails.lock().clear();
            }
            state.token = token;
        }
        self.metrics.shards_owned.set(states.iter().filter(|s| s.token.is_some()).count() as i64);
    }

    /// Reads the tails of the users in `routed` this worker does not know yet (one round trip,
    /// and none when it knows them all).
    async fn learn_tails(&self, routed: &[(LogId, Routed<'_>)]) -> Result<(), BrokerError> {
        let unknown = self.tails.lock().unknown(routed.iter().map(|(_, r)| r.user()));
        if unknown.is_empty() {
            return Ok(());
        }
        let logs: Vec<String> = unknown.iter().map(|user| user_log(user)).collect();
        let newest = self.broker.newest_ids(&logs).await?;
        self.tails.lock().learn(unknown.into_iter().zip(newest));
        Ok(())
    }

    /// Processes one batch of a shard read under fencing token `token`; returns the position
    /// it committed, or `None` when its commit was refused: the shard has another owner now.
    async fn process(
        &self,
        shard: u32,
        token: u64,
        entries: Vec<(LogId, Bytes)>,
    ) -> Result<Option<LogId>, BrokerError> {
        let Some(&(last, _)) = entries.last() else { return Ok(None) };
        let broker = &self.broker;
        let retention = self.settings.retention;
        // The whole batch is stored and published in one call (one round trip on a single
        // Redis server), then committed. Each step is idempotent, so a batch cut short is
        // simply redone.
        let routed: Vec<(LogId, Routed<'_>)> = entries
            .iter()
            .filter_map(|(id, body)| match route(body) {
                Ok(routed) => routed.map(|r| (*id, r)),
                Err(e) => {
                    tracing::warn!(shard, %id, error = %e, "skipping a malformed ingest entry");
                    None
                }
            })
            .collect();
        self.learn_tails(&routed).await?;
        let mut copies = Vec::with_capacity(routed.len());
        let mut index = Vec::with_capacity(routed.len());
        let mut live = Vec::with_capacity(routed.len());
        // Events published while tracing was on: each gets a `persist` span for this batch.
        let mut traced = Vec::new();
        let started = std::time::SystemTime::now();
        {
            let mut tails = self.tails.lock();
            for (id, routed) in routed {
                let prev = tails.advance(routed.user(), id);
                let stamped = match routed.stamp(id, prev) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(shard, %id, error = %e, "skipping a malformed ingest entry");
                        continue;
                    }
                };
                if let Some(parent) = stamped.traceparent {
                    traced.push((parent, stamped.event_id.clone()));
                }
                copies.push((user_log(&stamped.user), id, stamped.bytes.clone()));
                index.push((event_position(&stamped.user, &stamped.event_id), Bytes::from(stamped.position)));
                live.push((user_topic(&stamped.user), stamped.bytes));
            }
        }
        // A replay sends at most `replay_limit` events; one more tells it that more were missed.
        let stored = broker.store_and_publish(&copies, &index, retention, self.settings.replay_limit + 1, &live).await;
        if let Err(e) = stored {
            // Some copies may have landed: the tails are read again (a failure is rare, and so
            // the one round trip more).
            self.tails.lock().clear();
            return Err(e);
        }
        // Move the cursor and let the ingest log go through `last` (it holds only what is not
        // yet stored), if this worker still owns the shard: one that stalled past its lease while
        // another took over must not move the cursor back.
        let cursor_key = ingest_cursor(shard);
        let (lease, fence) = (worker_lease(shard), worker_fence(shard));
        let fenced = Fenced { lease: &lease, fence: &fence, holder: &self.settings.holder, token };
        if !broker.commit_fenced(&fenced, &cursor_key, &ingest_log(shard), last).await? {
            return Ok(None);
        }
        self.metrics.persisted.inc_by(entries.len() as u64);
        for (parent, event_id) in traced {
            let kind = switchboard_telemetry::Kind::Consumer;
            if let Some(mut span) = switchboard_telemetry::start_at("persist", kind, Some(&parent), Some(started)) {
                span.set("switchboard.event_id", event_id);
                span.set("switchboard.shard", i64::from(shard));
                span.set("switchboard.batch", entries.len() as i64);
            }
        }
        Ok(Some(last))
    }
}
