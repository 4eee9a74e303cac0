//! A set of topics kept as a short vector: a connection's topics are a handful, held by every
//! connection for its whole life, where a hash set's table and hasher state would cost more
//! than the entries themselves.

use switchboard_broker::Topic;

/// A small set of topics (linear lookups; meant for a few dozen entries at most, which the
/// endpoints' `max_subscriptions` bounds). A boxed slice, two words where a `Vec` takes three:
/// it changes only on subscribe and unsubscribe, and then by exactly one entry. The names are
/// the node's shared ones (see [`Topic`]), not copies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TopicSet(Box<[Topic]>);

impl TopicSet {
    /// Whether `item` is in the set.
    pub fn contains(&self, item: &str) -> bool {
        self.0.iter().any(|s| &**s == item)
    }

    /// Adds `item`; false if it was already there.
    pub fn insert(&mut self, item: Topic) -> bool {
        if self.contains(&item) {
            return false;
        }
        let mut items = std::mem::take(&mut self.0).into_vec();
        items.reserve_exact(1);
        items.push(item);
        self.0 = items.into_boxed_slice();
        true
    }

    /// Removes `item` and returns it; `None` if it was not there.
    pub fn remove(&mut self, item: &str) -> Option<Topic> {
        let i = self.0.iter().position(|s| &**s == item)?;
        let mut items = std::mem::take(&mut self.0).into_vec();
        let removed = items.swap_remove(i);
        self.0 = items.into_boxed_slice();
        Some(removed)
    }

    /// Empties the set, returning its entries.
    pub fn take(&mut self) -> Vec<Topic> {
        std::mem::take(&mut self.0).into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_set() {
        let mut set = TopicSet::default();
        assert!(set.insert("a".into()) && set.insert("b".into()) && !set.insert("a".into()));
        assert!(set.contains("a") && set.contains("b") && !set.contains("c"));
        assert!(!set.insert("b".into()));
        assert_eq!(set.remove("a").as_deref(), Some("a"));
        assert_eq!(set.remove("a"), None);
        assert_eq!(set.take(), vec![Topic::from("b")]);
        assert_eq!(set.take(), Vec::<Topic>::new());
    }
}
