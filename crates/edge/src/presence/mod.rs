//! Presence of this node's users: the connections of presence-enabled endpoints hold entries
//! in the broker's [`Presence`](switchboard_broker::Presence) store, renewed here like quota
//! slots, so a crashed node's users go offline within `presence_lease`. Every node also sweeps
//! for users whose entries expired; the broker reports each such user to one sweeper only.
//!
//! Transitions (a user's first connection anywhere, their last one closing or expiring) go to
//! the [`PresenceListener`]s registered at start-up: dialects that announce presence attach a
//! [`PresenceAnnouncer`]. `GET /v1/presence/{channel}` asks [`PresenceTracker::online`].

mod announce;

pub use announce::PresenceAnnouncer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use switchboard_broker::{BrokerError, SharedBroker};

use crate::auth::Principal;
use crate::metrics::Metrics;

/// Most users reported by one expiry sweep call.
const SWEEP_BATCH: usize = 1_000;
/// Entries renewed per broker call.
const RENEW_BATCH: usize = 512;

/// Told when a user comes online or goes offline anywhere in the cluster (as seen by this
/// node: each transition is reported to one node).
pub trait PresenceListener: Send + Sync {
    /// `user` is now online (`true`) or offline.
    fn changed(&self, user: &str, online: bool);
}

/// Counts transitions in `switchboard_presence_changes_total`: every node has this listener.
pub struct PresenceCounter(pub Arc<Metrics>);

impl PresenceListener for PresenceCounter {
    fn changed(&self, _: &str, online: bool) {
        self.0.presence_changes.with_label_values(&[if online { "online" } else { "offline" }]).inc();
    }
}

/// This node's presence entries and their upkeep.
pub struct PresenceTracker {
    broker: SharedBroker,
    lease: Duration,
    node_id: String,
    /// Connection id -> its user's principal (shared with the connection, so no copy of the
    /// user id per connection), for the connections holding an entry.
    held: Mutex<HashMap<u64, Arc<Principal>>>,
    listeners: RwLock<Vec<Arc<dyn PresenceListener>>>,
}

impl PresenceTracker {
    /// A tracker for node `node_id` whose entries live `lease` unless renewed.
    pub fn new(broker: SharedBroker, lease: Duration, node_id: String) -> PresenceTracker {
        PresenceTracker { broker, lease, node_id, held: Mutex::default(), listeners: RwLock::default() }
    }

    /// Registers a listener for transitions.
    pub fn listen(&self, listener: Arc<dyn PresenceListener>) {
        self.listeners.write().push(listener);
    }

    fn notify(&self, user: &str, online: bool) {
        tracing::debug!(user, online, "presence changed");
        for listener in self.listeners.read().iter() {
            listener.changed(user, online);
        }
    }

    fn holder(&self, conn_id: u64) -> String {
        format!("{}:{conn_id}", self.node_id)
    }

    /// Connection `conn_id` of `principal` opened (nothing to record unless it is a user).
    pub async fn joined(&self, principal: &Arc<Principal>, conn_id: u64) -> Result<(), BrokerError> {
        let Some(user) = principal.user() else { return Ok(()) };
        let came_online = self.broker.presence_join(user, &self.holder(conn_id), self.lease).await?;
        self.held.lock().insert(conn_id, principal.clone());
        if came_online {
            self.notify(user, true);
        }
        Ok(())
    }

    /// Connection `conn_id` closed (nothing to do if it held no entry).
    pub async fn left(&self, conn_id: u64) {
        let Some(principal) = self.held.lock().remove(&conn_id) else { return };
        let Some(user) = principal.user() else { return };
        match self.broker.presence_leave(user, &self.holder(conn_id)).await {
            Ok(true) => self.notify(user, false),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not clear a presence entry; it expires on its own"),
        }
    }

    /// Which of `users` are online anywhere in the cluster.
    pub async fn online(&self, users: &[String]) -> Result<Vec<bool>, BrokerError> {
        self.broker.presence_online(users).await
    }

