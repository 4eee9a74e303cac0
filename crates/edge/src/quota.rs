//! Cluster-wide connection quotas: per user per endpoint, per user in total, per API key.
//!
//! Each open connection holds a slot (a lease in the broker, taken atomically against the
//! limit, so concurrent connects on different nodes never overshoot). This node renews its
//! slots every third of the lease time; if the node dies its slots simply expire, which bounds
//! how long a crashed node keeps users locked out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use parking_lot::Mutex;
use switchboard_broker::{BrokerError, LeaseRequest, SharedBroker};
use switchboard_protocol::keyspace::{api_key_quota, token_quota, user_quota, user_quota_total};
use tokio::sync::oneshot;

use crate::auth::Principal;
use crate::endpoint::EndpointRuntime;
use crate::metrics::Metrics;

/// Quota keys renewed concurrently (pipelined on the broker connection).
pub const RENEWALS_IN_FLIGHT: usize = 64;
/// Admission calls in flight at once; connects arriving while all are out wait and go
/// together in the next. More than one, so a storm's batches overlap instead of each waiting
/// for the one before it to come back and be scheduled.
const ADMISSIONS_IN_FLIGHT: usize = 4;
/// Most admissions in one broker call: a storm's thousands of connects become several calls,
/// so one script run never holds Redis (which runs one command at a time) for long.
const ADMISSIONS_PER_CALL: usize = 64;
/// Connections whose slots are renewed between two yields to the rest of the node.
const RENEWAL_SLICE: usize = 256;

/// One quota a connection must fit in: a broker key and its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSlot {
    /// Lease key (`quota:{alice}:/ws/notifications`, see [`switchboard_protocol::keyspace`]).
    pub key: String,
    /// Most concurrent holders.
    pub limit: u32,
}

/// The quotas a connection must fit in, kept as what their keys are made of (its principal,
/// its endpoint) rather than as key strings: a node holds one of these per open connection,
/// and the strings would be ~150 bytes of it. The keys are made again for each renewal and for
/// the release, a few times a minute.
#[derive(Clone)]
pub struct ConnQuotas {
    principal: Arc<Principal>,
    endpoint: Arc<EndpointRuntime>,
    total_per_user: u32,
}

impl ConnQuotas {
    /// The quotas of a connection of `principal` to `endpoint` (`total_per_user`: the user's
    /// limit across all endpoints, 0 for none).
    pub fn new(principal: Arc<Principal>, endpoint: Arc<EndpointRuntime>, total_per_user: u32) -> Self {
        ConnQuotas { principal, endpoint, total_per_user }
    }

    /// Each quota's key and limit, in a fixed order: the user's on this endpoint and across
    /// all, and the token's; or the API key's. All of one principal's keys share a hash tag,
    /// so they are taken in one atomic call on a Redis Cluster.
    pub fn slots(&self) -> Vec<QuotaSlot> {
        let limits = self.endpoint.limits();
        let mut slots = Vec::new();
        match &*self.principal {
            Principal::User(claims) => {
                let per_endpoint = limits.max_connections_per_user;
                if per_endpoint > 0 {
                    slots.push(QuotaSlot { key: user_quota(&claims.sub, self.endpoint.path()), limit: per_endpoint });
                }
                if self.total_per_user > 0 {
                    slots.push(QuotaSlot { key: user_quota_total(&claims.sub), limit: self.total_per_user });
                }
                let per_token = limits.max_connections_per_token;
                if let (true, Some(digest)) = (per_token > 0, claims.token_digest) {
                    slots.push(QuotaSlot { key: token_quota(&claims.sub, &hex::encode(digest)), limit: per_token });
                }
            }
            Principal::ApiKey(key) => {
                slots.push(QuotaSlot { key: api_key_quota(&key.name), limit: key.max_connections });
            }
        }
        slots
    }
}

