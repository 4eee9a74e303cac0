//! The in-process broker used by `switchboard serve` without Redis.
//!
//! A [`MemoryHub`] is the shared state (what Redis is in cluster mode); each node gets its own
//! [`MemoryBroker`] handle from [`MemoryHub::node`], with its own subscriptions and delivery sink,
//! so several nodes in one process behave like several edges on one Redis. Semantics match the
//! Redis implementation: per-node topic subscriptions, keys with TTL, single-use `take`, logs
//! with `ms-seq` ids trimmed by age, and counted leases that expire.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

use crate::clock::{Clock, SystemClock};
use crate::expiring::{ExpiringMap, SweepSchedule};
use crate::{Broker, DeliverySink, Fenced, KeyValue, Leases, Log, LogId, Presence, PubSub, Result, Topic};

type NodeId = u64;

/// The nodes subscribed to each topic, with their sinks.
type TopicSubscribers = HashMap<Topic, Vec<(NodeId, Arc<dyn DeliverySink>)>>;

/// Shared in-process state: the equivalent of one Redis server.
#[derive(Clone)]
pub struct MemoryHub {
    inner: Arc<HubState>,
}

struct HubState {
    clock: Arc<dyn Clock>,
    next_node: AtomicU64,
    topics: RwLock<TopicSubscribers>,
    keys: Mutex<Keys>,
    logs: Mutex<HashMap<String, LogState>>,
    log_sweeps: Mutex<SweepSchedule>,
    /// Lease key -> (holder, expiry ms). A short list per key: limits are small, and a list
    /// costs a fraction of a map per key (one key per user and quota on a busy node).
    leases: Mutex<HashMap<Box<str>, LeaseHolders>>,
    /// User -> their connections' presence entries (connection, expiry ms). A user is listed
    /// until their going offline has been reported (by a leave or an expiry sweep).
    presence: Mutex<HashMap<Box<str>, LeaseHolders>>,
    /// Fencing tokens of fenced leases.
    fences: Mutex<HashMap<String, u64>>,
    /// Signalled after every append, for blocking reads ([`Log::read_after_many`]).
    appended: tokio::sync::Notify,
}

/// Pushes onto a list that most often holds one entry for good (a user's topic's subscribed
/// node): the first entry gets room for itself only, not the four a `Vec` starts with. There
/// is a list like this per connected user, so the difference is per connection.
fn push_small<T>(list: &mut Vec<T>, item: T) {
    if list.capacity() == 0 {
        list.reserve_exact(1);
    }
    list.push(item);
}

/// The holders of one lease key and when each one's lease ends (unix ms). Most keys have one
/// holder for good (a user's quota, a user's presence: several per connection on a busy
/// node), kept inline in the map slot; a second one moves the list to the heap.
type LeaseHolders = SmallVec<[(Box<str>, u64); 1]>;

/// The holders of `key`, listed empty if it has none: the key's string is allocated only when
/// it is new (a connect looks its user's keys up; most are there already).
fn holders_of<'a>(map: &'a mut HashMap<Box<str>, LeaseHolders>, key: &str) -> &'a mut LeaseHolders {
    if !map.contains_key(key) {
        map.insert(key.into(), LeaseHolders::new());
    }
    map.get_mut(key).expect("listed just above")
}

#[derive(Default)]
struct Keys {
    values: ExpiringMap,
    sets: HashMap<String, HashSet<String>>,
}

#[derive(Default)]
struct LogState {
    entries: VecDeque<(LogId, Bytes)>,
    last: Option<LogId>,
    /// A log nobody appends to for a whole retention period disappears, as on Redis.
    expires_at_ms: u64,
}

/// A log's entries, unless the log as a whole has expired.
fn live_log<'a>(logs: &'a HashMap<String, LogState>, log: &str, now: u64) -> Option<&'a LogState> {
    logs.get(log).filter(|s| s.expires_at_ms > now)
}

