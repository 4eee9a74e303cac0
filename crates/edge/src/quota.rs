//! Cluster-wide connection quotas: per user per endpoint, per user in total, per API key.
//!
//! Each open connection holds a slot (a lease in the broker, taken atomically against the
//! limit, so concurrent connects on different nodes never overshoot). This node renews its
//! slots every third of the lease time; if the node dies its slots simply expire, which bounds
//! how long a crashed node keeps users locked out.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use switchboard_broker::{BrokerError, SharedBroker};

/// One quota a connection must fit in: a broker key and its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSlot {
    /// Lease key (`quota:/ws/notifications:alice`).
    pub key: String,
    /// Most concurrent holders.
    pub limit: u32,
}

/// The slots this node holds, and their renewal. A holder is a connection, named in the broker
/// as `{node id}:{connection id}` so it is unique across the cluster; the keeper stores only
/// the connection id and the connection's shared slot list, which keeps it to a few dozen
/// bytes per connection.
pub struct QuotaKeeper {
    broker: SharedBroker,
    lease: Duration,
    node_id: String,
    /// Connection id -> its slots (shared, so a renewal takes a cheap snapshot).
    held: Mutex<HashMap<u64, Arc<[QuotaSlot]>>>,
}

impl QuotaKeeper {
    /// A keeper for node `node_id` whose slots live `lease` unless renewed.
    pub fn new(broker: SharedBroker, lease: Duration, node_id: String) -> Self {
        QuotaKeeper { broker, lease, node_id, held: Mutex::default() }
    }

    fn holder(&self, conn_id: u64) -> String {
        format!("{}:{conn_id}", self.node_id)
    }

    /// Takes every slot for connection `conn_id`, or none, in one atomic broker call (the
    /// slots of one connection are keyed by one principal and hash-tagged to one Redis Cluster
    /// slot). False when a quota is full.
    pub async fn admit(&self, slots: Vec<QuotaSlot>, conn_id: u64) -> Result<bool, BrokerError> {
        if slots.is_empty() {
            return Ok(true);
        }
        let pairs: Vec<(String, u32)> = slots.iter().map(|s| (s.key.clone(), s.limit)).collect();
        if !self.broker.try_acquire_all(&pairs, &self.holder(conn_id), self.lease).await? {
            return Ok(false);
        }
        self.held.lock().insert(conn_id, Arc::from(slots));
        Ok(true)
    }

    /// Gives connection `conn_id`'s slots back (it closed); nothing to do if it holds none.
    pub async fn release(&self, conn_id: u64) {
        let Some(slots) = self.held.lock().remove(&conn_id) else { return };
        let holder = self.holder(conn_id);
        for slot in slots.iter() {
            if let Err(e) = self.broker.release(&slot.key, &holder).await {
                tracing::warn!(key = slot.key, error = %e, "could not release a quota slot; it expires on its own");
            }
        }
    }

    /// Renews every held slot, one broker call per quota key (with all of its holders here).
    pub async fn renew_all(&self) {
        let snapshot: Vec<(u64, Arc<[QuotaSlot]>)> = self.held.lock().iter().map(|(id, s)| (*id, s.clone())).collect();
        let mut by_key: HashMap<&str, Vec<String>> = HashMap::new();
        for (conn_id, slots) in &snapshot {
            for slot in slots.iter() {
                by_key.entry(slot.key.as_str()).or_default().push(self.holder(*conn_id));
            }
        }
        for (key, holders) in by_key {
            if let Err(e) = self.broker.renew(key, &holders, self.lease).await {
                tracing::warn!(key, error = %e, "could not renew quota slots");
            }
        }
    }

    /// Renews held slots every third of the lease until the process ends.
    pub fn spawn_renewal(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let keeper = Arc::downgrade(self);
        let period = self.lease / 3;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(keeper) = keeper.upgrade() else { return };
                keeper.renew_all().await;
            }
        })
    }
}