    /// Renews every entry this node holds and reports users whose expiry had been reported
    /// and who are back; returns how many broker calls failed.
    pub async fn renew_all(&self) -> usize {
        let entries: Vec<(String, String)> =
            self.held.lock().iter().filter_map(|(id, p)| Some((p.user()?.to_owned(), self.holder(*id)))).collect();
        let mut failed = 0;
        for chunk in entries.chunks(RENEW_BATCH) {
            match self.broker.presence_renew(chunk, self.lease).await {
                Ok(back) => back.iter().for_each(|user| self.notify(user, true)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not renew presence entries");
                    failed += 1;
                }
            }
            tokio::task::yield_now().await;
        }
        failed
    }

    /// Reports the users whose entries expired (their node stopped renewing).
    pub async fn sweep(&self) -> Result<(), BrokerError> {
        loop {
            let gone = self.broker.presence_expired(SWEEP_BATCH).await?;
            for user in &gone {
                self.notify(user, false);
            }
            if gone.len() < SWEEP_BATCH {
                return Ok(());
            }
        }
    }

    /// Renews and sweeps every third of the lease until the process ends.
    pub fn spawn_upkeep(self: &Arc<Self>, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
        let tracker = Arc::downgrade(self);
        let period = self.lease / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(tracker) = tracker.upgrade() else { return };
                let failed = tracker.renew_all().await;
                metrics.broker_errors.with_label_values(&["presence_renew"]).inc_by(failed as u64);
                if let Err(e) = tracker.sweep().await {
                    metrics.broker_errors.with_label_values(&["presence_sweep"]).inc();
                    tracing::warn!(error = %e, "presence sweep failed");
                }
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
    use crate::connection::testing;

    fn user(sub: &str) -> Arc<Principal> {
        testing::user(sub, None)
    }

    struct Nowhere;
    impl DeliverySink for Nowhere {
        fn deliver(&self, _: &str, _: bytes::Bytes) {}
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<(String, bool)>>);
    impl PresenceListener for Log {
        fn changed(&self, user: &str, online: bool) {
            self.0.lock().push((user.to_owned(), online));
        }
    }
    impl Log {
        fn take(&self) -> Vec<(String, bool)> {
            std::mem::take(&mut *self.0.lock())
        }
    }

    fn tracker(hub: &MemoryHub, node: &str) -> (Arc<PresenceTracker>, Arc<Log>) {
        let broker: SharedBroker = Arc::new(hub.node(Arc::new(Nowhere)));
        let tracker = Arc::new(PresenceTracker::new(broker, Duration::from_secs(30), node.into()));
        let log = Arc::new(Log::default());
        tracker.listen(log.clone());
        (tracker, log)
    }

    fn change(user: &str, online: bool) -> Vec<(String, bool)> {
        vec![(user.to_owned(), online)]
    }

    #[tokio::test]
    async fn a_user_is_online_from_the_first_connection_to_the_last_across_nodes() {
        let hub = MemoryHub::new();
        let (a, a_log) = tracker(&hub, "a");
        let (b, b_log) = tracker(&hub, "b");
        a.joined(&user("alice"), 1).await.expect("join");
        assert_eq!(a_log.take(), change("alice", true));
        b.joined(&user("alice"), 1).await.expect("join");
        assert!(b_log.take().is_empty(), "already online through node a");
        assert_eq!(b.online(&["alice".into(), "bob".into()]).await.expect("online"), [true, false]);
        a.left(1).await;
        assert!(a_log.take().is_empty());
        b.left(1).await;
        assert_eq!(b_log.take(), change("alice", false));
        b.left(1).await;
        assert!(b_log.take().is_empty(), "a connection leaves once");
    }

    #[tokio::test]
    async fn a_crashed_nodes_users_go_offline_within_the_lease_and_renewal_keeps_the_living() {
        let clock = Arc::new(OffsetClock::default());
        let hub = MemoryHub::with_clock(clock.clone());
        let (crashed, _) = tracker(&hub, "crashed");
        let (alive, alive_log) = tracker(&hub, "alive");
        crashed.joined(&user("carol"), 1).await.expect("join");
        alive.joined(&user("dave"), 1).await.expect("join");
        alive_log.take();
        drop(crashed);
        for _ in 0..3 {
            clock.advance(10_000);
            assert_eq!(alive.renew_all().await, 0);
            alive.sweep().await.expect("sweep");
        }
        assert_eq!(alive_log.take(), change("carol", false), "reported once, by a node that sweeps");
        assert_eq!(alive.online(&["carol".into(), "dave".into()]).await.expect("online"), [false, true]);
    }
}
