//! Operations endpoints: liveness, readiness, metrics, the playground.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use prometheus::{Encoder, TextEncoder};
use serde_json::json;
use switchboard_broker::SharedBroker;
use tokio_util::sync::CancellationToken;

use super::ApiError;
use crate::node::Node;
use crate::readiness::{self, Check};

/// What the operations endpoints look at, in any process role.
#[derive(Clone)]
pub struct Ops {
    /// The broker `/readyz` pings.
    pub broker: SharedBroker,
    /// The metrics `/metrics` renders.
    pub registry: prometheus::Registry,
    /// Cancelled when the process stops accepting (`/readyz` answers 503).
    pub draining: CancellationToken,
    /// The bearer token `/metrics` requires, if any (`metrics_token`).
    pub metrics_token: Option<Arc<str>>,
}

impl Ops {
    /// An edge's operations state.
    pub fn of(node: &Node) -> Ops {
        Ops {
            broker: node.broker().clone(),
            registry: node.metrics().registry().clone(),
            draining: node.conns().draining.clone(),
            metrics_token: metrics_token(node.config()),
        }
    }
}

const PLAYGROUND_HTML: &str = include_str!("../../assets/playground.html");

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 only while the process can do its job (see [`crate::readiness`]): not
/// draining, the broker answers now, the server written to is a master, every subscription is
/// confirmed and the node's delivery probe comes back. Else 503 with the first check that
/// fails as `status`.
pub async fn readyz(State(ops): State<Ops>) -> Response {
    let draining = ops.draining.is_cancelled();
    let ping = if draining { Ok(()) } else { ops.broker.ping().await };
    let health = ops.broker.health();
    let broker = ops.broker.name();
    match readiness::failing(draining, ping.is_ok(), &health) {
        None => Json(json!({"status": "ready", "broker": broker})).into_response(),
        Some(Check::Broker) => {
            let error = ping.err().map(|e| e.to_string()).unwrap_or_default();
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": Check::Broker.status(), "error": error})))
                .into_response()
        }
        Some(check) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": check.status(), "broker": broker}))).into_response()
        }
    }
}

/// The token `/metrics` requires under `config`, if one is set.
pub fn metrics_token(config: &crate::config::Config) -> Option<Arc<str>> {
    (!config.metrics_token.is_empty()).then(|| Arc::from(config.metrics_token.as_str()))
}

/// `GET /metrics`: Prometheus text format; with `metrics_token` set, only for
/// `Authorization: Bearer <token>` (compared by digest, in time independent of the match).
pub async fn metrics(State(ops): State<Ops>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &ops.metrics_token {
        use sha2::{Digest, Sha256};
        let given = super::credentials::bearer(&headers).unwrap_or("");
        if Sha256::digest(given.as_bytes()) != Sha256::digest(token.as_bytes()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "`/metrics` needs `Authorization: Bearer <metrics_token>`",
            )
            .into_response();
        }
    }
    let mut out = Vec::new();
    // Encoding gathered metrics into memory cannot fail.
    let _ = TextEncoder::new().encode(&ops.registry.gather(), &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// `GET /playground`: the browser playground.
pub async fn playground() -> Html<&'static str> {
    Html(PLAYGROUND_HTML)
}

/// `GET /playground/endpoints`: what the playground offers.
pub async fn playground_endpoints(State(node): State<Arc<Node>>) -> Json<serde_json::Value> {
    let endpoints: Vec<_> = node
        .endpoints()
        .iter()
        .map(|e| {
            json!({
                "path": e.path(),
                "dialect": e.config.dialect.name(),
                "auth": e.auth().method,
                "event_types": e.config.event_types,
                "channels": e.config.channels.allowed,
            })
        })
        .collect();
    Json(json!({ "endpoints": endpoints }))
}

/// What `POST /playground/token` is asked for.
#[derive(serde::Deserialize)]
pub struct PlaygroundTokenRequest {
    /// The user the token is for.
    sub: String,
}

/// `POST /playground/token` `{"sub": "alice"}`: a one-hour user token, and the admin key, for
/// the playground's "get a token" and "publish" buttons. Only while the node runs on the
/// development credentials (which it accepts on loopback only): anyone who can reach such a
/// node can mint tokens with the public development secret anyway. Otherwise 403.
pub async fn playground_token(
    State(node): State<Arc<Node>>,
    Json(req): Json<PlaygroundTokenRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::config::{DEV_ADMIN_KEY, DEV_JWT_SECRET};
    let cfg = node.config();
    if !cfg.uses_dev_jwt_secret() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_dev_mode",
            "the playground mints tokens only on development credentials; paste one from `switchboard token --sub alice`",
        ));
    }
    let sub = req.sub.trim();
    if sub.is_empty() || sub.len() > 128 {
        return Err(ApiError::bad_request("`sub` must be 1 to 128 bytes"));
    }
    let token = switchboard_protocol::token::mint_hs256(DEV_JWT_SECRET, sub, 3600, serde_json::Map::new())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))?;
    let admin_key = (cfg.admin_key() == DEV_ADMIN_KEY).then_some(DEV_ADMIN_KEY);
    Ok(Json(json!({"token": token, "admin_key": admin_key})))
}

/// Anything else: JSON 404.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /playground for the endpoints")
}

/// The answer to a known path called with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method; see the README's HTTP API",
    )
}