/// Up to `limit` entries of `log` after `after`, oldest first.
fn entries_after(
    logs: &HashMap<String, LogState>,
    log: &str,
    after: Option<LogId>,
    limit: usize,
    now: u64,
) -> Vec<(LogId, Bytes)> {
    let Some(state) = live_log(logs, log, now) else { return Vec::new() };
    let start = match after {
        Some(a) => state.entries.partition_point(|(id, _)| *id <= a),
        None => 0,
    };
    state.entries.iter().skip(start).take(limit).cloned().collect()
}

/// Runs `f` on the log named `log`, created empty if missing; the usual case (it exists)
/// allocates nothing.
fn with_log<R>(logs: &mut HashMap<String, LogState>, log: &str, f: impl FnOnce(&mut LogState) -> R) -> R {
    match logs.get_mut(log) {
        Some(state) => f(state),
        None => f(logs.entry(log.to_owned()).or_default()),
    }
}

/// Appends under `id` if it is newer than the log's top, trims by age and pushes the whole
/// log's expiry out; true if appended.
fn append_at(state: &mut LogState, id: LogId, entry: Bytes, now: u64, retention: Duration, max: usize) -> bool {
    if state.expires_at_ms <= now {
        *state = LogState::default();
    }
    if state.last.is_some_and(|last| last >= id) {
        return false;
    }
    state.last = Some(id);
    state.entries.push_back((id, entry));
    let min_ms = now.saturating_sub(retention.as_millis() as u64);
    while state.entries.front().is_some_and(|(id, _)| id.ms < min_ms) || state.entries.len() > max.max(1) {
        state.entries.pop_front();
    }
    state.expires_at_ms = now + retention.as_millis() as u64;
    true
}

impl Default for MemoryHub {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryHub {
    /// A hub on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A hub on an injected clock (tests of retention and expiry).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryHub {
            inner: Arc::new(HubState {
                clock,
                next_node: AtomicU64::new(1),
                topics: RwLock::default(),
                keys: Mutex::default(),
                logs: Mutex::default(),
                log_sweeps: Mutex::default(),
                leases: Mutex::default(),
                presence: Mutex::default(),
                fences: Mutex::default(),
                appended: tokio::sync::Notify::new(),
            }),
        }
    }

    /// A node's handle: its subscriptions deliver to `sink`.
    pub fn node(&self, sink: Arc<dyn DeliverySink>) -> MemoryBroker {
        MemoryBroker { hub: self.inner.clone(), node: self.inner.next_node.fetch_add(1, Ordering::Relaxed), sink }
    }
}

/// One node's view of a [`MemoryHub`].
pub struct MemoryBroker {
    hub: Arc<HubState>,
    node: NodeId,
    sink: Arc<dyn DeliverySink>,
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        let mut topics = self.hub.topics.write();
        topics.retain(|_, subs| {
            subs.retain(|(n, _)| *n != self.node);
            !subs.is_empty()
        });
    }
}

impl HubState {
    /// Now and then (see [`SweepSchedule`]) drops the logs that expired as a whole, so idle
    /// users' logs do not pile up.
    fn sweep_logs(&self, logs: &mut HashMap<String, LogState>, now: u64) {
        if self.log_sweeps.lock().write(logs.len()) {
            logs.retain(|_, s| s.expires_at_ms > now);
        }
    }

    fn deliver(&self, topic: &str, message: &Bytes) {
        // Copy the sinks out so that delivery (which may take a while for a large fan-out)
        // never runs under the topic lock.
        let topics = self.topics.read();
        match topics.get(topic).map(Vec::as_slice) {
            None | Some([]) => {}
            // The usual case, one node per process: no list to copy.
            Some([(_, only)]) => {
                let sink = only.clone();
                drop(topics);
                sink.deliver(topic, message.clone());
            }
            Some(subs) => {
                let sinks: Vec<Arc<dyn DeliverySink>> = subs.iter().map(|(_, s)| s.clone()).collect();
                drop(topics);
                for sink in sinks {
                    sink.deliver(topic, message.clone());
                }
            }
        }
    }

