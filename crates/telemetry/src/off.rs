//! Tracing compiled out (no `otlp` feature): the same API, recording nothing.

use std::time::SystemTime;

use crate::{InitError, Kind, Settings};

/// Nothing to flush.
pub struct Telemetry;

/// Never a span: [`start_at`] always returns `None`.
pub enum Span {}

impl Span {
    /// Unreachable: no span exists.
    pub fn traceparent(&self) -> String {
        match *self {}
    }

    /// Unreachable: no span exists.
    pub fn set<T>(&mut self, _key: &'static str, _value: T) {
        match *self {}
    }
}

/// Off without an endpoint; an endpoint is refused (this build cannot export).
pub fn init(settings: &Settings) -> Result<Option<Telemetry>, InitError> {
    if settings.endpoint.is_empty() {
        return Ok(None);
    }
    Err(InitError("this build has no OTLP exporter (the `otlp` feature)".into()))
}

/// Always false.
pub fn enabled() -> bool {
    false
}

/// Always `None`.
pub fn start_at(_name: &'static str, _kind: Kind, _parent: Option<&str>, _at: Option<SystemTime>) -> Option<Span> {
    None
}
