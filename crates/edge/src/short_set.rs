//! A set of strings kept as a short vector: a connection's topics, channels and chosen event
//! types are a handful of entries each, held by every connection for its whole life, where a
//! hash set's table and hasher state would cost more than the strings themselves.

/// A small set of strings (linear lookups; meant for a few dozen entries at most, which the
/// endpoints' `max_subscriptions` bounds). A boxed slice, two words where a `Vec` takes three:
/// it changes only on subscribe and unsubscribe, and then by exactly one entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShortSet(Box<[String]>);

impl ShortSet {
    /// Whether `item` is in the set.
    pub fn contains(&self, item: &str) -> bool {
        self.0.iter().any(|s| s == item)
    }

    /// Adds `item`; false if it was already there.
    pub fn insert(&mut self, item: String) -> bool {
        if self.contains(&item) {
            return false;
        }
        let mut items = std::mem::take(&mut self.0).into_vec();
        items.reserve_exact(1);
        items.push(item);
        self.0 = items.into_boxed_slice();
        true
    }

    /// Removes `item`; false if it was not there.
    pub fn remove(&mut self, item: &str) -> bool {
        match self.0.iter().position(|s| s == item) {
            Some(i) => {
                let mut items = std::mem::take(&mut self.0).into_vec();
                items.swap_remove(i);
                self.0 = items.into_boxed_slice();
                true
            }
            None => false,
        }
    }

    /// Empties the set, returning its entries.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.0).into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_set() {
        let mut set = ShortSet::default();
        assert!(set.insert("a".into()) && set.insert("b".into()) && !set.insert("a".into()));
        assert!(set.contains("a") && set.contains("b") && !set.contains("c"));
        assert!(!set.insert("b".into()));
        assert!(set.remove("a"));
        assert!(!set.remove("a"));
        assert_eq!(set.take(), vec!["b".to_owned()]);
        assert_eq!(set.take(), Vec::<String>::new());
    }
}
