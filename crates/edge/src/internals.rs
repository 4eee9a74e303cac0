//! The node's insides, for the micro-benchmarks in `benches/` only (feature `internals`, which
//! the crate's own dev-dependency turns on). Not an API: anything here may change.

pub use crate::connection::{ConnHandle, Discard, Subscriptions};
pub use crate::endpoint::EndpointRuntime;
pub use crate::fanout::{Dispatcher, TopicRegistry};
pub use crate::metrics::Metrics;
