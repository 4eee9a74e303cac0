//! The wake signal: edges publish an empty message on
//! [`INGEST_WAKE_TOPIC`](switchboard_protocol::keyspace::INGEST_WAKE_TOPIC) after appending to the
//! ingest log, so workers in other processes start at once instead of at their next poll.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_broker::DeliverySink;
use switchboard_protocol::keyspace::INGEST_WAKE_TOPIC;
use tokio::sync::Notify;

/// The broker sink of a worker-only process: wake-ups notify the worker, nothing else is
/// subscribed.
pub struct WakeSink(pub Arc<Notify>);

impl DeliverySink for WakeSink {
    fn deliver(&self, topic: &str, _: Bytes) {
        if topic == INGEST_WAKE_TOPIC {
            self.0.notify_one();
        }
    }
}
