//! A back end's event `id` as an idempotency key: the publish API stores its answer under the
//! id for the retention window, so a retry after a timeout (against any node) gets the first
//! answer back and delivers nothing again.
//!
//! A publish first claims its id (`SET NX` with a short lease, "pending"), publishes, then
//! replaces the claim with its answer. A retry that finds the answer returns it as a
//! duplicate; one that finds the claim while the first is still running is told to retry
//! (`409`); a publish that failed gives its claim up so the retry can go ahead. If the node
//! dies between publishing and storing the answer, the claim's lease runs out and a retry
//! publishes again: at least once, never silently lost. For the same reason claims and
//! answers never wait for replicas (`persistence.replicas_ack`): a failover that loses one
//! costs a repeat, never an event.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::Value;
use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_protocol::keyspace::published_id;

/// How long a claim holds while its publish runs (a publish is one or two round trips).
const PENDING_LEASE: Duration = Duration::from_secs(30);
/// The claim's value; answers are JSON objects, so they never equal it.
const PENDING: &[u8] = b"pending";

/// What a publish finds under its event id.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Nothing: this publish owns the id now and must [`PublishedIds::complete`] or
    /// [`PublishedIds::abandon`] it.
    Fresh,
    /// An earlier publish with this id answered this.
    Done(Value),
    /// An earlier publish with this id is still running.
    InProgress,
}

/// The idempotency keys of the publish API.
pub struct PublishedIds {
    broker: SharedBroker,
    window: Duration,
}

impl PublishedIds {
    /// Keys kept for `window` (the replay retention: a retry later than that publishes anew).
    pub fn new(broker: SharedBroker, window: Duration) -> PublishedIds {
        PublishedIds { broker, window }
    }

    /// Claims each id, concurrently (one round trip each, pipelined).
    pub async fn claim(&self, ids: &[&str]) -> Result<Vec<Claim>, BrokerError> {
        join_all(ids.iter().map(|id| self.claim_one(id))).await.into_iter().collect()
    }

    async fn claim_one(&self, id: &str) -> Result<Claim, BrokerError> {
        let key = published_id(id);
        if self.broker.set_if_absent_lossy(&key, Bytes::from_static(PENDING), Some(PENDING_LEASE)).await? {
            return Ok(Claim::Fresh);
        }
        Ok(match self.broker.get(&key).await? {
            Some(stored) if &stored[..] != PENDING => serde_json::from_slice(&stored)
                .map(Claim::Done)
                .map_err(|e| BrokerError::Protocol(format!("the stored answer of event id `{id}` is not JSON: {e}")))?,
            // Still pending, or gone a moment ago (its lease ran out): retrying decides.
            _ => Claim::InProgress,
        })
    }

    /// Stores the answers of published events (id, answer) for the window, in one round trip.
    pub async fn complete(&self, answers: &[(&str, &Value)]) -> Result<(), BrokerError> {
        let entries: Vec<(String, Bytes)> =
            answers.iter().map(|(id, answer)| (published_id(id), Bytes::from(answer.to_string()))).collect();
        self.broker.set_many_lossy(&entries, Some(self.window)).await
    }

    /// Gives claims up after a publish that failed, so a retry is not refused (best effort:
    /// if the broker is gone, the claims' short lease frees them).
    pub async fn abandon(&self, ids: &[&str]) {
        for id in ids {
            if let Err(e) = self.broker.delete_lossy(&published_id(id)).await {
                tracing::debug!(error = %e, id, "could not release a publish claim; its lease will");
                return;
            }
        }
    }
}
