//! Who is connecting: JWT verification and API keys, and the 401 answers for failures.

pub mod api_keys;
pub mod jwt;

use std::collections::HashMap;

use axum::http::HeaderMap;

pub use api_keys::{ApiKeyRecord, ApiKeyStore};
pub use jwt::{Claims, JwtVerifier, TokenError};

/// An authenticated client.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A user, from a JWT.
    User(Claims),
    /// An API key, by name, with its connection limit.
    ApiKey(ApiKeyRecord),
}

impl Principal {
    /// The user id, if this is a user.
    pub fn user(&self) -> Option<&str> {
        match self {
            Principal::User(c) => Some(&c.sub),
            Principal::ApiKey(_) => None,
        }
    }

    /// When the credentials expire (unix seconds), if they do.
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Principal::User(c) => c.exp,
            Principal::ApiKey(_) => None,
        }
    }
}

/// Why a connect was refused before the upgrade; rendered as the documented 401 JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials at all.
    MissingToken,
    /// A token that does not verify.
    InvalidToken,
    /// A token whose `exp` has passed.
    ExpiredToken,
    /// No API key.
    MissingApiKey,
    /// An unknown API key, or one not allowed on this endpoint.
    InvalidApiKey,
}

impl AuthFailure {
    /// The `code` field of the 401 body.
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::InvalidToken => "invalid_token",
            AuthFailure::ExpiredToken => "expired_token",
            AuthFailure::MissingApiKey => "missing_api_key",
            AuthFailure::InvalidApiKey => "invalid_api_key",
        }
    }
}

impl From<TokenError> for AuthFailure {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => AuthFailure::ExpiredToken,
            TokenError::Invalid(_) => AuthFailure::InvalidToken,
        }
    }
}

/// The bearer token from `Authorization: Bearer ...`, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The JWT a client presented: `?token=` first, then the `Authorization` header.
pub fn token_from<'a>(query: &'a HashMap<String, String>, headers: &'a HeaderMap) -> Option<&'a str> {
    query.get("token").map(String::as_str).filter(|t| !t.is_empty()).or_else(|| bearer(headers))
}

/// The API key a client presented: `X-API-Key` first, then `?api_key=`.
pub fn api_key_from<'a>(query: &'a HashMap<String, String>, headers: &'a HeaderMap) -> Option<&'a str> {
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .or_else(|| query.get("api_key").map(String::as_str).filter(|k| !k.is_empty()))
}
