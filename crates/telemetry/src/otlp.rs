//! The OTLP/HTTP exporter and real spans (the `otlp` feature).

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

use crate::{InitError, Kind, Settings, TRACEPARENT};

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

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

/// [`crate::start`] with the time the work began, for spans recorded after the fact (a batch).
pub fn start_at(name: &'static str, kind: Kind, parent: Option<&str>, at: Option<SystemTime>) -> Option<Span> {
    let tracer = TRACER.get()?;
    let cx = match parent {
        Some(value) => {
            let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
            TraceContextPropagator::new().extract(&carrier)
        }
        None => Context::new(),
    };
    let kind = match kind {
        Kind::Server => SpanKind::Server,
        Kind::Consumer => SpanKind::Consumer,
    };
    let mut builder = tracer.span_builder(name).with_kind(kind);
    if let Some(at) = at {
        builder = builder.with_start_time(at);
    }
    Some(Span { inner: builder.start_with_context(tracer, &cx) })
}
