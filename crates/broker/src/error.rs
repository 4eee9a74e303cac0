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
}
