//! The broker: everything an edge or a worker shares with the rest of the cluster.
//!
//! Edges and workers never talk to each other directly; they reach shared state only through
//! the [`Broker`] trait: topic pub/sub for fan-out, append-only logs for ingest and replay,
//! keys with a TTL (tickets, API keys, cursors), sets (channel membership) and counted leases
//! (cluster-wide connection quotas). [`memory::MemoryHub`] implements it in-process for
//! `switchboard serve`; the Redis implementation plugs in behind the same trait, and both run
//! the same behavioural suite ([`conformance`]).
//!
//! Every call is async and fallible (a network broker can be unreachable) and the calls that
//! usually come in groups take slices, so a network implementation can pipeline them.

pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
mod error;
mod expiring;
pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use clock::{Clock, SystemClock};
pub use error::BrokerError;

/// Result of every broker call.
pub type Result<T> = std::result::Result<T, BrokerError>;

/// Receives the messages published to topics this node subscribed to.
///
/// Called from the broker's delivery context (the publishing task in memory, the subscriber
/// connection's task on Redis); implementations must not block: they hand the bytes on to
/// bounded per-connection queues.
pub trait DeliverySink: Send + Sync + 'static {
    /// One message published on `topic`.
    fn deliver(&self, topic: &str, message: Bytes);

    /// Every topic this node wants is subscribed again after its subscriptions were (or may
    /// have been) lost: messages published meanwhile did not reach the node. Pub/sub is at
    /// most once, so those are gone; what was also kept in a log can be read from it now.
    /// Called again after each later confirmation while a cluster's topology settles.
    fn subscriptions_restored(&self) {}
}

/// A topic's name, shared: a node's registry, its broker subscription and each subscribed
/// connection hold the same string (a per-user topic is held per connection, so copies would
/// cost a few dozen bytes each, several times over).
pub type Topic = Arc<str>;

/// Topic pub/sub: at-most-once, per-node subscriptions.
#[async_trait]
pub trait PubSub: Send + Sync {
    /// Publishes one message to every node subscribed to `topic`.
    async fn publish(&self, topic: &str, message: Bytes) -> Result<()>;

    /// Publishes several messages, in order, in one round trip where the broker allows.
    async fn publish_many(&self, messages: &[(String, Bytes)]) -> Result<()>;

    /// Subscribes this node to the topics (idempotent): their messages reach the node's sink.
    async fn subscribe(&self, topics: &[Topic]) -> Result<()>;

    /// Unsubscribes this node from the topics (idempotent).
    async fn unsubscribe(&self, topics: &[Topic]) -> Result<()>;
}

/// Keys with optional TTL, and sets of strings.
#[async_trait]
pub trait KeyValue: Send + Sync {
    /// Stores `value` under `key`, replacing any previous value.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()>;

    /// [`KeyValue::set`] for many keys, in one round trip where the broker allows.
    async fn set_many(&self, entries: &[(String, Bytes)], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in entries {
            self.set(key, value.clone(), ttl).await?;
        }
        Ok(())
    }

    /// Stores `value` under `key` only if the key does not exist, expiring after `ttl` (or
    /// never); true if it was stored. Throttles ("at most one per interval") and unique
    /// names are built on it.
    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool>;

    /// Increments a counter that disappears `window` after its first increment; returns the
    /// new count. Fixed-window rate limits are built on it.
    async fn incr_in_window(&self, key: &str, window: Duration) -> Result<u64>;

    /// Reads a key.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Reads and deletes a key atomically: of concurrent callers exactly one gets the value
    /// (single-use tickets).
    async fn take(&self, key: &str) -> Result<Option<Bytes>>;

    /// Deletes a key; true if it existed.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Adds a member to a set; true if it was not there.
    async fn set_add(&self, key: &str, member: &str) -> Result<bool>;

    /// Removes a member from a set; true if it was there.
    async fn set_remove(&self, key: &str, member: &str) -> Result<bool>;

    /// [`KeyValue::set`] for state whose loss in a failover costs nothing but a repeat (a
    /// saved replay position, a publish's stored answer): it never waits for replicas
    /// (`persistence.replicas_ack`), which only the writes acknowledged to someone need.
    async fn set_lossy(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.set(key, value, ttl).await
    }

