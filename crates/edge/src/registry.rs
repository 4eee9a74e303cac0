//! The node's local subscription registry: which connections want which broker topic.
//!
//! It is the only place that knows the topic → connections mapping. The dispatcher reads it
//! once per incoming event; connections change it when they subscribe or leave. It also
//! answers "is anybody here still interested in this topic", which [`crate::topics::TopicSync`]
//! uses to keep exactly one broker subscription per topic per node.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::connection::ConnHandle;

/// Topic → local subscribers.
#[derive(Default)]
pub struct TopicRegistry {
    topics: RwLock<HashMap<String, Vec<Arc<ConnHandle>>>>,
}

impl TopicRegistry {
    /// Adds a subscriber; returns true if it is the topic's first on this node.
    pub fn add(&self, topic: &str, conn: &Arc<ConnHandle>) -> bool {
        let mut topics = self.topics.write();
        match topics.get_mut(topic) {
            Some(subs) => {
                if !subs.iter().any(|c| c.id == conn.id) {
                    subs.push(conn.clone());
                }
                false
            }
            None => {
                topics.insert(topic.to_owned(), vec![conn.clone()]);
                true
            }
        }
    }

    /// Removes a subscriber; returns true if the topic has no local subscriber left.
    pub fn remove(&self, topic: &str, conn_id: u64) -> bool {
        let mut topics = self.topics.write();
        let Some(subs) = topics.get_mut(topic) else {
            return true;
        };
        if let Some(pos) = subs.iter().position(|c| c.id == conn_id) {
            subs.swap_remove(pos);
        }
        if subs.is_empty() {
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
            subs.iter().for_each(&mut f);
        }
    }

    /// Number of topics with at least one local subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.read().len()
    }
}
