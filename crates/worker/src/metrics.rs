//! The worker's metrics, registered in the process's registry beside the edge's.

use prometheus::{IntCounter, IntGauge, Registry};

/// What a worker counts.
#[derive(Clone)]
pub struct WorkerMetrics {
    /// Events stored in users' replay logs.
    pub persisted: IntCounter,
    /// Batches that failed and will be retried (broker trouble).
    pub failed_batches: IntCounter,
    /// Ingest shards this worker owns now.
    pub shards_owned: IntGauge,
    /// Age of the oldest ingest entry this worker found waiting in its last round over its
    /// shards (0: caught up): how far behind persistence is.
    pub lag_seconds: prometheus::Gauge,
}

impl WorkerMetrics {
    /// Creates the worker's metrics and registers them in `registry` (once per process).
    pub fn register(registry: &Registry) -> WorkerMetrics {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric definition");
            // Registering twice in one registry is a programming error caught by the tests;
            // the counter still counts.
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let shards_owned =
            IntGauge::new("worker_shards_owned", "Ingest shards this worker owns").expect("valid metric definition");
        let _ = registry.register(Box::new(shards_owned.clone()));
        let lag_seconds = prometheus::Gauge::new(
            "worker_lag_seconds",
            "Age of the oldest ingest entry waiting for this worker in its last round (0: caught up)",
        )
        .expect("valid metric definition");
        let _ = registry.register(Box::new(lag_seconds.clone()));
        WorkerMetrics {
            lag_seconds,
            persisted: counter("persisted_total", "Events stored in replay logs by this process's worker"),
            failed_batches: counter("worker_failed_batches_total", "Worker batches that failed and will be retried"),
            shards_owned,
        }
    }
}