/// The slots this node holds, and their renewal. A holder is a connection, named in the broker
/// as `{node id}:{connection id}` so it is unique across the cluster; the keeper stores only
/// the connection id and the connection's shared slot list, which keeps it to a few dozen
/// bytes per connection.
///
/// Admissions are group-committed: while [`ADMISSIONS_IN_FLIGHT`] broker calls are out, the
/// connects that arrive queue up, and the next call takes all of them (one script call on a
/// Redis server, however many connects a storm brings at once). A lone connect goes at once.
pub struct QuotaKeeper {
    broker: SharedBroker,
    lease: Duration,
    node_id: String,
    /// Connection id -> its quotas (cheap to clone, so a renewal takes a snapshot).
    held: Mutex<HashMap<u64, ConnQuotas>>,
    /// Admissions waiting for the next broker call.
    waiting: Mutex<Vec<Waiting>>,
    /// A permit per broker call in flight for waiting admissions.
    committing: tokio::sync::Semaphore,
}

/// An admission waiting to be sent, and where its answer goes.
struct Waiting {
    request: LeaseRequest,
    answer: oneshot::Sender<Result<bool, String>>,
}

impl QuotaKeeper {
    /// A keeper for node `node_id` whose slots live `lease` unless renewed.
    pub fn new(broker: SharedBroker, lease: Duration, node_id: String) -> Self {
        QuotaKeeper {
            broker,
            lease,
            node_id,
            held: Mutex::default(),
            waiting: Mutex::default(),
            committing: tokio::sync::Semaphore::new(ADMISSIONS_IN_FLIGHT),
        }
    }

    fn holder(&self, conn_id: u64) -> String {
        format!("{}:{conn_id}", self.node_id)
    }

