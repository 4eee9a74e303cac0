//! The node's local subscription registry: which connections want which broker topic.
//!
//! It is the only place that knows the topic → connections mapping. The dispatcher reads it
//! once per incoming event; connections change it when they subscribe or leave. It also
//! answers "is anybody here still interested in this topic", which [`crate::topics::TopicSync`]
//! uses to keep exactly one broker subscription per topic per node.
//!
//! Each topic keeps its subscribers in a dense vector (fast iteration for fan-out) plus an
//! index by connection id, so joining and leaving stay O(1) even with 100k subscribers on one
//! topic.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::connection::ConnHandle;

#[derive(Default)]
struct Subscribers {
    conns: Vec<Arc<ConnHandle>>,
    position: HashMap<u64, usize>,
}

/// Topic → local subscribers.
#[derive(Default)]
pub struct TopicRegistry {
    topics: RwLock<HashMap<String, Subscribers>>,
}

impl TopicRegistry {
    /// Adds a subscriber (idempotent); returns true if it is the topic's first on this node.
    pub fn add(&self, topic: &str, conn: &Arc<ConnHandle>) -> bool {
        let mut topics = self.topics.write();
        let first = !topics.contains_key(topic);
        let subs = topics.entry(topic.to_owned()).or_default();
        if let std::collections::hash_map::Entry::Vacant(slot) = subs.position.entry(conn.id) {
            slot.insert(subs.conns.len());
            subs.conns.push(conn.clone());
        }
        first
    }

    /// Removes a subscriber; returns true if the topic has no local subscriber left.
    pub fn remove(&self, topic: &str, conn_id: u64) -> bool {
        let mut topics = self.topics.write();
        let Some(subs) = topics.get_mut(topic) else {
            return true;
        };
        if let Some(pos) = subs.position.remove(&conn_id) {
            subs.conns.swap_remove(pos);
            if let Some(moved) = subs.conns.get(pos) {
                subs.position.insert(moved.id, pos);
            }
        }
        if subs.conns.is_empty() {
            topics.remove(topic);
            true
        } else {
            false
        }
    }

    /// Whether any local connection wants the topic.
    pub fn has(&self, topic: &str) -> bool {
        self.topics.read().contains_key(topic)
    }

    /// Calls `f` for every subscriber of `topic`, under a read lock (so `f` must not block).
    pub fn for_each(&self, topic: &str, mut f: impl FnMut(&Arc<ConnHandle>)) {
        if let Some(subs) = self.topics.read().get(topic) {
            subs.conns.iter().for_each(&mut f);
        }
    }

    /// The subscribers of `topic` right now, for a fan-out that writes to them without
    /// holding the registry's lock.
    pub fn snapshot(&self, topic: &str) -> Vec<Arc<ConnHandle>> {
        self.topics.read().get(topic).map(|subs| subs.conns.clone()).unwrap_or_default()
    }

    /// How many local connections want `topic`.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.topics.read().get(topic).map_or(0, |subs| subs.conns.len())
    }

    /// Number of topics with at least one local subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.read().len()
    }
}
