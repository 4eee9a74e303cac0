//! A history of what fault tests' publishers sent and their clients received, and the check
//! of it: Jepsen's "total queue" checker, applied per user.
//!
//! Every publish is recorded with its outcome: `ok` (acknowledged: it must be delivered),
//! `fail` (definitely not done: a 4xx/503 before anything was stored) or `info` (unknown: a
//! timeout, a reset; it may or may not appear). Every event a client received is recorded
//! with the client it reached. The check then says, for each client (one user's connection,
//! open while the events were published):
//! - **lost**: acknowledged events of its user it never received (the promise broken);
//! - **unexpected**: events it received that nobody published to its user;
//! - **duplicates**: events received more than once (allowed on the wire: clients deduplicate
//!   by id; counted, not failed);
//! - **reordered**: after deduplication, an event of a lower sequence number after a higher
//!   one (one sequential publisher per user numbers its events);
//! - **recovered**: indeterminate publishes that were delivered after all;
//! - how long acknowledged events took from the acknowledgement to the client (p50, p99, max).
//!
//! The report is a JSON value, for the fault matrix's file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{json, Value};

/// What became of one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it must reach every open connection of its user.
    Ok,
    /// Refused before anything was stored: it must not appear.
    Fail,
    /// Unknown (a timeout, a reset): it may appear, once or not at all.
    Info,
}

struct Publish {
    user: String,
    seq: u64,
    outcome: Outcome,
    acked_at: Instant,
}

struct Client {
    user: String,
    opened_at: Instant,
    /// Event ids in arrival order, with when they arrived.
    received: Vec<(String, Instant)>,
}

#[derive(Default)]
struct Inner {
    publishes: HashMap<String, Publish>,
    clients: BTreeMap<String, Client>,
}

/// The shared record of a fault test (publishers and client readers write to it concurrently).
#[derive(Default)]
pub struct History {
    inner: Mutex<Inner>,
}

/// What the check of a [`History`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Publishes acknowledged, refused, of unknown outcome.
    pub acked: usize,
    /// Publishes refused before anything was stored.
    pub failed: usize,
    /// Publishes whose outcome is unknown.
    pub indeterminate: usize,
    /// Deliveries counted per client (one per event the client had to get), in all.
    pub expected_deliveries: usize,
    /// `(client, event id)` of acknowledged events a client never got.
    pub lost: Vec<(String, String)>,
    /// `(client, event id)` of events a client got that were not published to its user, or
    /// were refused.
    pub unexpected: Vec<(String, String)>,
    /// Events a client received again (allowed; clients deduplicate by id).
    pub duplicates: usize,
    /// `(client, event id)` of events that came after one with a higher sequence number.
    pub reordered: Vec<(String, String)>,
    /// Indeterminate publishes that were delivered.
    pub recovered: usize,
    /// Acknowledgement to delivery, milliseconds: p50, p99, max.
    pub latency_ms: [u64; 3],
}

impl Report {
    /// Whether the promise held: nothing acknowledged lost, nothing unexpected, no reordering.
    pub fn holds(&self) -> bool {
        self.lost.is_empty() && self.unexpected.is_empty() && self.reordered.is_empty()
    }

    /// The report as JSON (ids of lost, unexpected and reordered events listed, at most 50 of
    /// each).
    pub fn to_json(&self) -> Value {
        let listed = |pairs: &[(String, String)]| -> Value {
            pairs.iter().take(50).map(|(client, id)| json!({"client": client, "id": id})).collect()
        };
        json!({
            "holds": self.holds(),
            "acked": self.acked,
            "failed": self.failed,
            "indeterminate": self.indeterminate,
            "expected_deliveries": self.expected_deliveries,
            "lost": self.lost.len(),
            "lost_ids": listed(&self.lost),
            "unexpected": self.unexpected.len(),
            "unexpected_ids": listed(&self.unexpected),
            "duplicates": self.duplicates,
            "reordered": self.reordered.len(),
            "reordered_ids": listed(&self.reordered),
            "recovered": self.recovered,
            "latency_ms": {"p50": self.latency_ms[0], "p99": self.latency_ms[1], "max": self.latency_ms[2]},
        })
    }
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records a publish of event `id` to `user`, the `seq`-th of that user's publisher, and
    /// its outcome (for `Ok`, at the moment of the acknowledgement).
    pub fn published(&self, user: &str, id: &str, seq: u64, outcome: Outcome) {
        let publish = Publish { user: user.to_owned(), seq, outcome, acked_at: Instant::now() };
        self.inner.lock().publishes.insert(id.to_owned(), publish);
    }

    /// Records that `client`, a connection of `user`, is open from now on: it must get every
    /// event acknowledged to `user` from here.
    pub fn opened(&self, client: &str, user: &str) {
        let record = Client { user: user.to_owned(), opened_at: Instant::now(), received: Vec::new() };
        self.inner.lock().clients.insert(client.to_owned(), record);
    }

    /// Records that `client` received event `id`.
    pub fn received(&self, client: &str, id: &str) {
        if let Some(c) = self.inner.lock().clients.get_mut(client) {
            c.received.push((id.to_owned(), Instant::now()));
        }
    }

    /// How many acknowledged events `client` still lacks (to wait for delivery to finish).
    pub fn missing(&self, client: &str) -> usize {
        let inner = self.inner.lock();
        let Some(c) = inner.clients.get(client) else { return 0 };
        let got: HashSet<&str> = c.received.iter().map(|(id, _)| id.as_str()).collect();
        inner.publishes.iter().filter(|(id, p)| owed(c, p) && !got.contains(id.as_str())).count()
    }

