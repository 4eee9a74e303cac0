//! Local fan-out: the node's [`DeliverySink`]. Each event from the broker is decoded once,
//! encoded at most once per dialect, and the same `Bytes` are queued to every local
//! connection that wants it.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_broker::DeliverySink;
use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::{DialectKind, Event};

use crate::connection::SendOutcome;
use crate::endpoint::EndpointRuntime;
use crate::metrics::Metrics;
use crate::registry::TopicRegistry;

/// Receives broker messages and fans them out to local connections.
pub struct Dispatcher {
    registry: Arc<TopicRegistry>,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// A dispatcher over the node's registry.
    pub fn new(registry: Arc<TopicRegistry>, metrics: Arc<Metrics>) -> Self {
        Dispatcher { registry, metrics }
    }

    /// Fans one decoded event out to the subscribers of `topic`; returns how many got it.
    pub fn fan_out(&self, topic: &str, event: &Event) -> usize {
        let mut frames: [Option<Bytes>; DialectKind::COUNT] = Default::default();
        let mut payload = None;
        let mut delivered = 0;
        // Subscribers of a topic mostly share one endpoint: remember its verdict on the type.
        let mut endpoint_verdict: Option<(*const EndpointRuntime, bool)> = None;
        let sid = crate::persistence::parse_sid(event.sid.as_deref());
        self.registry.for_each(topic, |conn| {
            let ep: *const EndpointRuntime = Arc::as_ptr(&conn.endpoint);
            let allowed = match endpoint_verdict {
                Some((p, v)) if p == ep => v,
                _ => {
                    let v = conn.endpoint.allows_type(&event.kind);
                    endpoint_verdict = Some((ep, v));
                    v
                }
            };
            if !allowed || conn.is_closing() || !conn.selects(event, &mut payload) {
                return;
            }
            let codec = conn.endpoint.codec;
            let frame = frames[codec.kind().index()].get_or_insert_with(|| codec.encode_event(event, false));
            match conn.send_event(frame.clone(), sid) {
                SendOutcome::Queued => delivered += 1,
                SendOutcome::SlowConsumer => self.metrics.slow_consumer_closes.inc(),
                SendOutcome::Gone | SendOutcome::Duplicate => {}
            }
        });
        delivered
    }
}

impl DeliverySink for Dispatcher {
    fn deliver(&self, topic: &str, message: Bytes) {
        self.metrics.events_in.inc();
        let event: Event = match serde_json::from_slice(&message) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(topic, error = %e, "dropping malformed event from the broker");
                return;
            }
        };
        let n = self.fan_out(topic, &event);
        self.metrics.deliveries.inc_by(n as u64);
        self.metrics.fanout_size.observe(n as f64);
        self.metrics.publish_to_dispatch.observe(now_millis().saturating_sub(event.ts) as f64 / 1000.0);
    }
}
