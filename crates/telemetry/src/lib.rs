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

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

pub use opentelemetry::trace::SpanKind as Kind;

/// The W3C trace context header (and the event field that carries it).
pub const TRACEPARENT: &str = "traceparent";

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

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

/// The running exporter; flushes what is buffered when dropped (call it outside an async
/// context: the exporter's HTTP client blocks).
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Why tracing could not start.
#[derive(Debug)]
pub struct InitError(String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tracing: {}", self.0)
    }
}

impl std::error::Error for InitError {}

/// Starts exporting spans as `settings` say; `None` (and tracing stays off) when no endpoint
/// is set. Call once per process, before any runtime that would own the exporter's thread.
pub fn init(settings: &Settings) -> Result<Option<Telemetry>, InitError> {
    if settings.endpoint.is_empty() {
        return Ok(None);
    }
    if !(0.0..=1.0).contains(&settings.sample_ratio) {
        return Err(InitError(format!("the sample ratio {} is not between 0 and 1", settings.sample_ratio)));
    }
    let base = settings.endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(url)
        .build()
        .map_err(|e| InitError(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio))))
        .with_resource(Resource::builder().with_service_name(settings.service_name.clone()).build())
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "switchboard");
    TRACER.set(tracer).map_err(|_| InitError("already initialised in this process".into()))?;
    Ok(Some(Telemetry { provider }))
}

/// Whether spans are being recorded in this process.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// A span in progress; it ends when dropped.
pub struct Span {
    inner: opentelemetry_sdk::trace::Span,
}

impl Span {
    /// The `traceparent` that makes later spans (on this node or another) its children.
    pub fn traceparent(&self) -> String {
        let cx = Context::new().with_remote_span_context(self.inner.span_context().clone());
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        carrier.remove(TRACEPARENT).unwrap_or_default()
    }

    /// Adds an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.inner.set_attribute(KeyValue::new(key, value));
    }
}

/// Starts span `name` as a child of `parent` (a `traceparent` header value; `None` or one that
/// does not parse starts a new trace), or returns `None` at once when tracing is off.
pub fn start(name: &'static str, kind: SpanKind, parent: Option<&str>) -> Option<Span> {
    start_at(name, kind, parent, None)
}

/// [`start`] with the time the work began, for spans recorded after the fact (a batch).
pub fn start_at(name: &'static str, kind: SpanKind, parent: Option<&str>, at: Option<SystemTime>) -> Option<Span> {
    let tracer = TRACER.get()?;
    let cx = match parent {
        Some(value) => {
            let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
            TraceContextPropagator::new().extract(&carrier)
        }
        None => Context::new(),
    };
    let mut builder = tracer.span_builder(name).with_kind(kind);
    if let Some(at) = at {
        builder = builder.with_start_time(at);
    }
    Some(Span { inner: builder.start_with_context(tracer, &cx) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_without_an_endpoint_and_nothing_starts() {
        let off = Settings { endpoint: String::new(), sample_ratio: 1.0, service_name: "t".into() };
        assert!(init(&off).expect("no error").is_none());
        assert!(!enabled());
        assert!(start("publish", SpanKind::Server, Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
            .is_none());
        let bad = Settings { endpoint: "http://127.0.0.1:1".into(), sample_ratio: 2.0, service_name: "t".into() };
        assert!(init(&bad).is_err(), "a ratio over 1 is refused");
    }
}
