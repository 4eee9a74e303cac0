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
