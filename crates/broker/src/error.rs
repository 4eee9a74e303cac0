//! The broker crate's error type.

/// What went wrong talking to shared state.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached right now; the caller should report "unavailable" (503)
    /// rather than pretend success.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answered with something this code did not expect.
    #[error("unexpected broker reply: {0}")]
    Protocol(String),
    /// A write the caller wanted on `wanted` replicas before its acknowledgement reached only
    /// `acked` of them in time. It is on the master and may still be kept (or lost in a
    /// failover): its outcome is unknown, and a retry with the same id is safe.
    #[error("written, but acknowledged by {acked} of the {wanted} replicas asked for in time")]
    NotReplicated {
        /// Replicas that acknowledged the write.
        acked: u32,
        /// Replicas asked for (`persistence.replicas_ack`).
        wanted: u32,
    },
    /// The broker is reachable but is not what the settings say (a Redis Cluster node given
    /// as a single server): starting would fail every other call, so the node does not start.
    #[error("Redis is not what the settings say: {0}")]
    Misconfigured(String),
}

impl BrokerError {
    /// Whether trying again later may succeed (Redis unreachable or answering oddly for now),
    /// as opposed to settings that can never work.
    pub fn is_transient(&self) -> bool {
        !matches!(self, BrokerError::Misconfigured(_))
    }
}