    /// Takes every slot for connection `conn_id`, or none, in one atomic broker call (the
    /// slots of one connection are keyed by one principal and hash-tagged to one Redis Cluster
    /// slot). False when a quota is full.
    pub async fn admit(&self, quotas: ConnQuotas, conn_id: u64) -> Result<bool, BrokerError> {
        let slots = quotas.slots();
        if slots.is_empty() {
            return Ok(true);
        }
        let request =
            LeaseRequest { slots: slots.into_iter().map(|s| (s.key, s.limit)).collect(), holder: self.holder(conn_id) };
        let (answer, answered) = oneshot::channel();
        self.waiting.lock().push(Waiting { request, answer });
        self.commit_waiting().await;
        match answered.await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Ok(false),
            Ok(Err(e)) => return Err(BrokerError::Unavailable(e)),
            Err(_) => return Err(BrokerError::Unavailable("the admission was dropped".into())),
        }
        self.held.lock().insert(conn_id, quotas);
        Ok(true)
    }

    /// Waits for a turn, then sends the admissions waiting by then, [`ADMISSIONS_PER_CALL`]
    /// per broker call, until none is left (ours among them, unless an earlier turn sent it),
    /// and answers each.
    async fn commit_waiting(&self) {
        let Ok(_turn) = self.committing.acquire().await else { return };
        loop {
            let batch: Vec<Waiting> = {
                let mut waiting = self.waiting.lock();
                let n = waiting.len().min(ADMISSIONS_PER_CALL);
                waiting.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let (requests, answers): (Vec<LeaseRequest>, Vec<_>) =
                batch.into_iter().map(|w| (w.request, w.answer)).unzip();
            match self.broker.try_acquire_many(&requests, self.lease).await {
                Ok(admitted) => {
                    for (answer, admitted) in answers.into_iter().zip(admitted) {
                        let _ = answer.send(Ok(admitted));
                    }
                }
                Err(e) => {
                    for answer in answers {
                        let _ = answer.send(Err(e.to_string()));
                    }
                }
            }
        }
    }

    /// Gives connection `conn_id`'s slots back (it closed); nothing to do if it holds none. The
    /// slots are released together (pipelined on the broker connection).
    pub async fn release(&self, conn_id: u64) {
        let Some(quotas) = self.held.lock().remove(&conn_id) else { return };
        let slots = quotas.slots();
        let holder = self.holder(conn_id);
        let released = futures_util::future::join_all(slots.iter().map(|slot| self.broker.release(&slot.key, &holder)));
        for (slot, outcome) in slots.iter().zip(released.await) {
            if let Err(e) = outcome {
                tracing::warn!(key = slot.key, error = %e, "could not release a quota slot; it expires on its own");
            }
        }
    }

    /// Renews every held slot: per slice of [`RENEWAL_SLICE`] connections, one broker call
    /// per quota key with all of its holders in the slice, [`RENEWALS_IN_FLIGHT`] calls at a
    /// time (Redis pipelines them on one connection), then a yield to the rest of the node (with
    /// the in-process broker every call is ready at once, and 100k of them in one go would
    /// stall deliveries). A node with hundreds of thousands of keys renews them in a fraction of
    /// the period. Returns how many calls failed.
    pub async fn renew_all(&self) -> usize {
        let snapshot: Vec<(u64, ConnQuotas)> = self.held.lock().iter().map(|(id, q)| (*id, q.clone())).collect();
        let lease = self.lease;
        let mut failed = 0;
        for conns in snapshot.chunks(RENEWAL_SLICE) {
            let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
            for (conn_id, quotas) in conns {
                for slot in quotas.slots() {
                    by_key.entry(slot.key).or_default().push(self.holder(*conn_id));
                }
            }
            failed += stream::iter(by_key)
                .map(|(key, holders)| {
                    let broker = self.broker.clone();
                    async move {
                        let outcome = broker.renew(&key, &holders, lease).await;
                        (key, outcome)
                    }
                })
                .buffer_unordered(RENEWALS_IN_FLIGHT)
                .fold(0, |failed, (key, outcome)| async move {
                    match outcome {
                        Ok(_) => failed,
                        Err(e) => {
                            tracing::warn!(key, error = %e, "could not renew quota slots");
                            failed + 1
                        }
                    }
                })
                .await;
            tokio::task::yield_now().await;
        }
        failed
    }

    /// Renews held slots every third of the lease until the process ends, recording how long
    /// each round took (it must stay well under the period) and its failed calls.
    pub fn spawn_renewal(self: &Arc<Self>, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
        let keeper = Arc::downgrade(self);
        let period = self.lease / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(keeper) = keeper.upgrade() else { return };
                let started = std::time::Instant::now();
                let failed = keeper.renew_all().await;
                metrics.quota_renewal_seconds.observe(started.elapsed().as_secs_f64());
                metrics.broker_errors.with_label_values(&["quota_renew"]).inc_by(failed as u64);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use switchboard_broker::clock::OffsetClock;
    use switchboard_broker::memory::MemoryHub;
    use switchboard_broker::DeliverySink;

    use super::*;
    use crate::auth::ApiKeyRecord;
    use crate::connection::testing::{endpoint_with, user};

    struct Nobody;
    impl DeliverySink for Nobody {
        fn deliver(&self, _: &str, _: bytes::Bytes) {}
    }

    /// The quota of user `n` on an endpoint allowing `limit` connections per user (and no other).
    fn quotas(n: u64, limit: u32) -> ConnQuotas {
        let endpoint = endpoint_with("/ws", |c| {
            c.limits.max_connections_per_user = limit;
            c.limits.max_connections_per_token = 0;
        });
        ConnQuotas::new(user(&format!("user-{n}"), None), endpoint, 0)
    }

    #[test]
    fn a_connection_s_quotas_are_made_from_its_principal_and_endpoint() {
        let endpoint = endpoint_with("/ws", |c| {
            c.limits.max_connections_per_user = 3;
            c.limits.max_connections_per_token = 2;
        });
        let digest = [0xab; 16];
        let all = ConnQuotas::new(user("alice", Some(digest)), endpoint.clone(), 10).slots();
        let expected = [
            QuotaSlot { key: user_quota("alice", "/ws"), limit: 3 },
            QuotaSlot { key: user_quota_total("alice"), limit: 10 },
            QuotaSlot { key: token_quota("alice", &hex::encode(digest)), limit: 2 },
        ];
        assert_eq!(all, expected);
        // No total configured, and a token without a digest (a ticket): the endpoint's alone.
        assert_eq!(ConnQuotas::new(user("alice", None), endpoint.clone(), 0).slots(), expected[..1]);
        let key = ApiKeyRecord { name: "ingest".into(), endpoints: Vec::new(), max_connections: 5 };
        let by_key = ConnQuotas::new(Arc::new(Principal::ApiKey(key)), endpoint, 10).slots();
        assert_eq!(by_key, [QuotaSlot { key: api_key_quota("ingest"), limit: 5 }]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_admissions_get_their_own_answers_and_never_overshoot() {
        let hub = MemoryHub::new();
        let broker: SharedBroker = Arc::new(hub.node(Arc::new(Nobody)));
        let keeper = Arc::new(QuotaKeeper::new(broker, Duration::from_secs(30), "node-a".into()));
        // Every turn taken, so the 200 connects below queue up and go in batches, users mixed.
        let turns = keeper.committing.acquire_many(ADMISSIONS_IN_FLIGHT as u32).await.expect("permits");
        // 200 connects at once over 10 users, each user allowed 3 (so 7 of each user's 20 refused).
        let admits: Vec<_> = (0..200u64)
            .map(|conn| {
                let keeper = keeper.clone();
                tokio::spawn(async move {
                    let user = conn % 10;
                    (user, conn, keeper.admit(quotas(user, 3), conn).await.expect("broker"))
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while keeper.waiting.lock().len() < 200 {
            assert!(tokio::time::Instant::now() < deadline, "the connects never all queued");
            tokio::task::yield_now().await;
        }
        drop(turns);
        let mut admitted = [0; 10];
        for outcome in futures_util::future::join_all(admits).await {
            let (user, conn, ok) = outcome.expect("task");
            if ok {
                admitted[user as usize] += 1;
                assert!(keeper.held.lock().contains_key(&conn), "an admitted connection holds its slots");
            } else {
                assert!(!keeper.held.lock().contains_key(&conn), "a refused one holds none");
            }
        }
        assert_eq!(admitted, [3; 10]);
    }

    #[tokio::test]
    async fn renewal_keeps_every_held_slot_past_its_lease_and_without_it_they_expire() {
        let clock = Arc::new(OffsetClock::default());
        let hub = MemoryHub::with_clock(clock.clone());
        let broker: SharedBroker = Arc::new(hub.node(Arc::new(Nobody)));
        let lease = Duration::from_secs(30);
        let keeper = QuotaKeeper::new(broker.clone(), lease, "node-a".into());
        let other = QuotaKeeper::new(broker, lease, "node-b".into());
        // More connections than one slice, and more keys than calls in flight.
        let users = 3 * RENEWAL_SLICE as u64 / 2;
        for user in 0..users {
            assert!(keeper.admit(quotas(user, 1), user).await.expect("broker"), "user {user} admitted");
        }
        for _ in 0..3 {
            clock.advance(20_000);
            assert_eq!(keeper.renew_all().await, 0, "no renewal failed");
        }
        // 60 s after admission, twice the lease: still held, so the limit of 1 refuses more.
        for user in 0..users {
            assert!(!other.admit(quotas(user, 1), 1).await.expect("broker"), "user {user}'s slot was renewed");
        }
        clock.advance(31_000);
        for user in 0..users {
            assert!(other.admit(quotas(user, 1), 1).await.expect("broker"), "user {user}'s slot expired unrenewed");
        }
    }
}
