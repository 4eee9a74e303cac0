//! The in-process broker's key space: values with an optional expiry, whose expired entries
//! are swept away by later writes even if nobody reads them again (as Redis does).
//!
//! The keys live in [`SHARDS`] maps, and a sweep scans one of them at a time, in rotation: the
//! amortized cost per write is the same as scanning the whole key space now and then, but the
//! longest pause is a sixty-fourth of it (two million keys: about 1 ms instead of 60 ms, during
//! which no event could be delivered).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use bytes::Bytes;

/// Fewest writes between two sweeps of a whole map (of expiring keys, or of logs).
pub(crate) const SWEEP_MIN_WRITES: usize = 1024;
/// Maps the key space is split into; one is swept at a time.
const SHARDS: usize = 64;

/// When to sweep a map of expiring entries so expired ones cannot pile up, at a cost per write
/// that does not grow with the map: a sweep is due after as many writes as half the entries
/// the map held at the last one (at least the minimum), so each entry is scanned about twice
/// per write on average, however large the map.
pub(crate) struct SweepSchedule {
    min_writes: usize,
    writes: usize,
}

impl Default for SweepSchedule {
    fn default() -> Self {
        SweepSchedule::with_min(SWEEP_MIN_WRITES)
    }
}

impl SweepSchedule {
    /// A schedule with at least `min_writes` writes between two sweeps.
    pub(crate) fn with_min(min_writes: usize) -> Self {
        SweepSchedule { min_writes, writes: 0 }
    }

    /// Counts a write into a map of `len` entries; true when a sweep is due.
    pub(crate) fn write(&mut self, len: usize) -> bool {
        self.writes += 1;
        if self.writes >= self.min_writes.max(len / 2) {
            self.writes = 0;
            return true;
        }
        false
    }
}

/// A value and when it expires (unix ms; `None`: never).
pub(crate) type Entry = (Bytes, Option<u64>);

/// Keys with values and optional expiry, swept one shard at a time.
pub(crate) struct ExpiringMap {
    shards: Vec<HashMap<String, Entry>>,
    hasher: RandomState,
    sweeps: SweepSchedule,
    next_sweep: usize,
    /// How many entries the last sweep scanned (for tests of the pause bound).
    #[cfg(test)]
    last_sweep_scanned: usize,
}

impl Default for ExpiringMap {
    fn default() -> Self {
        ExpiringMap {
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
            hasher: RandomState::new(),
            // A rotation of all shards spans as many writes as one whole-map sweep would.
            sweeps: SweepSchedule::with_min(SWEEP_MIN_WRITES / SHARDS),
            next_sweep: 0,
            #[cfg(test)]
            last_sweep_scanned: 0,
        }
    }
}

impl ExpiringMap {
    fn shard(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// The live value of `key` at `now`; an expired entry is removed on the way.
    pub(crate) fn get(&mut self, key: &str, now: u64) -> Option<&Entry> {
        let i = self.shard(key);
        let shard = &mut self.shards[i];
        if shard.get(key).is_some_and(|(_, exp)| exp.is_some_and(|e| e <= now)) {
            shard.remove(key);
            return None;
        }
        shard.get(key)
    }

    /// Sets `key`, then sweeps the next shard if a sweep is due.
    pub(crate) fn insert(&mut self, key: &str, entry: Entry, now: u64) {
        let i = self.shard(key);
        match self.shards[i].get_mut(key) {
            Some(slot) => *slot = entry,
            None => {
                self.shards[i].insert(key.to_owned(), entry);
            }
        }
        if self.sweeps.write(self.len() / SHARDS) {
            let shard = &mut self.shards[self.next_sweep];
            #[cfg(test)]
            {
                self.last_sweep_scanned = shard.len();
            }
            shard.retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
            self.next_sweep = (self.next_sweep + 1) % SHARDS;
        }
    }

    /// Removes `key`; true if it was there (live or not).
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let i = self.shard(key);
        self.shards[i].remove(key).is_some()
    }

    /// Entries held, expired ones not yet swept included.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Every key held.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.shards.iter().flat_map(HashMap::keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writes_until_due(schedule: &mut SweepSchedule, len: usize) -> usize {
        (1..).find(|_| schedule.write(len)).unwrap_or(0)
    }

    #[test]
    fn sweeps_come_after_a_number_of_writes_that_grows_with_the_map() {
        let mut schedule = SweepSchedule::default();
        assert_eq!(writes_until_due(&mut schedule, 10), SWEEP_MIN_WRITES);
        assert_eq!(writes_until_due(&mut schedule, 400_000), 200_000);
        assert_eq!(writes_until_due(&mut schedule, 0), SWEEP_MIN_WRITES);
    }

    #[test]
    fn expired_entries_go_a_shard_at_a_time_and_live_ones_stay() {
        let mut map = ExpiringMap::default();
        let value = || Bytes::from_static(b"x");
        for i in 0..64_000 {
            map.insert(&format!("short:{i}"), (value(), Some(1_000)), 0);
        }
        for i in 0..64_000 {
            map.insert(&format!("long:{i}"), (value(), None), 2_000);
            assert!(map.last_sweep_scanned <= 4_000, "one sweep scanned {} entries", map.last_sweep_scanned);
        }
        // 64k writes after the short keys expired: every shard was swept at least once.
        assert_eq!(map.len(), 64_000, "only the live keys are left");
        assert!(map.keys().all(|k| k.starts_with("long:")));
        assert!(map.get("long:7", 5_000).is_some());
        map.insert("brief", (value(), Some(10)), 5);
        assert!(map.get("brief", 9).is_some() && map.get("brief", 10).is_none(), "expired on read at its time");
        assert!(!map.remove("brief"), "and removed when read expired");
    }
}
