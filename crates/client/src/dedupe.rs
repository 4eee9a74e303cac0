//! Remembering recently seen event ids, in bounded memory.

use std::collections::{HashSet, VecDeque};

/// The last `capacity` distinct ids.
pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl RecentIds {
    /// An empty window of `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        RecentIds { capacity: capacity.max(1), order: VecDeque::new(), set: HashSet::new() }
    }

    /// Records `id`; false if it was already in the window (a duplicate).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let mut r = RecentIds::new(2);
        assert!(r.insert("a") && r.insert("b"));
        assert!(!r.insert("a"));
        assert!(r.insert("c"));
        assert!(r.insert("a"), "a fell out of the window");
    }
}
