//! JSON errors of the HTTP API: `{"error":..., "code":..., "status":N, "message":...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (`missing_token`, `invalid_request`, ...).
    pub code: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    /// 400 with `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 503: shared state unreachable; nothing was accepted.
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable", format!("not accepted: {e}"))
    }

    /// 503 for a publish the broker did not take (`broker_unavailable`), or took without the
    /// replicas `persistence.replicas_ack` asks for (`not_replicated`: it may still appear).
    pub fn publish_failed(e: &switchboard_broker::BrokerError) -> Self {
        match e {
            switchboard_broker::BrokerError::NotReplicated { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_replicated",
                format!("{e}: the event may still be delivered; retrying with the same id is safe"),
            ),
            _ => Self::unavailable(e),
        }
    }

    /// The `error` field: a short category derived from the status.
    fn category(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
            StatusCode::UPGRADE_REQUIRED => "upgrade_required",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            s if s.is_server_error() => "internal_error",
            _ => "bad_request",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.category(),
            "code": self.code,
            "status": self.status.as_u16(),
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}