    /// The ids of events acknowledged between `from` and `to` (for a scenario that knows which
    /// acknowledgements a fault may take back).
    pub fn acked_between(&self, from: Instant, to: Instant) -> HashSet<String> {
        let inner = self.inner.lock();
        inner
            .publishes
            .iter()
            .filter(|(_, p)| p.outcome == Outcome::Ok && p.acked_at >= from && p.acked_at <= to)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Acknowledged events not yet delivered to every client that must get them.
    pub fn missing_anywhere(&self) -> usize {
        self.missing_except(&HashSet::new())
    }

    /// [`History::missing_anywhere`], not counting the events in `allowed` (those a scenario
    /// knows its fault may take back).
    pub fn missing_except(&self, allowed: &HashSet<String>) -> usize {
        let inner = self.inner.lock();
        inner
            .clients
            .values()
            .map(|c| {
                let got: HashSet<&str> = c.received.iter().map(|(id, _)| id.as_str()).collect();
                inner
                    .publishes
                    .iter()
                    .filter(|(id, p)| owed(c, p) && !got.contains(id.as_str()) && !allowed.contains(id.as_str()))
                    .count()
            })
            .sum()
    }

    /// Checks the history.
    pub fn check(&self) -> Report {
        let inner = self.inner.lock();
        let count = |o: Outcome| inner.publishes.values().filter(|p| p.outcome == o).count();
        let mut report = Report {
            acked: count(Outcome::Ok),
            failed: count(Outcome::Fail),
            indeterminate: count(Outcome::Info),
            expected_deliveries: 0,
            lost: Vec::new(),
            unexpected: Vec::new(),
            duplicates: 0,
            reordered: Vec::new(),
            recovered: 0,
            latency_ms: [0; 3],
        };
        let mut latencies = Vec::new();
        let mut recovered: HashSet<&str> = HashSet::new();
        for (name, c) in &inner.clients {
            let mut seen: HashSet<&str> = HashSet::new();
            let mut highest: Option<u64> = None;
            for (id, at) in &c.received {
                if !seen.insert(id) {
                    report.duplicates += 1;
                    continue;
                }
                let Some(p) = inner.publishes.get(id).filter(|p| p.user == c.user && p.outcome != Outcome::Fail) else {
                    report.unexpected.push((name.clone(), id.clone()));
                    continue;
                };
                if highest.is_some_and(|h| p.seq < h) {
                    report.reordered.push((name.clone(), id.clone()));
                }
                highest = highest.max(Some(p.seq));
                match p.outcome {
                    Outcome::Ok if owed(c, p) => {
                        latencies.push(at.saturating_duration_since(p.acked_at).as_millis() as u64)
                    }
                    Outcome::Info => {
                        recovered.insert(id);
                    }
                    _ => {}
                }
            }
            let mut lost: Vec<(u64, &str)> = inner
                .publishes
                .iter()
                .filter(|(_, p)| owed(c, p))
                .inspect(|_| report.expected_deliveries += 1)
                .filter(|(id, _)| !seen.contains(id.as_str()))
                .map(|(id, p)| (p.seq, id.as_str()))
                .collect();
            lost.sort();
            report.lost.extend(lost.into_iter().map(|(_, id)| (name.clone(), id.to_owned())));
        }
        report.recovered = recovered.len();
        latencies.sort_unstable();
        let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        report.latency_ms = [at(0.5), at(0.99), latencies.last().copied().unwrap_or(0)];
        report
    }
}

/// Whether client `c` must get publish `p`: acknowledged, to its user, after it opened.
fn owed(c: &Client, p: &Publish) -> bool {
    p.outcome == Outcome::Ok && p.user == c.user && p.acked_at >= c.opened_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_duplicated_reordered_and_recovered_events_are_told_apart() {
        let h = History::new();
        h.opened("a1", "alice");
        h.opened("b1", "bob");
        for (id, seq, outcome) in [("e1", 1, Outcome::Ok), ("e2", 2, Outcome::Ok), ("e3", 3, Outcome::Info)] {
            h.published("alice", id, seq, outcome);
        }
        h.published("alice", "e4", 4, Outcome::Ok);
        h.published("alice", "e5", 5, Outcome::Fail);
        h.published("bob", "b1", 1, Outcome::Ok);
        for id in ["e2", "e1", "e1", "e3", "e5", "b1"] {
            h.received("a1", id);
        }
        h.received("b1", "b1");
        assert_eq!(h.missing("a1"), 1, "e4");
        let r = h.check();
        assert_eq!((r.acked, r.failed, r.indeterminate), (4, 1, 1));
        assert_eq!(r.lost, [("a1".to_owned(), "e4".to_owned())]);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.reordered, [("a1".to_owned(), "e1".to_owned())]);
        assert_eq!(r.unexpected, [("a1".to_owned(), "e5".to_owned()), ("a1".to_owned(), "b1".to_owned())]);
        assert_eq!(r.recovered, 1);
        assert_eq!(r.expected_deliveries, 4, "alice's three acknowledged events, bob's one");
        assert!(!r.holds());
        assert_eq!(r.to_json()["lost"], 1);
    }

    #[test]
    fn a_complete_history_holds() {
        let h = History::new();
        h.opened("a1", "alice");
        h.opened("a2", "alice");
        for seq in 1..=3 {
            h.published("alice", &format!("e{seq}"), seq, Outcome::Ok);
        }
        for client in ["a1", "a2"] {
            for seq in 1..=3 {
                h.received(client, &format!("e{seq}"));
            }
        }
        let r = h.check();
        assert!(r.holds(), "{r:?}");
        assert_eq!((r.expected_deliveries, h.missing_anywhere()), (6, 0));
    }
}
