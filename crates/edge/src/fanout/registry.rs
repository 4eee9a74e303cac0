//! The node's local subscription registry: which connections want which broker topic.
//!
//! It is the only place that knows the topic → connections mapping. The dispatcher reads it
//! once per incoming event; connections change it when they subscribe or leave. It also
//! answers "is anybody here still interested in this topic", which [`super::TopicSync`]
//! uses to keep exactly one broker subscription per topic per node.
//!
//! A topic with one local subscriber (a user's stream; most topics) keeps it inline in its map
//! slot. Larger ones keep a dense vector (fast iteration for fan-out); past [`INDEX_FROM`]
//! subscribers they add an index by connection id, so joining and leaving stay O(1) even with
//! 100k subscribers on one topic.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use switchboard_broker::Topic;

use crate::connection::ConnHandle;

/// Topics with more subscribers than this index them by connection id.
const INDEX_FROM: usize = 16;

/// A topic's local subscribers. Most topics have one for good (a user's stream, a channel
/// only one connection here follows): that one is kept inline, a map slot of two words with
/// nothing more on the heap. Topics with more keep a dense vector (fast iteration for fan-out).
enum Subscribers {
    One(Arc<ConnHandle>),
    Many(Box<Many>),
}

/// The subscribers of a topic with more than one.
struct Many {
    conns: Vec<Arc<ConnHandle>>,
    /// Connection id -> index in `conns`, once the topic is large.
    position: Option<HashMap<u64, usize>>,
}

impl Subscribers {
    fn conns(&self) -> &[Arc<ConnHandle>] {
        match self {
            Subscribers::One(conn) => std::slice::from_ref(conn),
            Subscribers::Many(many) => &many.conns,
        }
    }

    fn add(&mut self, conn: &Arc<ConnHandle>) {
        match self {
            Subscribers::One(only) if only.id == conn.id => {}
            Subscribers::One(only) => {
                let conns = vec![only.clone(), conn.clone()];
                *self = Subscribers::Many(Box::new(Many { conns, position: None }));
            }
            Subscribers::Many(many) => many.add(conn),
        }
    }

    /// Removes connection `id`; true if none is left. (A topic with several keeps at least
    /// one: down to one, it goes back inline.)
    fn remove(&mut self, id: u64) -> bool {
        match self {
            Subscribers::One(only) => only.id == id,
            Subscribers::Many(many) => {
                many.remove(id);
                if many.conns.len() == 1 {
                    if let Some(last) = many.conns.pop() {
                        *self = Subscribers::One(last);
                    }
                }
                false
            }
        }
    }
}

impl Many {
    fn find(&self, id: u64) -> Option<usize> {
        match &self.position {
            Some(index) => index.get(&id).copied(),
            None => self.conns.iter().position(|c| c.id == id),
        }
    }

    fn add(&mut self, conn: &Arc<ConnHandle>) {
        if self.find(conn.id).is_some() {
            return;
        }
        self.conns.push(conn.clone());
        match &mut self.position {
            Some(index) => {
                index.insert(conn.id, self.conns.len() - 1);
            }
            None if self.conns.len() > INDEX_FROM => {
                self.position = Some(self.conns.iter().enumerate().map(|(i, c)| (c.id, i)).collect());
            }
            None => {}
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(pos) = self.find(id) else { return };
        self.conns.swap_remove(pos);
        if let Some(index) = &mut self.position {
            index.remove(&id);
            if let Some(moved) = self.conns.get(pos) {
                index.insert(moved.id, pos);
            }
        }
    }
}

/// Topic → local subscribers. The map's key is the topic's one shared name on this node:
/// subscribers, the topic sync and the broker hold it rather than copies.
#[derive(Default)]
pub struct TopicRegistry {
    topics: RwLock<HashMap<Topic, Subscribers>>,
}

impl TopicRegistry {
    /// Adds a subscriber (idempotent); returns the topic's shared name, for the subscriber to
    /// keep (`topic` itself if the topic is new here).
    pub fn add(&self, topic: impl Into<Topic>, conn: &Arc<ConnHandle>) -> Topic {
        match self.topics.write().entry(topic.into()) {
            Entry::Occupied(listed) => {
                let name = listed.key().clone();
                listed.into_mut().add(conn);
                name
            }
            Entry::Vacant(new) => {
                let name = new.key().clone();
                new.insert(Subscribers::One(conn.clone()));
                name
            }
        }
    }

