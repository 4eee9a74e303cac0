//! Accepting a WebSocket: origin check, authentication, then the upgrade. Failures are
//! answered before the upgrade with the documented JSON (`401` with `missing_token`,
//! `invalid_token`, `expired_token`, `invalid_ticket`, ...), or, on endpoints that refuse after
//! the upgrade, with the dialect's error message and a close; a plain GET without `Upgrade`
//! gets the 401 (no or bad credentials) or a `426` naming the documentation — never a hang or
//! an HTML page. A plain GET never spends a connect ticket.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use switchboard_wsframe::deflate;

use super::{credentials, ApiError};
use crate::auth::{AuthError, AuthFailure};
use crate::config::RefusalStyle;
use crate::connection::{self, Accepted, ConnHandle, MessageHandler, RefusalHandler};
use crate::endpoint::EndpointRuntime;
use crate::node::Node;
use crate::session::Session;

/// Handles a request on a WebSocket endpoint path.
pub async fn accept(State(node): State<Arc<Node>>, ep: Arc<EndpointRuntime>, req: Request) -> Response {
    let path = ep.path();
    let result = |r: &str| node.metrics().connects.with_label_values(&[path, r]).inc();
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
    let credentials = credentials::from_request(&query, req.headers());
    let wants_upgrade = fastwebsockets::upgrade::is_upgrade_request(&req);
    if !wants_upgrade && credentials.ticket.is_some() {
        // Redeeming would spend the ticket on a request that cannot become a connection.
        result("not_websocket");
        return upgrade_required(&ep);
    }
    let authenticated = match node.authenticator().authenticate(&ep, credentials).await {
        Ok(a) => a,
        Err(AuthError::Refused(failure, why)) => {
            tracing::debug!(endpoint = path, code = failure.code(), why, "connect refused");
            result(failure.code());
            if wants_upgrade && ep.auth().refusal == RefusalStyle::Close {
                let refuse = move |conn| RefusalHandler::new(conn, failure.message());
                return upgrade(&node, &ep, req, Accepted::default(), refuse).unwrap_or_else(bad_handshake);
            }
            return unauthorized(failure, &why);
        }
        Err(AuthError::Unavailable(e)) => {
            result("unavailable");
            return ApiError::unavailable(e).into_response();
        }
    };
    if !wants_upgrade {
        result("not_websocket");
        return upgrade_required(&ep);
    }
    let services = node.sessions().clone();
    let principal = Arc::new(authenticated.principal);
    let resume = query.get("last_event_id").cloned();
    let for_session = principal.clone();
    let for_log = principal.clone();
    let make = move |conn| Session::new(services, conn, for_session, resume);
    let accepted = Accepted {
        principal: Some(principal),
        expires_at: authenticated.expires_at,
        subscriptions: Session::initial_subscriptions(&ep),
        ..Accepted::default()
    };
    match upgrade(&node, &ep, req, accepted, make) {
        Ok(response) => {
            tracing::debug!(endpoint = path, user = for_log.user().unwrap_or("-"), "connected");
            result("accepted");
            response
        }
        Err(e) => {
            result("bad_handshake");
            bad_handshake(e)
        }
    }
}

/// Answers the handshake (agreeing to permessage-deflate when the endpoint enables it and the
/// client offers it) and starts the connection's task with the handler `make` builds; fails
/// for an invalid handshake.
pub(super) fn upgrade<H: MessageHandler + 'static>(
    node: &Node,
    ep: &Arc<EndpointRuntime>,
    mut req: Request,
    mut accepted: Accepted,
    make: impl FnOnce(Arc<ConnHandle>) -> H + Send + 'static,
) -> Result<Response, fastwebsockets::WebSocketError> {
    accepted.ip_slot = req.extensions().get::<Arc<crate::ip_limits::IpSlot>>().cloned();
    let offers = req.headers().get_all(header::SEC_WEBSOCKET_EXTENSIONS);
    accepted.deflate = ep
        .config
        .compression
        .enabled
        .then(|| deflate::negotiate(offers.iter().filter_map(|v| v.to_str().ok())))
        .flatten();
    let (mut response, upgrade) = fastwebsockets::upgrade::upgrade(&mut req)?;
    if let Some(agreement) = accepted.deflate {
        if let Ok(value) = header::HeaderValue::from_str(&agreement.response()) {
            response.headers_mut().insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    let ctx = node.conns().clone();
    let run = connection::run_upgraded(ctx.clone(), ep.clone(), accepted, make, upgrade);
    ctx.tasks.spawn(run);
    Ok(response.map(axum::body::Body::new))
}

pub(super) fn bad_handshake(e: fastwebsockets::WebSocketError) -> Response {
    ApiError::bad_request(format!("invalid WebSocket handshake: {e}")).into_response()
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

/// The documented 401 answer, byte for byte as the API documents (SPEC §3):
/// `{"error":"unauthorized","code":...,"status":401}`. What was wrong (`detail`: safe to show,
/// never the credential) goes in the standard `WWW-Authenticate` header (RFC 6750), so the
/// body stays as documented and a developer still reads why, e.g. "the signature does not match
/// this server's key or secret".
pub fn unauthorized(failure: AuthFailure, detail: &str) -> Response {
    let body = json!({"error": "unauthorized", "code": failure.code(), "status": 401});
    let description = format!("{}: {detail}", failure.message()).replace(['"', '\\'], "'");
    let challenge = format!("Bearer error=\"{}\", error_description=\"{description}\"", failure.code());
    let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    if let Ok(value) = header::HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn upgrade_required(ep: &EndpointRuntime) -> Response {
    let body = json!({
        "error": "upgrade_required",
        "code": "websocket_required",
        "status": 426,
        "message": format!("{} is a WebSocket endpoint ({} dialect); connect with a WebSocket client", ep.path(), ep.config.dialect.name()),
        "documentation": ep.config.docs_url,
    });
    (StatusCode::UPGRADE_REQUIRED, [(header::UPGRADE, "websocket")], Json(body)).into_response()
}
