//! Sharded subscriptions kept alive on a Redis Cluster.
//!
//! The cluster client resubscribes a node's sharded channels after its connection dropped
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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::conn::Commands;

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

/// The topics this node wants, and the signal that some may be lost.
#[derive(Default)]
pub(super) struct Wanted {
    topics: Mutex<HashSet<String>>,
    lost: Notify,
}

impl Wanted {
    /// Records topics as wanted (after the broker confirmed them).
    pub(super) fn add(&self, topics: &[String]) {
        self.topics.lock().extend(topics.iter().cloned());
    }

    /// Forgets topics (before unsubscribing, so the end of their subscription is expected).
    pub(super) fn remove(&self, topics: &[String]) {
        let mut wanted = self.topics.lock();
        for t in topics {
            wanted.remove(t);
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
            self.lost.notify_one();
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.topics.lock().iter().cloned().collect()
    }
}

/// Restores the wanted subscriptions whenever some may be lost, until the broker is dropped.
pub(super) async fn keep_sharded_subscriptions(subscriber: Commands, wanted: Arc<Wanted>) {
    wanted.lost.notified().await;
    'incident: loop {
        restore(&subscriber, &wanted).await;
        for delay in FOLLOW_UPS {
            tokio::select! {
                () = tokio::time::sleep(delay) => restore(&subscriber, &wanted).await,
                () = wanted.lost.notified() => continue 'incident,
            }
        }
        wanted.lost.notified().await;
    }
}

/// Subscribes every wanted topic again, retrying with backoff until all succeed.
async fn restore(subscriber: &Commands, wanted: &Wanted) {
    let mut backoff = SETTLE;
    loop {
        tokio::time::sleep(backoff).await;
        let topics = wanted.snapshot();
        let n = topics.len();
        let failed = resubscribe(subscriber, topics).await;
        if failed == 0 {
            tracing::debug!(topics = n, "sharded subscriptions confirmed");
            return;
        }
        tracing::warn!(failed, "some sharded subscriptions could not be restored yet; retrying");
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Subscribes to each topic on its own; returns how many failed.
async fn resubscribe(subscriber: &Commands, topics: Vec<String>) -> usize {
    use futures_util::stream::{self, StreamExt};
    let calls = topics.into_iter().map(|topic| {
        let subscriber = subscriber.clone();
        async move { subscriber.subscribe(&[topic]).await.is_err() }
    });
    stream::iter(calls).buffer_unordered(IN_FLIGHT).filter(|failed| std::future::ready(*failed)).count().await
}
