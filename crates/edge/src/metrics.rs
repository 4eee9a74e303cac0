//! Prometheus metrics of one node, served at `/metrics`.
//!
//! Hot-path counters are bumped once per event (with the fan-out count), never once per
//! delivery, so metrics cost nothing that grows with the number of subscribers.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections by endpoint.
    pub connections: IntGaugeVec,
    /// Connection attempts by endpoint and result (`accepted`, `unauthorized`, ...).
    pub connects: IntCounterVec,
    /// TLS handshakes on the listener by result (`full`, `resumed` from a ticket, `not_tls`,
    /// `timeout`, `failed`).
    pub tls_handshakes: IntCounterVec,
    /// Closed connections by endpoint, close code and who closed (`client`, `server`,
    /// `network`: the socket went away without a close frame).
    pub disconnects: IntCounterVec,
    /// Client messages received, by endpoint.
    pub messages_in: IntCounterVec,
    /// Events handed to connection queues.
    pub deliveries: IntCounter,
    /// Events received from the broker.
    pub events_in: IntCounter,
    /// Events accepted by the publish API.
    pub published: IntCounter,
    /// Events replayed to reconnecting clients.
    pub replayed: IntCounter,
    /// Gap-fills: reads of a user's log for an open connection that may have missed persisted
    /// events live (after a subscription loss, or a gap seen in the live stream).
    pub gap_fill_reads: IntCounter,
    /// Persisted events open connections got from a gap-fill: events they had missed live.
    pub gap_filled: IntCounter,
    /// Gaps a gap-fill could not close: more was missed than the user's log keeps.
    pub gap_unrecoverable: IntCounter,
    /// Connections closed because their queue was full.
    pub slow_consumer_closes: IntCounter,
    /// Local subscribers per event.
    pub fanout_size: Histogram,
    /// Bytes of broadcasts compressed for permessage-deflate clients (once per event and
    /// dialect on this node) before compression: `deflate_bytes_total{stage="in"}`.
    pub deflate_in: IntCounter,
    /// The same after compression: `deflate_bytes_total{stage="out"}`.
    pub deflate_out: IntCounter,
    /// Time from publish (event timestamp) to hand-off to connection queues on this node.
    pub publish_to_dispatch: Histogram,
    /// Broker calls that failed, by operation.
    pub broker_errors: IntCounterVec,
    /// Topics with local subscribers.
    pub topics: IntGauge,
    /// HTTP request durations of the publish API.
    pub publish_seconds: HistogramVec,
    /// Presence transitions this node reported, by the state reached (`online`, `offline`).
    pub presence_changes: IntCounterVec,
    /// Presence announcements to channels, by result (`sent`, `failed`, `dropped` when the
    /// announcement queue was full).
    pub presence_announcements: IntCounterVec,
    /// How long renewing all of this node's quota slots took (must stay well under a third of
    /// `quota_lease`, the renewal period).
    pub quota_renewal_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are constants defined below and unique, so registration cannot collide.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("switchboard".into()), None).unwrap_or_default();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition"))
        };
        let counter =
            |name: &str, help: &str| register(&r, IntCounter::new(name, help).expect("valid metric definition"));
        let buckets = vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let deflate_bytes = counter_vec(
            "deflate_bytes_total",
            "Bytes of broadcasts compressed once per node for permessage-deflate clients, before (in) and after (out)",
            &["stage"],
        );
        let metrics = Metrics {
            connections: register(
                &r,
                IntGaugeVec::new(Opts::new("connections", "Open WebSocket connections"), &["endpoint"])
                    .expect("valid metric definition"),
            ),
            connects: counter_vec("connects_total", "Connection attempts by result", &["endpoint", "result"]),
            tls_handshakes: counter_vec(
                "tls_handshakes_total",
                "TLS handshakes on the listener by result",
                &["result"],
            ),
            disconnects: counter_vec(
                "disconnects_total",
                "Closed connections by close code and who closed",
                &["endpoint", "code", "by"],
            ),
            messages_in: counter_vec("messages_in_total", "Client messages received", &["endpoint"]),
            deliveries: counter("deliveries_total", "Events queued to connections"),
            events_in: counter("events_in_total", "Events received from the broker"),
            published: counter("published_total", "Events accepted by the publish API"),
            replayed: counter("replayed_total", "Events replayed to reconnecting clients"),
            gap_fill_reads: counter(
                "gap_fill_reads_total",
                "Reads of a user's log for an open connection that may have missed persisted events live",
            ),
            gap_filled: counter(
                "gap_filled_events_total",
                "Persisted events open connections missed live and got from the user's log",
            ),
            gap_unrecoverable: counter(
                "gap_unrecoverable_total",
                "Gaps in what open connections got that the user's log could not fill (more missed than it keeps)",
            ),
            slow_consumer_closes: counter(
                "slow_consumer_closes_total",
                "Connections closed because their outbound queue was full",
            ),
            deflate_in: deflate_bytes.with_label_values(&["in"]),
            deflate_out: deflate_bytes.with_label_values(&["out"]),
            fanout_size: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("fanout_size", "Local subscribers per event")
                        .buckets(vec![0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]),
                )
                .expect("valid metric definition"),
            ),
            publish_to_dispatch: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "publish_to_dispatch_seconds",
                        "Event timestamp to hand-off to connection queues",
                    )
                    .buckets(buckets.clone()),
                )
                .expect("valid metric definition"),
            ),
            broker_errors: counter_vec("broker_errors_total", "Failed broker calls", &["op"]),
            presence_changes: counter_vec(
                "presence_changes_total",
                "Users this node saw come online or go offline (each transition counted on one node)",
                &["to"],
            ),
            presence_announcements: counter_vec(
                "presence_announcements_total",
                "Presence transitions announced to the user's channels, by result",
                &["result"],
            ),
            topics: register(
                &r,
                IntGauge::new("topics", "Topics with local subscribers").expect("valid metric definition"),
            ),
            publish_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("publish_request_seconds", "Publish API latency").buckets(buckets),
                    &["route"],
                )
                .expect("valid metric definition"),
            ),
            quota_renewal_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("quota_renewal_seconds", "Time to renew every quota slot held by this node")
                        .buckets(vec![0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0]),
                )
                .expect("valid metric definition"),
            ),
            registry: r,
        };
        // Series with a known label set exist from the start at 0, so `rate()` and alerts see
        // the first failure instead of a series appearing out of nowhere.
        for op in
            ["subscribe", "unsubscribe", "quota_renew", "presence_renew", "presence_sweep", "presence_join", "gap_fill"]
        {
            metrics.broker_errors.with_label_values(&[op]);
        }
        metrics
    }

    /// The registry every metric of the process is in (the worker registers its own here
    /// when it runs in the same process).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Reports the broker's health and the process's readiness when `/metrics` is scraped (read