    /// The topic's shared name if somebody here is subscribed to it, else a new one: what a
    /// connection keeps in its subscriptions before it registers.
    pub fn intern(&self, topic: &str) -> Topic {
        match self.topics.read().get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Topic::from(topic),
        }
    }

    /// Removes a subscriber; returns true if the topic has no local subscriber left.
    pub fn remove(&self, topic: &str, conn_id: u64) -> bool {
        let mut topics = self.topics.write();
        let Some(subs) = topics.get_mut(topic) else {
            return true;
        };
        if subs.remove(conn_id) {
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
            subs.conns().iter().for_each(&mut f);
        }
    }

    /// Calls `f` for every subscriber of `topic` under a read lock (so `f` must not block),
    /// unless it has more than `max`: then returns false without calling `f`.
    pub fn for_each_up_to(&self, topic: &str, max: usize, f: impl FnMut(&Arc<ConnHandle>)) -> bool {
        match self.topics.read().get(topic) {
            Some(subs) if subs.conns().len() > max => false,
            Some(subs) => {
                subs.conns().iter().for_each(f);
                true
            }
            None => true,
        }
    }

    /// The subscribers of `topic` right now, for a fan-out that writes to them without
    /// holding the registry's lock.
    pub fn snapshot(&self, topic: &str) -> Vec<Arc<ConnHandle>> {
        self.topics.read().get(topic).map(|subs| subs.conns().to_vec()).unwrap_or_default()
    }

    /// Number of topics with at least one local subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.read().len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::connection::testing::{connection, endpoint_with};

    fn conns(n: u64) -> Vec<Arc<ConnHandle>> {
        let endpoint = endpoint_with("/ws/notifications", |_| {});
        (1..=n).map(|id| connection(id, endpoint.clone()).0).collect()
    }

    fn members(registry: &TopicRegistry, topic: &str) -> BTreeSet<u64> {
        let mut ids = BTreeSet::new();
        registry.for_each(topic, |c| assert!(ids.insert(c.id), "connection {} listed twice", c.id));
        ids
    }

    #[test]
    fn a_topic_goes_from_one_subscriber_to_several_and_back() {
        let registry = TopicRegistry::default();
        let c = conns(3);
        registry.add("t", &c[0]);
        registry.add("t", &c[1]);
        assert!(!registry.remove("t", 1), "one left");
        assert_eq!(members(&registry, "t"), BTreeSet::from([2]));
        assert!(!registry.remove("t", 9), "not a subscriber: nothing changes");
        registry.add("t", &c[2]);
        registry.add("t", &c[0]);
        assert_eq!(members(&registry, "t"), BTreeSet::from([1, 2, 3]));
        assert!(!registry.remove("t", 2) && !registry.remove("t", 3));
        assert!(registry.remove("t", 1), "the last one left");
        assert!(!registry.has("t"));
    }

    #[test]
    fn joins_and_leaves_below_and_above_the_index_threshold() {
        let registry = TopicRegistry::default();
        let all = conns(3 * INDEX_FROM as u64);
        let mut expected = BTreeSet::new();
        let name = registry.add("t", &all[0]);
        for c in &all {
            let again = registry.add("t", c);
            assert!(Arc::ptr_eq(&again, &name), "every subscriber gets the topic's one shared name");
            registry.add("t", c);
            expected.insert(c.id);
            assert_eq!(members(&registry, "t"), expected, "adding twice is a no-op");
        }
        assert_eq!((&*name, registry.topic_count()), ("t", 1));
        // Leave in an order that moves entries around (every third, then the rest backwards).
        let order: Vec<u64> =
            (1..=all.len() as u64).filter(|i| i % 3 == 0).chain((1..=all.len() as u64).rev()).collect();
        for id in order {
            if !expected.remove(&id) {
                continue;
            }
            let empty = registry.remove("t", id);
            assert_eq!(empty, expected.is_empty());
            assert_eq!(members(&registry, "t"), expected);
            let n = expected.len();
            assert!(registry.for_each_up_to("t", n, |_| {}), "{n} subscribers are not more than {n}");
            if n > 0 {
                assert!(!registry.for_each_up_to("t", n - 1, |_| panic!("called past the limit")));
            }
        }
        assert!(!registry.has("t"));
    }
}
