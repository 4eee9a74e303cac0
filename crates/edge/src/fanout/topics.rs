//! Keeps the node's broker subscriptions equal to what its local connections need: one broker
//! subscription per topic per node, taken when the first local subscriber arrives and dropped
//! when the last leaves.
//!
//! Changes are reconciled under one async lock against the registry's current state, so a
//! leave and a join racing on the same topic can never end with the topic unsubscribed while
//! somebody still wants it. Callers that queue up behind the lock are served together (group
//! commit): whoever gets the lock takes every pending topic and issues one SUBSCRIBE and one
//! UNSUBSCRIBE for all of them, so a connection storm costs a few broker round trips, not one
//! per connection.

use std::collections::HashSet;
use std::sync::Arc;

use switchboard_broker::{BrokerError, SharedBroker, Topic};
use tokio::sync::Mutex;

use super::registry::TopicRegistry;

/// Reconciles broker subscriptions with the registry.
pub struct TopicSync {
    broker: SharedBroker,
    registry: Arc<TopicRegistry>,
    subscribed: Mutex<HashSet<Topic>>,
    pending: parking_lot::Mutex<HashSet<Topic>>,
}

impl TopicSync {
    /// A reconciler over the node's broker and registry.
    pub fn new(broker: SharedBroker, registry: Arc<TopicRegistry>) -> Self {
        TopicSync { broker, registry, subscribed: Mutex::default(), pending: parking_lot::Mutex::default() }
    }

    /// Brings the broker subscriptions of `topics` in line with the registry. Returns once
    /// the broker has confirmed, so a caller that just registered can rely on receiving.
    pub async fn reconcile(&self, topics: &[Topic]) -> Result<(), BrokerError> {
        if topics.is_empty() {
            return Ok(());
        }
        self.pending.lock().extend(topics.iter().cloned());
        let mut subscribed = self.subscribed.lock().await;
        // Everything queued so far, ours included unless an earlier holder of the lock
        // already took it.
        let batch: Vec<Topic> = self.pending.lock().drain().collect();
        let (mut add, mut drop) = (Vec::new(), Vec::new());
        for t in batch {
            match (self.registry.has(&t), subscribed.contains(&t)) {
                (true, false) => add.push(t),
                (false, true) => drop.push(t),
                _ => {}
            }
        }
        let mut outcome = Ok(());
        if !add.is_empty() {
            match self.broker.subscribe(&add).await {
                Ok(()) => subscribed.extend(add),
                Err(e) => outcome = Err(e),
            }
        }
        if !drop.is_empty() {
            match self.broker.unsubscribe(&drop).await {
                Ok(()) => drop.iter().for_each(|t| {
                    subscribed.remove(t);
                }),
                Err(e) => outcome = outcome.and(Err(e)),
            }
        }
        outcome?;
        // Our topics may have been handled by another caller's batch that failed, or wanted
        // again by a connection whose own call has not got the lock yet: whoever holds the lock
        // makes sure every wanted topic among its own is subscribed.
        let missing: Vec<Topic> =
            topics.iter().filter(|t| self.registry.has(t) && !subscribed.contains(*t)).cloned().collect();
        if !missing.is_empty() {
            self.broker.subscribe(&missing).await?;
            subscribed.extend(missing);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use switchboard_broker::memory::MemoryHub;
    use switchboard_broker::DeliverySink;

    use super::*;
    use crate::connection::testing::{connection, endpoint_with};

    /// Counts what the broker delivers to this node.
    #[derive(Default)]
    struct Counter(AtomicUsize);
    impl DeliverySink for Counter {
        fn deliver(&self, _: &str, _: Bytes) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether the node's broker subscription to `topic` is live: a publish reaches it.
    async fn subscribed(broker: &SharedBroker, counter: &Counter, topic: &str) -> bool {
        let before = counter.0.load(Ordering::SeqCst);
        broker.publish(topic, Bytes::from_static(b"probe")).await.expect("publish");
        counter.0.load(Ordering::SeqCst) > before
    }

    #[tokio::test]
    async fn the_broker_subscription_follows_the_first_join_and_the_last_leave() {
        let counter = Arc::new(Counter::default());
        let broker: SharedBroker = Arc::new(MemoryHub::new().node(counter.clone()));
        let registry = Arc::new(TopicRegistry::default());
        let sync = TopicSync::new(broker.clone(), registry.clone());
        let ep = endpoint_with("/ws", |_| {});
        let (a, b) = (connection(1, ep.clone()).0, connection(2, ep).0);
        let t = vec![Topic::from("c:t")];
        registry.add("c:t", &a);
        sync.reconcile(&t).await.expect("reconcile");
        assert!(subscribed(&broker, &counter, "c:t").await);
        registry.add("c:t", &b);
        registry.remove("c:t", 1);
        sync.reconcile(&t).await.expect("reconcile");
        assert!(subscribed(&broker, &counter, "c:t").await, "still wanted by b");
        registry.remove("c:t", 2);
        sync.reconcile(&t).await.expect("reconcile");
        assert!(!subscribed(&broker, &counter, "c:t").await, "released with the last subscriber");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_joins_and_leaves_end_with_the_broker_matching_the_registry() {
        let counter = Arc::new(Counter::default());
        let broker: SharedBroker = Arc::new(MemoryHub::new().node(counter.clone()));
        let registry = Arc::new(TopicRegistry::default());
        let sync = Arc::new(TopicSync::new(broker.clone(), registry.clone()));
        let ep = endpoint_with("/ws", |_| {});
        let tasks: Vec<_> = (0..64u64)
            .map(|id| {
                let (registry, sync, conn) = (registry.clone(), sync.clone(), connection(id, ep.clone()).0);
                tokio::spawn(async move {
                    let topic = vec![Topic::from(format!("c:t{}", id % 4))];
                    for _ in 0..20 {
                        registry.add(topic[0].clone(), &conn);
                        sync.reconcile(&topic).await.expect("join");
                        registry.remove(&topic[0], conn.id);
                        sync.reconcile(&topic).await.expect("leave");
                    }
                    // Connections 0, 8, 16, ... (all on `c:t0`) stay; the other topics end unwanted.
                    if id % 8 == 0 {
                        registry.add(topic[0].clone(), &conn);
                        sync.reconcile(&topic).await.expect("join");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        for topic in ["c:t0", "c:t1", "c:t2", "c:t3"] {
            assert_eq!(subscribed(&broker, &counter, topic).await, registry.has(topic), "{topic}");
        }
    }
}
