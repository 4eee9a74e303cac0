//! The newest position of each user's log, as this worker knows it: what it stamps as an
//! event's `prev` (the entry before it in the user's log).
//!
//! Edges compare an event's `prev` with the last position their connection got: when `prev`
//! is newer, the connection missed something (its node's subscription was down) and the edge
//! fills the gap from the log. So `prev` may be too new (a needless read of the log at one
//! edge) but never too old (a missed event that nobody notices). Hence:
//! - a user's tail is read from their log the first time this worker meets them, and again
//!   whenever it is not sure: after a batch failed (some copies may have landed), when it took
//!   or lost a shard (another worker may have written the logs meanwhile), or once too many
//!   users are known (the map is bounded: it is then forgotten as a whole);
//! - an entry at or below the known tail (a batch redone after a crash) gets the tail as its
//!   `prev`: newer than the entry itself, so edges that lack it look it up.
//!
//! A user's events all go through one ingest shard ([`crate::shard_for`]), which one worker
//! owns at a time, so while it owns the shard nobody else appends to the user's log.

use std::collections::HashMap;

use switchboard_broker::LogId;

/// Users whose tails are kept before the map is forgotten and read again.
const CAPACITY: usize = 65_536;

/// The position of an empty log: before every real one.
pub const EMPTY: LogId = LogId { ms: 0, seq: 0 };

/// Known tails of users' logs.
#[derive(Default)]
pub struct LogTails {
    known: HashMap<String, LogId>,
}

impl LogTails {
    /// The distinct users among `users` whose tail is not known, in first-seen order.
    pub fn unknown<'a>(&self, users: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut missing: Vec<String> = Vec::new();
        for user in users {
            if !self.known.contains_key(user) && !missing.iter().any(|m| m == user) {
                missing.push(user.to_owned());
            }
        }
        missing
    }

    /// Records tails read from the users' logs (`None`: the log is empty or gone).
    pub fn learn(&mut self, read: impl IntoIterator<Item = (String, Option<LogId>)>) {
        if self.known.len() >= CAPACITY {
            self.known.clear();
        }
        for (user, tail) in read {
            self.known.insert(user, tail.unwrap_or(EMPTY));
        }
    }

    /// The `prev` of the user's entry at `position`, which then becomes their tail. A user
    /// whose tail is not known gets `position` itself: "something before this one may be
    /// missing", which sends an edge that lacks it to the log.
    pub fn advance(&mut self, user: &str, position: LogId) -> LogId {
        match self.known.get_mut(user) {
            Some(tail) => {
                let prev = *tail;
                *tail = prev.max(position);
                prev
            }
            None => position,
        }
    }

    /// Forgets every tail (a shard changed hands, or a batch failed).
    pub fn clear(&mut self) {
        self.known.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> LogId {
        LogId { ms, seq: 0 }
    }

    #[test]
    fn each_entry_points_at_the_one_before_it_and_a_redone_entry_at_the_newest() {
        let mut tails = LogTails::default();
        assert_eq!(tails.unknown(["alice", "bob", "alice"]), ["alice", "bob"]);
        tails.learn([("alice".to_owned(), Some(at(5))), ("bob".to_owned(), None)]);
        assert!(tails.unknown(["alice", "bob"]).is_empty());
        assert_eq!(tails.advance("alice", at(7)), at(5));
        assert_eq!(tails.advance("alice", at(9)), at(7));
        assert_eq!(tails.advance("bob", at(8)), EMPTY, "a user's first event");
        // A batch redone after a crash: its entries are at or below the tail.
        assert_eq!(tails.advance("alice", at(6)), at(9), "newer than the entry: edges that lack it look");
        assert_eq!(tails.advance("alice", at(10)), at(9));
    }

    #[test]
    fn what_it_is_not_sure_of_is_read_again() {
        let mut tails = LogTails::default();
        tails.learn([("alice".to_owned(), Some(at(5)))]);
        assert_eq!(tails.advance("bob", at(8)), at(8), "not known: the entry itself");
        tails.clear();
        assert_eq!(tails.unknown(["alice"]), ["alice"]);
        assert_eq!(tails.advance("alice", at(9)), at(9));
    }
}