    fn live_value(&self, keys: &mut Keys, key: &str) -> Option<Bytes> {
        keys.values.get(key, self.clock.now_ms()).map(|(v, _)| v.clone())
    }
}

#[async_trait]
impl PubSub for MemoryBroker {
    async fn publish(&self, topic: &str, message: Bytes) -> Result<()> {
        self.hub.deliver(topic, &message);
        Ok(())
    }

    async fn publish_many(&self, messages: &[(String, Bytes)]) -> Result<()> {
        for (topic, message) in messages {
            self.hub.deliver(topic, message);
        }
        Ok(())
    }

    async fn subscribe(&self, topics: &[Topic]) -> Result<()> {
        let mut map = self.hub.topics.write();
        for topic in topics {
            let subs = map.entry(topic.clone()).or_default();
            if !subs.iter().any(|(n, _)| *n == self.node) {
                push_small(subs, (self.node, self.sink.clone()));
            }
        }
        Ok(())
    }

    async fn unsubscribe(&self, topics: &[Topic]) -> Result<()> {
        let mut map = self.hub.topics.write();
        for topic in topics {
            if let Some(subs) = map.get_mut(topic) {
                subs.retain(|(n, _)| *n != self.node);
                if subs.is_empty() {
                    map.remove(topic);
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl KeyValue for MemoryBroker {
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let exp = ttl.map(|t| self.hub.clock.now_ms() + t.as_millis() as u64);
        let mut keys = self.hub.keys.lock();
        keys.values.insert(key, (value, exp), self.hub.clock.now_ms());
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        let exp = ttl.map(|ttl| self.hub.clock.now_ms() + ttl.as_millis() as u64);
        let mut keys = self.hub.keys.lock();
        if self.hub.live_value(&mut keys, key).is_some() {
            return Ok(false);
        }
        keys.values.insert(key, (value, exp), self.hub.clock.now_ms());
        Ok(true)
    }

    async fn incr_in_window(&self, key: &str, window: Duration) -> Result<u64> {
        let mut keys = self.hub.keys.lock();
        let count = match self.hub.live_value(&mut keys, key) {
            Some(v) => std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) + 1,
            None => 1,
        };
        let now = self.hub.clock.now_ms();
        let exp = match keys.values.get(key, now) {
            Some((_, exp)) if count > 1 => *exp,
            _ => Some(now + window.as_millis() as u64),
        };
        keys.values.insert(key, (Bytes::from(count.to_string()), exp), now);
        Ok(count)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let mut keys = self.hub.keys.lock();
        Ok(self.hub.live_value(&mut keys, key))
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        let mut keys = self.hub.keys.lock();
        let v = self.hub.live_value(&mut keys, key);
        keys.values.remove(key);
        Ok(v)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut keys = self.hub.keys.lock();
        let existed = self.hub.live_value(&mut keys, key).is_some();
        keys.values.remove(key);
        Ok(existed || keys.sets.remove(key).is_some())
    }

    async fn set_add(&self, key: &str, member: &str) -> Result<bool> {
        Ok(self.hub.keys.lock().sets.entry(key.to_owned()).or_default().insert(member.to_owned()))
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<bool> {
        let mut keys = self.hub.keys.lock();
        let Some(set) = keys.sets.get_mut(key) else {
            return Ok(false);
        };
        let removed = set.remove(member);
        if set.is_empty() {
            keys.sets.remove(key);
        }
        Ok(removed)
    }

    async fn set_contains(&self, key: &str, member: &str) -> Result<bool> {
        Ok(self.hub.keys.lock().sets.get(key).is_some_and(|s| s.contains(member)))
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>> {
        Ok(self.hub.keys.lock().sets.get(key).map(|s| s.iter().cloned().collect()).unwrap_or_default())
    }
}

#[async_trait]
impl Log for MemoryBroker {
    async fn append(&self, log: &str, entry: Bytes, retention: Duration) -> Result<LogId> {
        let now = self.hub.clock.now_ms();
        let mut logs = self.hub.logs.lock();
        let id = with_log(&mut logs, log, |state| {
            // Ids only grow, even if the clock steps back (as Redis does for XADD *).
            let id = match state.last.filter(|_| state.expires_at_ms > now) {
                Some(last) if last.ms >= now => LogId { ms: last.ms, seq: last.seq + 1 },
                _ => LogId { ms: now, seq: 0 },
            };
            append_at(state, id, entry, now, retention, usize::MAX);
            id
        });
        self.hub.sweep_logs(&mut logs, now);
        drop(logs);
        self.hub.appended.notify_waiters();
        Ok(id)
    }

    async fn append_with_id(
        &self,
        log: &str,
        id: LogId,
        entry: Bytes,
        retention: Duration,
        max_entries: usize,
    ) -> Result<bool> {
        let now = self.hub.clock.now_ms();
        let mut logs = self.hub.logs.lock();
        let appended = with_log(&mut logs, log, |state| append_at(state, id, entry, now, retention, max_entries));
        self.hub.sweep_logs(&mut logs, now);
        drop(logs);
        if appended {
            self.hub.appended.notify_waiters();
        }
        Ok(appended)
    }

    async fn read_last_after(
        &self,
        log: &str,
        after: Option<LogId>,
        limit: usize,
    ) -> Result<(Vec<(LogId, Bytes)>, bool)> {
        let logs = self.hub.logs.lock();
        let Some(state) = live_log(&logs, log, self.hub.clock.now_ms()) else { return Ok((Vec::new(), false)) };
        let start = match after {
            Some(a) => state.entries.partition_point(|(id, _)| *id <= a),
            None => 0,
        };
        let available = state.entries.len() - start;
        let skip = start + available.saturating_sub(limit);
        Ok((state.entries.iter().skip(skip).cloned().collect(), available > limit))
    }

    async fn read_after(&self, log: &str, after: Option<LogId>, limit: usize) -> Result<Vec<(LogId, Bytes)>> {
        let logs = self.hub.logs.lock();
        Ok(entries_after(&logs, log, after, limit, self.hub.clock.now_ms()))
    }

    async fn read_after_many(
        &self,
        reads: &[(String, Option<LogId>)],
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<(LogId, Bytes)>>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an append between the look and the wait wakes it.
            let appended = self.hub.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let found: Vec<Vec<(LogId, Bytes)>> = {
                let logs = self.hub.logs.lock();
                let now = self.hub.clock.now_ms();
                reads.iter().map(|(log, after)| entries_after(&logs, log, *after, limit, now)).collect()
            };
            if found.iter().any(|e| !e.is_empty()) {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(found);
            }
        }
    }

    async fn trim_through(&self, log: &str, through: LogId) -> Result<()> {
        let mut logs = self.hub.logs.lock();
        if let Some(state) = logs.get_mut(log) {
            while state.entries.front().is_some_and(|(id, _)| *id <= through) {
                state.entries.pop_front();
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Leases for MemoryBroker {
    async fn try_acquire(&self, key: &str, holder: &str, limit: u32, ttl: Duration) -> Result<bool> {
        self.try_acquire_all(&[(key.to_owned(), limit)], holder, ttl).await
    }

    async fn try_acquire_all(&self, slots: &[(String, u32)], holder: &str, ttl: Duration) -> Result<bool> {
        let now = self.hub.clock.now_ms();
        let mut leases = self.hub.leases.lock();
        for (key, limit) in slots {
            let holders = holders_of(&mut leases, key);
            holders.retain(|(_, exp)| *exp > now);
            if !holders.iter().any(|(h, _)| &**h == holder) && holders.len() >= *limit as usize {
                return Ok(false);
            }
        }
        let until = now + ttl.as_millis() as u64;
        for (key, _) in slots {
            let holders = holders_of(&mut leases, key);
            match holders.iter_mut().find(|(h, _)| &**h == holder) {
                Some((_, exp)) => *exp = until,
                None => holders.push((holder.into(), until)),
            }
        }
        Ok(true)
    }

    async fn renew(&self, key: &str, holders: &[String], ttl: Duration) -> Result<usize> {
        let now = self.hub.clock.now_ms();
        let mut leases = self.hub.leases.lock();
        let Some(current) = leases.get_mut(key) else {
            return Ok(0);
        };
        // API-key quotas can have thousands of holders on one key: look them up in a set.
        let wanted: std::collections::HashSet<&str> = holders.iter().map(String::as_str).collect();
        let mut renewed = 0;
        for (h, exp) in current.iter_mut() {
            if *exp > now && wanted.contains(&**h) {
                *exp = now + ttl.as_millis() as u64;
                renewed += 1;
            }
        }
        Ok(renewed)
    }

    async fn acquire_fenced(&self, key: &str, fence: &str, holder: &str, ttl: Duration) -> Result<Option<u64>> {
        let now = self.hub.clock.now_ms();
        let mut leases = self.hub.leases.lock();
        let holders = holders_of(&mut leases, key);
        holders.retain(|(_, exp)| *exp > now);
        let mine = holders.iter().any(|(h, _)| &**h == holder);
        if !mine && !holders.is_empty() {
            return Ok(None);
        }
        holders.clear();
        holders.push((holder.into(), now + ttl.as_millis() as u64));
        let mut fences = self.hub.fences.lock();
        let token = fences.entry(fence.to_owned()).or_insert(0);
        if !mine {
            *token += 1;
        }
        Ok(Some(*token))
    }

    async fn commit_fenced(&self, fenced: &Fenced<'_>, cursor: &str, log: &str, position: LogId) -> Result<bool> {
        Ok(self.commit_if_current(fenced, cursor, log, position))
    }

    async fn holders(&self, key: &str) -> Result<Vec<String>> {
        let now = self.hub.clock.now_ms();
        let leases = self.hub.leases.lock();
        let mut live: Vec<String> = leases
            .get(key)
            .map(|holders| holders.iter().filter(|(_, exp)| *exp > now).map(|(h, _)| h.to_string()).collect())
            .unwrap_or_default();
        live.sort();
        Ok(live)
    }

    async fn release(&self, key: &str, holder: &str) -> Result<bool> {
        let mut leases = self.hub.leases.lock();
        let Some(current) = leases.get_mut(key) else {
            return Ok(false);
        };
        let before = current.len();
        current.retain(|(h, _)| &**h != holder);
        let held = current.len() < before;
        if current.is_empty() {
            leases.remove(key);
        }
        Ok(held)
    }
}

impl MemoryBroker {
    /// The fenced part of [`Leases::commit_fenced`], under the fence lock.
    fn commit_if_current(&self, fenced: &Fenced<'_>, cursor: &str, log: &str, position: LogId) -> bool {
        let fences = self.hub.fences.lock();
        if fences.get(fenced.fence).copied() != Some(fenced.token) {
            return false;
        }
        let now = self.hub.clock.now_ms();
        let holds = self
            .hub
            .leases
            .lock()
            .get(fenced.lease)
            .is_some_and(|holders| holders.iter().any(|(h, exp)| &**h == fenced.holder && *exp > now));
        if !holds {
            return false;
        }
        let mut keys = self.hub.keys.lock();
        let current =
            self.hub.live_value(&mut keys, cursor).and_then(|b| std::str::from_utf8(&b).ok().and_then(LogId::parse));
        if current.is_none_or(|c| c < position) {
            keys.values.insert(cursor, (Bytes::from(position.to_string()), None), now);
        }
        drop(keys);
        let mut logs = self.hub.logs.lock();
        if let Some(state) = logs.get_mut(log) {
            while state.entries.front().is_some_and(|(id, _)| *id <= position) {
                state.entries.pop_front();
            }
        }
        true
    }
}

#[async_trait]
impl Presence for MemoryBroker {
    async fn presence_join(&self, user: &str, conn: &str, ttl: Duration) -> Result<bool> {
        let now = self.hub.clock.now_ms();
        let mut presence = self.hub.presence.lock();
        let entries = holders_of(&mut presence, user);
        entries.retain(|(_, exp)| *exp > now);
        let was_online = !entries.is_empty();
        let until = now + ttl.as_millis() as u64;
        match entries.iter_mut().find(|(c, _)| &**c == conn) {
            Some((_, exp)) => *exp = until,
            None => entries.push((conn.into(), until)),
        }
        Ok(!was_online)
    }

    async fn presence_leave(&self, user: &str, conn: &str) -> Result<bool> {
        let now = self.hub.clock.now_ms();
        let mut presence = self.hub.presence.lock();
        let Some(entries) = presence.get_mut(user) else { return Ok(false) };
        entries.retain(|(c, exp)| &**c != conn && *exp > now);
        if entries.is_empty() {
            presence.remove(user);
            return Ok(true);
        }
        Ok(false)
    }

    async fn presence_renew(&self, entries: &[(String, String)], ttl: Duration) -> Result<Vec<String>> {
        let now = self.hub.clock.now_ms();
        let until = now + ttl.as_millis() as u64;
        let mut presence = self.hub.presence.lock();
        let mut back = Vec::new();
        for (user, conn) in entries {
            let listed = presence.contains_key(user.as_str());
            let held = holders_of(&mut presence, user);
            if !listed && !back.contains(user) {
                back.push(user.clone());
            }
            match held.iter_mut().find(|(c, _)| &**c == conn) {
                Some((_, exp)) => *exp = until,
                None => held.push((conn.as_str().into(), until)),
            }
        }
        Ok(back)
    }

    async fn presence_online(&self, users: &[String]) -> Result<Vec<bool>> {
        let now = self.hub.clock.now_ms();
        let presence = self.hub.presence.lock();
        Ok(users
            .iter()
            .map(|u| presence.get(u.as_str()).is_some_and(|e| e.iter().any(|(_, exp)| *exp > now)))
            .collect())
    }

    async fn presence_expired(&self, limit: usize) -> Result<Vec<String>> {
        let now = self.hub.clock.now_ms();
        let mut presence = self.hub.presence.lock();
        let gone: Vec<String> = presence
            .iter()
            .filter(|(_, entries)| entries.iter().all(|(_, exp)| *exp <= now))
            .map(|(user, _)| user.to_string())
            .take(limit)
            .collect();
        for user in &gone {
            presence.remove(user.as_str());
        }
        Ok(gone)
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    fn now_ms(&self) -> u64 {
        self.hub.clock.now_ms()
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[tokio::test]
    async fn expired_keys_are_dropped_by_later_writes_even_if_never_read() {
        let clock = Arc::new(crate::clock::OffsetClock::default());
        let hub = MemoryHub::with_clock(clock.clone());
        struct Nobody;
        impl DeliverySink for Nobody {
            fn deliver(&self, _: &str, _: Bytes) {}
        }
        let broker = hub.node(Arc::new(Nobody));
        for i in 0..3000 {
            broker.set(&format!("short:{i}"), Bytes::from_static(b"x"), Some(Duration::from_secs(1))).await.unwrap();
        }
        clock.advance(2_000);
        // A sweep is due within half the map's size in writes (here at most 6,000 keys).
        for i in 0..3000 {
            broker.set(&format!("long:{i}"), Bytes::from_static(b"x"), None).await.unwrap();
        }
        let keys = hub.inner.keys.lock();
        assert!(keys.values.keys().all(|k| k.starts_with("long:")), "{} keys left", keys.values.len());
    }
}
