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

use switchboard_broker::{BrokerError, SharedBroker};
use tokio::sync::Mutex;

use super::registry::TopicRegistry;

/// Reconciles broker subscriptions with the registry.
pub struct TopicSync {
    broker: SharedBroker,
    registry: Arc<TopicRegistry>,
    subscribed: Mutex<HashSet<String>>,
    pending: parking_lot::Mutex<HashSet<String>>,
}

impl TopicSync {
    /// A reconciler over the node's broker and registry.
    pub fn new(broker: SharedBroker, registry: Arc<TopicRegistry>) -> Self {
        TopicSync { broker, registry, subscribed: Mutex::default(), pending: parking_lot::Mutex::default() }
    }

    /// Brings the broker subscriptions of `topics` in line with the registry. Returns once
    /// the broker has confirmed, so a caller that just registered can rely on receiving.
    pub async fn reconcile(&self, topics: &[String]) -> Result<(), BrokerError> {
        if topics.is_empty() {
            return Ok(());
        }
        self.pending.lock().extend(topics.iter().cloned());
        let mut subscribed = self.subscribed.lock().await;
        // Everything queued so far, ours included unless an earlier holder of the lock
        // already took it.
        let batch: Vec<String> = self.pending.lock().drain().collect();
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
        // Our topics may have been handled by another caller's batch: check the result.
        if topics.iter().any(|t| self.registry.has(t) && !subscribed.contains(t)) {
            return Err(BrokerError::Unavailable("subscription not confirmed by the broker".into()));
        }
        Ok(())
    }
}