    /// [`KeyValue::set_many`] that may be lost in a failover, as [`KeyValue::set_lossy`].
    async fn set_many_lossy(&self, entries: &[(String, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.set_many(entries, ttl).await
    }

    /// [`KeyValue::set_if_absent`] that may be lost in a failover (a throttle, a publish's
    /// claim on its id), as [`KeyValue::set_lossy`].
    async fn set_if_absent_lossy(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        self.set_if_absent(key, value, ttl).await
    }

    /// [`KeyValue::delete`] that may be lost in a failover, as [`KeyValue::set_lossy`].
    async fn delete_lossy(&self, key: &str) -> Result<bool> {
        self.delete(key).await
    }

    /// Whether `member` is in the set.
    async fn set_contains(&self, key: &str, member: &str) -> Result<bool>;

    /// All members of a set, in no particular order.
    async fn set_members(&self, key: &str) -> Result<Vec<String>>;
}

/// Position of an entry in a log: `<unix ms>-<sequence>`, ordered, as Redis stream IDs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl LogId {
    /// Parses `ms-seq` (or a bare `ms`, meaning `ms-0`).
    pub fn parse(s: &str) -> Option<LogId> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(LogId { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Append-only logs with time-based retention (the ingest log and per-user replay logs).
#[async_trait]
pub trait Log: Send + Sync {
    /// Appends an entry and drops entries older than `retention`; returns the new entry's id.
    async fn append(&self, log: &str, entry: Bytes, retention: Duration) -> Result<LogId>;

    /// [`Log::append`] for many entries, in order, in one round trip where the broker allows;
    /// returns their ids in the same order.
    async fn append_many(&self, entries: &[(String, Bytes)], retention: Duration) -> Result<Vec<LogId>> {
        let mut ids = Vec::with_capacity(entries.len());
        for (log, entry) in entries {
            ids.push(self.append(log, entry.clone(), retention).await?);
        }
        Ok(ids)
    }

    /// Appends an entry under a given id (the id it has in another log), unless the log
    /// already holds an entry with that id or a later one: true if appended. Copying entries
    /// from log to log this way is idempotent, so a crashed copier can simply start over.
    /// Besides entries older than `retention`, all but the newest `max_entries` are dropped
    /// (a replay log need hold no more than one replay can send, plus one to tell that more
    /// were missed), so a busy user's log stays small however many events they get.
    async fn append_with_id(
        &self,
        log: &str,
        id: LogId,
        entry: Bytes,
        retention: Duration,
        max_entries: usize,
    ) -> Result<bool>;

    /// [`Log::append_with_id`] for many entries (each skipped if already there), in one round
    /// trip where the broker allows.
    async fn append_with_id_many(
        &self,
        entries: &[(String, LogId, Bytes)],
        retention: Duration,
        max_entries: usize,
    ) -> Result<()> {
        for (log, id, entry) in entries {
            self.append_with_id(log, *id, entry.clone(), retention, max_entries).await?;
        }
        Ok(())
    }

    /// Up to `limit` entries with id greater than `after` (all if `None`), oldest first.
    async fn read_after(&self, log: &str, after: Option<LogId>, limit: usize) -> Result<Vec<(LogId, Bytes)>>;

    /// [`Log::read_after`] of several logs at once: each log's entries after its cursor, in the
    /// order given. When none has any, waits up to `wait` for an append to one of them (a
    /// blocking read: on Redis an `XREAD BLOCK` on a connection of its own, so it holds up no
    /// other command), then returns what is there (possibly nothing). Workers read their ingest
    /// shards with it instead of polling them. One caller at a time per broker handle.
    async fn read_after_many(
        &self,
        reads: &[(String, Option<LogId>)],
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<(LogId, Bytes)>>>;

    /// Drops the entries with id `through` or older (the ones a consumer is done with); later
    /// appends still get ids after the newest entry ever appended.
    async fn trim_through(&self, log: &str, through: LogId) -> Result<()>;

    /// The newest `limit` entries with id greater than `after`, oldest first, and whether
    /// older ones after `after` were left out.
    async fn read_last_after(
        &self,
        log: &str,
        after: Option<LogId>,
        limit: usize,
    ) -> Result<(Vec<(LogId, Bytes)>, bool)>;

    /// The id of each log's newest entry (`None` for an empty or missing log), in the order
    /// given, in one round trip where the broker allows: what a worker stamps as the position
    /// before the next entry it copies into a user's log.
    async fn newest_ids(&self, logs: &[String]) -> Result<Vec<Option<LogId>>> {
        let mut newest = Vec::with_capacity(logs.len());
        for log in logs {
            let (last, _) = self.read_last_after(log, None, 1).await?;
            newest.push(last.first().map(|(id, _)| *id));
        }
        Ok(newest)
    }
}

/// One holder's request for a slot in each of several counted leases (see
/// [`Leases::try_acquire_many`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// `(key, limit)` pairs, all taken or none; on a Redis Cluster in one hash slot.
    pub slots: Vec<(String, u32)>,
    /// Who takes them.
    pub holder: String,
}

/// What a fenced commit is made under (see [`Leases::commit_fenced`]).
#[derive(Debug, Clone, Copy)]
pub struct Fenced<'a> {
    /// The single-holder lease.
    pub lease: &'a str,
    /// Where the lease's fencing token is kept.
    pub fence: &'a str,
    /// Who committed: must still hold the lease.
    pub holder: &'a str,
    /// The token the holder got when it took the lease: must still be the newest.
    pub token: u64,
}

/// Counted leases: at most `limit` holders per key, each expiring unless renewed. Backs the
/// cluster-wide connection quotas: a crashed node's holders expire on their own.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes a slot for `holder` if fewer than `limit` live holders exist; atomic across nodes.
    async fn try_acquire(&self, key: &str, holder: &str, limit: u32, ttl: Duration) -> Result<bool>;

    /// Takes a slot in every `(key, limit)` for `holder`, or in none: atomic across nodes.
    /// On a Redis Cluster the keys must share a hash slot (hash-tag them).
    async fn try_acquire_all(&self, slots: &[(String, u32)], holder: &str, ttl: Duration) -> Result<bool>;

    /// [`Leases::try_acquire_all`] for several requests at once, taken in order (a later
    /// request sees the slots an earlier one took): the admissions of concurrent connects in
    /// one broker call where the broker allows. One answer per request.
    async fn try_acquire_many(&self, requests: &[LeaseRequest], ttl: Duration) -> Result<Vec<bool>> {
        let mut admitted = Vec::with_capacity(requests.len());
        for request in requests {
            admitted.push(self.try_acquire_all(&request.slots, &request.holder, ttl).await?);
        }
        Ok(admitted)
    }

    /// Extends the holders' leases; returns how many were still held.
    async fn renew(&self, key: &str, holders: &[String], ttl: Duration) -> Result<usize>;

    /// Releases a slot; true if it was held.
    async fn release(&self, key: &str, holder: &str) -> Result<bool>;

    /// The live holders of `key`, sorted (for looking inside: whose connections hold a quota).
    async fn holders(&self, key: &str) -> Result<Vec<String>>;

    /// Takes the single-holder lease `key` for `holder` and returns its fencing token: a
    /// number kept in `fence` that grows with every acquisition by a new holder (a holder that
    /// still holds the lease gets its token back). `None` when another holder has it.
    async fn acquire_fenced(&self, key: &str, fence: &str, holder: &str, ttl: Duration) -> Result<Option<u64>>;

    /// A fenced commit of a consumer's progress: if `fenced.token` is still the newest token in
    /// `fenced.fence` and `fenced.holder` still holds `fenced.lease`, moves `cursor` to
    /// `position` (never backwards) and trims `log` through it; false, with nothing written,
    /// when the lease was taken over or lapsed since. A holder that stalled past its lease
    /// cannot move the cursor back, even when a failover lost the token's increment and the
    /// next holder was handed the same token again. The keys must share a Redis Cluster hash
    /// tag.
    async fn commit_fenced(&self, fenced: &Fenced<'_>, cursor: &str, log: &str, position: LogId) -> Result<bool>;
}

/// Who is online: a user is online while at least one of their connections, anywhere in the
/// cluster, holds a live presence entry. The node holding a connection renews its entry; a
/// crashed node's entries expire, and [`Presence::presence_expired`] reports each user whose
/// last entry ran out to exactly one caller, so the "offline" transition is announced once.
#[async_trait]
pub trait Presence: Send + Sync {
    /// Marks connection `conn` of `user` present for `ttl`; true when the user had no live
    /// connection before (they came online).
    async fn presence_join(&self, user: &str, conn: &str, ttl: Duration) -> Result<bool>;

    /// Removes the connection's entry; true when the user has no live connection left and
    /// their going offline has not been reported yet (by an expiry sweep).
    async fn presence_leave(&self, user: &str, conn: &str) -> Result<bool>;

    /// Extends the entries of these `(user, connection)` pairs to `ttl` from now (entries that
    /// expired meanwhile are made again); returns the users that had been reported offline and
    /// are online again.
    async fn presence_renew(&self, entries: &[(String, String)], ttl: Duration) -> Result<Vec<String>>;

    /// Which of `users` are online, in the same order.
    async fn presence_online(&self, users: &[String]) -> Result<Vec<bool>>;

    /// Users whose last entry expired without a leave (their node stopped renewing), at most
    /// `limit`; each is reported to one caller only.
    async fn presence_expired(&self, limit: usize) -> Result<Vec<String>>;
}

/// What a node knows of its broker's health beyond "it answers": `/readyz` says the node is
/// not ready while any part is false, and the metrics report each part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerHealth {
    /// The last look at the broker (the probe's, every second) got an answer.
    pub reachable: bool,
    /// Every topic the node wants is confirmed subscribed (a node whose subscriptions were
    /// lost delivers nothing, though its commands may work).
    pub subscribed: bool,
    /// Times the subscriptions were lost since the node started.
    pub subscription_losses: u64,
    /// The node's own probe message came back through its subscriptions lately: delivery
    /// works end to end.
    pub delivering: bool,
    /// The server the node writes to says it is a master (not a replica, not a demoted
    /// master that still answers).
    pub writable: bool,
    /// Times the node followed its master to another server (Sentinel failovers).
    pub failovers: u64,
}

impl BrokerHealth {
    /// Everything in order, as in process.
    pub const HEALTHY: BrokerHealth = BrokerHealth {
        reachable: true,
        subscribed: true,
        subscription_losses: 0,
        delivering: true,
        writable: true,
        failovers: 0,
    };
}

/// Everything a node needs from shared state, behind one object.
#[async_trait]
pub trait Broker: PubSub + KeyValue + Log + Leases + Presence {
    /// A worker's stored batch: copies the entries into the users' logs
    /// ([`Log::append_with_id_many`]), indexes their event ids ([`KeyValue::set_many`], kept for
    /// `retention`), then publishes them live ([`PubSub::publish_many`]), so a node that gets
    /// the live event finds it stored. On a single Redis server the three go out as one
    /// pipeline (one connection runs them in order; if a copy fails there, its event may have
    /// gone out live anyway, and the caller redoes the batch), on a Redis Cluster in two round
    /// trips (the publishes once every store is done).
    async fn store_and_publish(
        &self,
        copies: &[(String, LogId, Bytes)],
        index: &[(String, Bytes)],
        retention: Duration,
        max_entries: usize,
        live: &[(String, Bytes)],
    ) -> Result<()> {
        self.append_with_id_many(copies, retention, max_entries).await?;
        self.set_many(index, Some(retention)).await?;
        self.publish_many(live).await
    }

    /// Checks that the broker is reachable (`/readyz`).
    async fn ping(&self) -> Result<()>;

    /// A short name for logs and metrics (`memory`, `redis`, `redis-cluster`).
    fn name(&self) -> &'static str;

    /// The broker's health as this node sees it (see [`BrokerHealth`]). Always healthy in
    /// process.
    fn health(&self) -> BrokerHealth {
        BrokerHealth::HEALTHY
    }

    /// Now, in unix ms, by the clock log retention is measured with (injectable in the
    /// in-process broker, so tests can step past a 24 h retention).
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms()
    }
}

/// The shared handle type nodes pass around.
pub type SharedBroker = Arc<dyn Broker>;
