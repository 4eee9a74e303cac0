//! The persistence worker: makes user-addressed events replayable.
//!
//! The publish API appends persistent events to a sharded ingest log and answers once the
//! broker holds them. A worker owns shards by lease and, for each entry in order, stores it in
//! the addressed user's replay log under the ingest entry's position (idempotent, so
//! reprocessing after a crash is harmless), then publishes it for live fan-out carrying that
//! position; edges use it to drop what a connection already has and to resume after a
//! reconnect.
//!
//! A worker needs only the broker and its [`Settings`]: `switchboard worker`
//! runs it without any of the edge's endpoints, verifiers or registries, and `switchboard
//! serve` runs it beside an edge.

mod metrics;
mod shard;
mod stamp;
mod tails;
mod worker;

pub use metrics::WorkerMetrics;
pub use shard::shard_for;
pub use stamp::{route, stamp, Routed, Stamped};
pub use worker::{run, Settings};
