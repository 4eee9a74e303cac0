//! Operations endpoints: liveness, readiness, metrics, the playground.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::ApiError;
use crate::node::Node;

const PLAYGROUND_HTML: &str = include_str!("../../assets/playground.html");

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the broker answers and the node is not draining.
pub async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response();
    }
    match node.broker.ping().await {
        Ok(()) => Json(json!({"status": "ready", "broker": node.broker.name()})).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "broker_unreachable", "error": e.to_string()})))
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(node): State<Arc<Node>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], node.metrics.render()).into_response()
}

/// `GET /playground`: the browser playground.
pub async fn playground() -> Html<&'static str> {
    Html(PLAYGROUND_HTML)
}

/// `GET /playground/endpoints`: what the playground offers.
pub async fn playground_endpoints(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let endpoints: Vec<_> = node
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "path": e.config.path,
                "dialect": e.config.dialect.name(),
                "auth": e.config.auth,
                "event_types": e.config.event_types,
                "channels": e.config.channels,
            })
        })
        .collect();
    Json(json!({ "endpoints": endpoints }))
}

/// Anything else: JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /playground for the endpoints")
}
