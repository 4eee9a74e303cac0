//! OpenTelemetry traces of an event's way through a cluster: a `publish` span on the edge that
//! took the HTTP request (a child of the request's W3C `traceparent`, when it has one), a
//! `persist` span on the worker that stored it, and one `dispatch` span per event on every edge
//! that fanned it out (not one per socket). The event carries its publish span's
//! `traceparent` through Redis, so all of them are one trace.
//!
//! Off unless an OTLP endpoint is configured; then [`start`] returns `None` after one atomic
//! load and nothing else runs. On, spans are sampled by the parent's decision where there is
//! one and by a ratio of trace ids otherwise, and exported over OTLP/HTTP (JSON) in batches by
//! a background thread.
//!
//! The exporter is the `otlp` feature (the `switchboard` binary enables it); without it (the
//! fuzz targets) the same API records nothing and [`init`] refuses an endpoint.

use std::time::SystemTime;

#[cfg(feature = "otlp")]
mod otlp;
#[cfg(feature = "otlp")]
pub use otlp::{enabled, init, start_at, Span, Telemetry};

#[cfg(not(feature = "otlp"))]
mod off;
#[cfg(not(feature = "otlp"))]
pub use off::{enabled, init, start_at, Span, Telemetry};

/// The W3C trace context header (and the event field that carries it).
pub const TRACEPARENT: &str = "traceparent";

/// What tracing needs: where to send spans, what share of new traces to keep, who sends them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// OTLP/HTTP base URL (`http://collector:4318`; `/v1/traces` is added) or the full traces
    /// URL. Empty: tracing is off.
    pub endpoint: String,
    /// Share of traces started here (no sampled parent) that are kept, 0 to 1.
    pub sample_ratio: f64,
    /// `service.name` of the spans (`switchboard-edge`, `switchboard-worker`, ...).
    pub service_name: String,
}

/// Why tracing could not start.
#[derive(Debug)]
pub struct InitError(pub(crate) String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tracing: {}", self.0)
    }
}

impl std::error::Error for InitError {}

/// What kind of work a span is (server, consumer, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Handling a request (the publish API).
    Server,
    /// Handling a message (the worker's persist, an edge's dispatch).
    Consumer,
}

/// Starts span `name` as a child of `parent` (a `traceparent` header value; `None` or one that
/// does not parse starts a new trace), or returns `None` at once when tracing is off.
pub fn start(name: &'static str, kind: Kind, parent: Option<&str>) -> Option<Span> {
    start_at(name, kind, parent, None::<SystemTime>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_an_endpoint_and_nothing_starts() {
        let off = Settings { endpoint: String::new(), sample_ratio: 1.0, service_name: "t".into() };
        assert!(init(&off).expect("no error").is_none());
        assert!(!enabled());
        assert!(
            start("publish", Kind::Server, Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")).is_none()
        );
        let bad = Settings { endpoint: "http://127.0.0.1:1".into(), sample_ratio: 2.0, service_name: "t".into() };
        assert!(init(&bad).is_err(), "a ratio over 1 is refused");
    }
}
