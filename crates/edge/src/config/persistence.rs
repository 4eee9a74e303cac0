//! The `[persistence]` section: which events are kept for replay, and how the workers run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration_str;

/// Which events are kept for replay, and how the persistence worker runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    /// User-addressed events of these types are persisted unless the publisher says
    /// `"persist": false`; other events only if it says `"persist": true`.
    #[serde(default = "default_persist_types")]
    pub types: Vec<String>,
    /// How long a user's events are kept for replay.
    #[serde(default = "default_retention", with = "duration_str")]
    pub retention: Duration,
    /// Most events replayed on one reconnect.
    #[serde(default = "default_replay_limit")]
    pub replay_limit: usize,
    /// Ingest log shards; each is processed by one worker at a time, in order.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// A dead worker's shards are taken over within this time.
    #[serde(default = "default_worker_lease", with = "duration_str")]
    pub worker_lease: Duration,
    /// The longest a worker's blocking read of its shards waits (it returns the moment an edge
    /// appends) before the worker looks round anyway; leases are renewed every third of
    /// `worker_lease` regardless.
    #[serde(default = "default_idle_poll", with = "duration_str")]
    pub idle_poll: Duration,
    /// Replicas that must have a persistent event before `POST /v1/publish` acknowledges it
    /// (`WAIT`; 0: the master's answer is enough), and any other write the API acknowledges
    /// (tickets taken, revocations, keys, members). With 1 or more a failover to a replica
    /// loses no acknowledged event; a publish whose replicas do not answer within
    /// `ack_timeout` gets `503 not_replicated` (it may still appear; retrying with the same
    /// `id` is safe).
    #[serde(default)]
    pub replicas_ack: u32,
    /// How long an acknowledgement waits for `replicas_ack` replicas.
    #[serde(default = "default_ack_timeout", with = "duration_str")]
    pub ack_timeout: Duration,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            types: default_persist_types(),
            retention: default_retention(),
            replay_limit: default_replay_limit(),
            shards: default_shards(),
            worker_lease: default_worker_lease(),
            idle_poll: default_idle_poll(),
            replicas_ack: 0,
            ack_timeout: default_ack_timeout(),
        }
    }
}

impl PersistenceConfig {
    /// The settings of a worker named `holder`.
    pub fn worker_settings(&self, holder: String) -> switchboard_worker::Settings {
        switchboard_worker::Settings {
            shards: self.shards,
            retention: self.retention,
            replay_limit: self.replay_limit,
            lease: self.worker_lease,
            idle_poll: self.idle_poll,
            holder,
        }
    }

    pub(super) fn problems(&self, problems: &mut Vec<String>) {
        if self.shards == 0 || self.shards > 1024 {
            problems.push("persistence.shards: must be between 1 and 1024".to_string());
        }
        if self.replay_limit == 0 || self.replay_limit > 10_000 {
            problems.push("persistence.replay_limit: must be between 1 and 10000".to_string());
        }
        if self.worker_lease < Duration::from_secs(1) {
            problems.push("persistence.worker_lease: must be at least 1s".to_string());
        }
        if self.idle_poll < Duration::from_millis(1) {
            problems.push("persistence.idle_poll: must be at least 1ms".to_string());
        }
        if self.retention < Duration::from_secs(1) {
            problems.push("persistence.retention: must be at least 1s".to_string());
        }
        if self.replicas_ack > 16 {
            problems.push("persistence.replicas_ack: at most 16".to_string());
        }
        if self.ack_timeout < Duration::from_millis(1) || self.ack_timeout > Duration::from_secs(10) {
            problems.push("persistence.ack_timeout: must be between 1ms and 10s".to_string());
        }
    }
}

fn default_persist_types() -> Vec<String> {
    ["notification", "subscription_update", "device_status", "server_alert"].map(String::from).to_vec()
}
fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_replay_limit() -> usize {
    100
}
fn default_shards() -> u32 {
    4
}
fn default_worker_lease() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_ack_timeout() -> Duration {
    Duration::from_millis(100)
}
