//! `POST /v1/auth/ws-ticket`: a client trades its user JWT (`Authorization: Bearer`) for a
//! single-use connect ticket, `{"data":{"ticket":"wst_..."}}`, valid on any node for
//! `tickets.ttl`. Served when an endpoint authenticates with tickets.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::credentials::bearer;
use super::ws::unauthorized;
use super::ApiError;
use crate::auth::{AuthError, AuthFailure, Issued};
use crate::config::AuthMethod;
use crate::node::Node;

/// Issues a ticket to the holder of a valid user token.
pub async fn issue(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized(AuthFailure::MissingToken, "send `Authorization: Bearer <user JWT>`");
    };
    // The ticket is checked again when redeemed (expiry, revocation, the endpoint's own rules);
    // a token the strictest ticket endpoint would refuse gets no ticket at all.
    let require_exp = node.endpoints().iter().any(|e| e.auth().method == AuthMethod::Ticket && e.auth().require_exp);
    match node.authenticator().issue_ticket(token, require_exp).await {
        Ok(Issued::Ticket(ticket)) => {
            let no_store = [(header::CACHE_CONTROL, "no-store")];
            (StatusCode::OK, no_store, Json(json!({"data": {"ticket": ticket}}))).into_response()
        }
        Ok(Issued::RateLimited) => {
            let error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many tickets; retry in 1 s");
            ([(header::RETRY_AFTER, "1")], error).into_response()
        }
        Err(AuthError::Refused(failure, why)) => unauthorized(failure, &why),
        Err(AuthError::Unavailable(e)) => ApiError::unavailable(e).into_response(),
    }
}
