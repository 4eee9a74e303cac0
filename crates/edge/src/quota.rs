//! Cluster-wide connection quotas: per user per endpoint, per user in total, per API key.
//!
//! Each open connection holds a slot (a lease in the broker, taken atomically against the
//! limit, so concurrent connects on different nodes never overshoot). This node renews its
//! slots every third of the lease time; if the node dies its slots simply expire, which bounds
//! how long a crashed node keeps users locked out.

use std::collections::{HashMap, HashSet};
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

/// The slots this node holds, and their renewal.
pub struct QuotaKeeper {
    broker: SharedBroker,
    lease: Duration,
    held: Mutex<HashMap<String, HashSet<String>>>,
}

impl QuotaKeeper {
    /// A keeper whose slots live `lease` unless renewed.
    pub fn new(broker: SharedBroker, lease: Duration) -> Self {
        QuotaKeeper { broker, lease, held: Mutex::default() }
    }

    /// Takes every slot for `holder`, or none, in one atomic broker call (the slots of one
    /// connection are keyed by one principal and hash-tagged to one Redis Cluster slot).
    pub async fn admit(&self, slots: &[QuotaSlot], holder: &str) -> Result<bool, BrokerError> {
        let pairs: Vec<(String, u32)> = slots.iter().map(|s| (s.key.clone(), s.limit)).collect();
        if !self.broker.try_acquire_all(&pairs, holder, self.lease).await? {
            return Ok(false);
        }
        let mut held = self.held.lock();
        for slot in slots {
            held.entry(slot.key.clone()).or_default().insert(holder.to_owned());
        }
        Ok(true)
    }

    /// Gives the slots back (the connection closed).
    pub async fn release(&self, slots: &[QuotaSlot], holder: &str) {
        {
            let mut held = self.held.lock();
            for slot in slots {
                if let Some(h) = held.get_mut(&slot.key) {
                    h.remove(holder);
                    if h.is_empty() {
                        held.remove(&slot.key);
                    }
                }
            }
        }
        for slot in slots {
            if let Err(e) = self.broker.release(&slot.key, holder).await {
                tracing::warn!(key = slot.key, error = %e, "could not release a quota slot; it expires on its own");
            }
        }
    }

    /// Renews every held slot, one broker call per quota key.
    pub async fn renew_all(&self) {
        let snapshot: Vec<(String, Vec<String>)> =
            self.held.lock().iter().map(|(k, h)| (k.clone(), h.iter().cloned().collect())).collect();
        for (key, holders) in snapshot {
            if let Err(e) = self.broker.renew(&key, &holders, self.lease).await {
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
