//! Where a request carries its credentials: the only place that knows headers and query
//! parameters, so the authenticator works on plain strings.

use std::collections::HashMap;

use axum::http::HeaderMap;

use crate::auth::Credentials;

/// The bearer token from `Authorization: Bearer ...`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Everything a connect request presents: the JWT from `?token=` (else `Authorization:
/// Bearer`), the API key from `X-API-Key` (else `?api_key=`), the ticket from `?ticket=`.
pub fn from_request<'a>(query: &'a HashMap<String, String>, headers: &'a HeaderMap) -> Credentials<'a> {
    let non_empty = |s: &&str| !s.is_empty();
    Credentials {
        token: query.get("token").map(String::as_str).filter(non_empty).or_else(|| bearer(headers)),
        api_key: headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .filter(non_empty)
            .or_else(|| query.get("api_key").map(String::as_str).filter(non_empty)),
        ticket: query.get("ticket").map(String::as_str).filter(non_empty),
    }
}
