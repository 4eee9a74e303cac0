//! Subscriptions kept alive, and their health known, on a single server and on a Redis Cluster.
//!
//! A single server's connection manager resubscribes after it reconnects, but ignores the
//! answers: a refused `SUBSCRIBE` (an ACL that no longer allows the channels, a server out of
//! memory) left the node subscribed to nothing while it reported itself ready. The cluster client resubscribes a node's sharded channels after its connection dropped
//! with one multi-channel `SSUBSCRIBE`, which Redis refuses (`CROSSSLOT`) whenever the channels
//! live in different slots, as they almost always do: the node's subscriptions were silently
//! gone. And when a slot moves to another master, Redis ends its channels' subscriptions with a
//! `sunsubscribe` push, which nothing answered. So this node keeps the set of topics it wants,
//! and whenever a connection drops or Redis ends a wanted subscription, subscribes to every
//! wanted topic again, one command per topic (each routed to the slot's current owner),
//! retrying with backoff until all are back.
//!
//! While the cluster heals from a failed master, the client replaces its connections more than
//! once (it reconnects from the seed nodes after refreshing the slots), silently, and each time
//! loses the sharded subscriptions the same way. So after a loss the subscriptions are
//! confirmed again a few more times as the topology settles ([`FOLLOW_UPS`]); subscribing to a
//! topic the connection already has is harmless.
//!
//! So on both, this node keeps the set of topics it wants and, after any loss, subscribes to
//! every one of them itself until Redis has confirmed them all. Until then its subscriptions
//! are unhealthy: `/readyz` answers 503 and a metric says so ([`Wanted::health`]). A topic
//! the node lets go of while a restore is under way may be subscribed again for nothing; that
//! costs only traffic, which is better than unsubscribing a topic wanted again meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::conn::Commands;
use crate::{DeliverySink, Topic};

/// Subscriptions sent at once while resubscribing.
const IN_FLIGHT: usize = 64;
/// Time for the client to reconnect before the first attempt.
const SETTLE: Duration = Duration::from_millis(100);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// After the subscriptions are back, they are sent again at these delays (from the previous
/// round), unless a new loss starts the schedule over.
const FOLLOW_UPS: [Duration; 5] = [
    Duration::from_secs(2),
    Duration::from_secs(3),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
];

/// Single-server subscriptions sent in one `SUBSCRIBE` while resubscribing.
const SINGLE_CHUNK: usize = 256;

/// The topics this node wants, the signal that some may be lost, and whether all are held.
pub(super) struct Wanted {
    topics: Mutex<HashSet<Topic>>,
    lost: Notify,
    /// Whether every wanted topic is known to be subscribed.
    healthy: AtomicBool,
    /// Bumped on every possible loss, so a restore that raced a new loss does not report health.
    generation: AtomicU64,
    /// Times the subscriptions went from healthy to lost.
    losses: AtomicU64,
}

impl Default for Wanted {
    fn default() -> Self {
        Wanted {
            topics: Mutex::default(),
            lost: Notify::new(),
            healthy: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            losses: AtomicU64::new(0),
        }
    }
}

impl Wanted {
    /// Records topics as wanted (after the broker confirmed them).
    pub(super) fn add(&self, topics: &[Topic]) {
        self.topics.lock().extend(topics.iter().cloned());
    }

    /// Forgets topics (before unsubscribing, so the end of their subscription is expected).
    pub(super) fn remove(&self, topics: &[Topic]) {
        let mut wanted = self.topics.lock();
        for t in topics {
            wanted.remove(&**t);
        }
    }

    /// Looks at a push from the subscriber connection: a dropped connection, or Redis ending
    /// a wanted sharded subscription (its slot moved), means subscriptions to restore.
    pub(super) fn on_push(&self, info: &PushInfo) {
        let lost = match info.kind {
            PushKind::Disconnection => true,
            PushKind::SUnsubscribe => match info.data.first() {
                Some(Value::BulkString(topic)) => self.topics.lock().contains(String::from_utf8_lossy(topic).as_ref()),
                _ => false,
            },
            _ => false,
        };
        if lost {
            self.mark_lost();
        }
    }

    /// Some subscriptions may be gone (a dropped connection, a failed ping, a slot moved):
    /// unhealthy until a restore confirms them all.
    pub(super) fn mark_lost(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if self.healthy.swap(false, Ordering::AcqRel) {
            self.losses.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("Redis subscriptions lost; restoring them (the node is not ready meanwhile)");
        }
        self.lost.notify_one();
    }

    /// Whether every wanted topic is subscribed.
    pub(super) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// How often the subscriptions were lost so far.
    pub(super) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Vec<Topic> {
        self.topics.lock().iter().cloned().collect()
    }
}

/// Restores the wanted subscriptions whenever some may be lost, until the broker is dropped,
/// and tells `sink` each time they are all back. On a cluster each restore is confirmed again
/// at the [`FOLLOW_UPS`] delays (each confirmation told too: the client may have lost them
/// silently in between).
pub(super) async fn keep_subscriptions(subscriber: Commands, wanted: Arc<Wanted>, sink: Arc<dyn DeliverySink>) {
    let follow_ups: &[Duration] = if subscriber.is_cluster() { &FOLLOW_UPS } else { &[] };
    wanted.lost.notified().await;
    'incident: loop {
        restore(&subscriber, &wanted, &*sink).await;
        for delay in follow_ups {
            tokio::select! {
                () = tokio::time::sleep(*delay) => restore(&subscriber, &wanted, &*sink).await,
                () = wanted.lost.notified() => continue 'incident,
            }
        }
        wanted.lost.notified().await;
    }
}

/// Subscribes every wanted topic again, retrying with backoff until all succeed; then the
/// subscriptions are healthy, unless another loss happened meanwhile (its restore follows),
/// and `sink` hears that they are back.
async fn restore(subscriber: &Commands, wanted: &Wanted, sink: &dyn DeliverySink) {
    let mut backoff = SETTLE;
    loop {
        tokio::time::sleep(backoff).await;
        let generation = wanted.generation.load(Ordering::Acquire);
        let topics = wanted.snapshot();
        let n = topics.len();
        let failed = resubscribe(subscriber, topics).await;
        if failed == 0 {
            if wanted.generation.load(Ordering::Acquire) == generation && !wanted.healthy.swap(true, Ordering::AcqRel) {
                tracing::info!(topics = n, "Redis subscriptions restored");
            }
            sink.subscriptions_restored();
            return;
        }
        tracing::warn!(failed, "some Redis subscriptions could not be restored yet; retrying");
        // The connection itself may be what fails them (a cluster connection still dialling a
        // master that failed over, a silent socket): the next attempt goes over a new one.
        // It has no subscriptions: the round after it subscribes to everything anyway.
        subscriber.reconnect();
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Subscribes to the topics again (on a cluster one command per topic, each routed to its
/// slot's owner; on a single server in chunks); returns how many topics failed.
async fn resubscribe(subscriber: &Commands, topics: Vec<Topic>) -> usize {
    use futures_util::stream::{self, StreamExt};
    let chunk = if subscriber.is_cluster() { 1 } else { SINGLE_CHUNK };
    let chunks: Vec<Vec<Topic>> = topics.chunks(chunk).map(<[Topic]>::to_vec).collect();
    let calls = chunks.into_iter().map(|topics| {
        let subscriber = subscriber.clone();
        async move {
            match subscriber.subscribe(&topics).await {
                Ok(()) => 0,
                Err(_) => topics.len(),
            }
        }
    });
    stream::iter(calls).buffer_unordered(IN_FLIGHT).fold(0, |sum, failed| std::future::ready(sum + failed)).await
}
