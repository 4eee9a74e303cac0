//! Keeps the node's broker subscriptions equal to what its local connections need: one broker
//! subscription per topic per node, taken when the first local subscriber arrives and dropped
//! when the last leaves.
//!
//! Changes are reconciled under one async lock against the registry's current state, so a
//! leave and a join racing on the same topic can never end with the topic unsubscribed while
//! somebody still wants it.

use std::collections::HashSet;
use std::sync::Arc;

use switchboard_broker::{BrokerError, SharedBroker};
use tokio::sync::Mutex;

use crate::registry::TopicRegistry;

/// Reconciles broker subscriptions with the registry.
pub struct TopicSync {
    broker: SharedBroker,
    registry: Arc<TopicRegistry>,
    subscribed: Mutex<HashSet<String>>,
}

impl TopicSync {
    /// A reconciler over the node's broker and registry.
    pub fn new(broker: SharedBroker, registry: Arc<TopicRegistry>) -> Self {
        TopicSync { broker, registry, subscribed: Mutex::default() }
    }

    /// Brings the broker subscriptions of `topics` in line with the registry. Returns once
    /// the broker has confirmed, so a caller that just registered can rely on receiving.
    pub async fn reconcile(&self, topics: &[String]) -> Result<(), BrokerError> {
        let mut subscribed = self.subscribed.lock().await;
        let (mut add, mut drop) = (Vec::new(), Vec::new());
        for t in topics {
            match (self.registry.has(t), subscribed.contains(t)) {
                (true, false) => add.push(t.clone()),
                (false, true) => drop.push(t.clone()),
                _ => {}
            }
        }
        if !add.is_empty() {
            self.broker.subscribe(&add).await?;
            subscribed.extend(add);
        }
        if !drop.is_empty() {
            self.broker.unsubscribe(&drop).await?;
            for t in &drop {
                subscribed.remove(t);
            }
        }
        Ok(())
    }

    /// Number of topics this node holds a broker subscription for.
    pub async fn subscribed_count(&self) -> usize {
        self.subscribed.lock().await.len()
    }
}