/// then, so no task has to copy them into gauges).
struct BrokerHealthCollector {
    broker: switchboard_broker::SharedBroker,
    draining: tokio_util::sync::CancellationToken,
    up: IntGauge,
    losses: IntCounter,
    failovers: IntCounter,
    ready: IntGaugeVec,
}

impl prometheus::core::Collector for BrokerHealthCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut desc = self.up.desc();
        desc.extend(self.losses.desc());
        desc.extend(self.failovers.desc());
        desc.extend(self.ready.desc());
        desc
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let health = self.broker.health();
        self.up.set(i64::from(health.subscribed));
        // The counters mirror the broker's own counts, which only grow.
        self.losses.inc_by(health.subscription_losses.saturating_sub(self.losses.get()));
        self.failovers.inc_by(health.failovers.saturating_sub(self.failovers.get()));
        let draining = self.draining.is_cancelled();
        for check in crate::readiness::Check::ALL {
            let passes = check.passes(draining, health.reachable, &health);
            self.ready.with_label_values(&[check.name()]).set(i64::from(passes));
        }
        let mut families = self.up.collect();
        families.extend(self.losses.collect());
        families.extend(self.failovers.collect());
        families.extend(self.ready.collect());
        families
    }
}

/// Registers the broker's health and the readiness checks in `registry`:
/// `broker_subscriptions_up` (1 while every topic the node wants is subscribed),
/// `broker_subscription_losses_total`, `broker_failovers_total` (a Sentinel master followed
/// to another server) and `readiness_check{check}` (1 while the check passes; `/readyz` is
/// 200 only while all do). Edges and workers both export them; `draining` is cancelled when
/// the process stops accepting.
pub fn register_broker_health(
    registry: &Registry,
    broker: switchboard_broker::SharedBroker,
    draining: tokio_util::sync::CancellationToken,
) {
    let up = IntGauge::new(
        "broker_subscriptions_up",
        "1 while every broker subscription this node wants is confirmed; 0 while lost ones are restored",
    )
    .expect("valid metric definition");
    let losses =
        IntCounter::new("broker_subscription_losses_total", "Times this node's broker subscriptions were lost")
            .expect("valid metric definition");
    let failovers = IntCounter::new(
        "broker_failovers_total",
        "Times this node followed its Redis master to another server (Sentinel failovers)",
    )
    .expect("valid metric definition");
    let ready = IntGaugeVec::new(
        Opts::new("readiness_check", "1 while the readiness check passes; /readyz answers 200 only while all do"),
        &["check"],
    )
    .expect("valid metric definition");
    // Registered once per process (names unique), as every metric here.
    let _ = registry.register(Box::new(BrokerHealthCollector { broker, draining, up, losses, failovers, ready }));
}
