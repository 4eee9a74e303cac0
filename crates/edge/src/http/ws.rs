//! Accepting a WebSocket: origin check, authentication, then the upgrade. Failures are
//! answered before the upgrade with the documented JSON (`401` with `missing_token`,
//! `invalid_token`, `expired_token`, ...); a plain GET without `Upgrade` gets the 401 (no or bad
//! credentials) or a `426` naming the documentation — never a hang or an HTML page.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::ApiError;
use crate::auth::{api_key_from, token_from, AuthFailure, Principal};
use crate::config::AuthMethod;
use crate::connection;
use crate::endpoint::EndpointRuntime;
use crate::node::Node;

/// Handles a request on a WebSocket endpoint path.
pub async fn accept(State(node): State<Arc<Node>>, ep: Arc<EndpointRuntime>, mut req: Request) -> Response {
    let path = ep.config.path.as_str();
    let result = |r: &str| node.metrics.connects.with_label_values(&[path, r]).inc();
    if !origin_allowed(&ep, &req) {
        result("forbidden_origin");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this Origin may not connect to this endpoint",
        )
        .into_response();
    }
    if !node.is_accepting() {
        result("unavailable");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "this node is draining or not ready; connect elsewhere",
        )
        .into_response();
    }
    let query: HashMap<String, String> = Query::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default();
    let principal = match authenticate(&node, &ep, &query, req.headers()).await {
        Ok(p) => p,
        Err(Rejection::Auth(failure)) => {
            result(failure.code());
            return unauthorized(failure);
        }
        Err(Rejection::Unavailable(e)) => {
            result("unavailable");
            return e.into_response();
        }
    };
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        result("not_websocket");
        return upgrade_required(&ep);
    }
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((response, upgrade)) => {
            result("accepted");
            let expires_at = principal.expires_at();
            let handler_node = node.clone();
            let resume = query.get("last_event_id").cloned();
            let make = move |conn| connection::Session::new(handler_node, conn, principal, resume);
            node.connections.spawn(connection::run_upgraded(node.clone(), ep.clone(), expires_at, make, upgrade));
            response.map(axum::body::Body::new)
        }
        Err(e) => {
            result("bad_handshake");
            ApiError::bad_request(format!("invalid WebSocket handshake: {e}")).into_response()
        }
    }
}

enum Rejection {
    Auth(AuthFailure),
    Unavailable(ApiError),
}

async fn authenticate(
    node: &Node,
    ep: &EndpointRuntime,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Principal, Rejection> {
    match ep.config.auth {
        AuthMethod::Jwt => {
            let token = token_from(query, headers).ok_or(Rejection::Auth(AuthFailure::MissingToken))?;
            node.jwt.verify(token).map(Principal::User).map_err(|e| Rejection::Auth(e.into()))
        }
        AuthMethod::ApiKey => {
            let key = api_key_from(query, headers).ok_or(Rejection::Auth(AuthFailure::MissingApiKey))?;
            match node.api_keys.lookup(key).await {
                Ok(Some(record)) if record.allows(&ep.config.path) => Ok(Principal::ApiKey(record)),
                Ok(_) => Err(Rejection::Auth(AuthFailure::InvalidApiKey)),
                Err(e) => Err(Rejection::Unavailable(ApiError::unavailable(e))),
            }
        }
    }
}

fn origin_allowed(ep: &EndpointRuntime, req: &Request) -> bool {
    let allowed = &ep.config.allowed_origins;
    if allowed.is_empty() {
        return true;
    }
    match req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)),
        // Non-browser clients send no Origin; the check protects browsers.
        None => true,
    }
}

fn unauthorized(failure: AuthFailure) -> Response {
    let body = json!({"error": "unauthorized", "code": failure.code(), "status": 401});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

fn upgrade_required(ep: &EndpointRuntime) -> Response {
    let body = json!({
        "error": "upgrade_required",
        "code": "websocket_required",
        "status": 426,
        "message": format!("{} is a WebSocket endpoint ({} dialect); connect with a WebSocket client", ep.config.path, ep.config.dialect.name()),
        "documentation": ep.config.docs_url,
    });
    (StatusCode::UPGRADE_REQUIRED, [(header::UPGRADE, "websocket")], Json(body)).into_response()
}
