//! Who is connecting: credentials in, a [`Principal`] or a typed refusal out.
//!
//! The [`Authenticator`] knows every method an endpoint may use (a user's JWT, an API key) and
//! nothing about HTTP: the HTTP layer collects the [`Credentials`] a request presents, the
//! authenticator checks the ones the endpoint's method asks for. A new method (single-use
//! tickets, per-token limits) is one more variant here. Refusals become the documented 401
//! answers in one place (`http::ws`).

pub mod api_keys;
pub mod jwt;

use switchboard_broker::BrokerError;
use switchboard_protocol::keyspace::revoked_session;
use switchboard_protocol::timefmt::now_millis;

pub use api_keys::{ApiKeyRecord, ApiKeyStore};
pub use jwt::{JwtVerifier, TokenError};
pub use switchboard_protocol::token::Claims;

use crate::config::AuthMethod;
use crate::endpoint::EndpointRuntime;

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

    /// The token's session id (`sid`), if it has one.
    pub fn session(&self) -> Option<&str> {
        match self {
            Principal::User(c) => c.sid.as_deref(),
            Principal::ApiKey(_) => None,
        }
    }
}

/// The credentials a connect request presented, wherever the request carried them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// A user token (`?token=` or `Authorization: Bearer`).
    pub token: Option<&'a str>,
    /// An API key (`X-API-Key` or `?api_key=`).
    pub api_key: Option<&'a str>,
}

/// A successful authentication.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Who connected.
    pub principal: Principal,
    /// When the connection must end (unix seconds): the token's expiry, bounded by the
    /// endpoint's `max_session`.
    pub expires_at: Option<u64>,
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

/// Why authentication did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credentials are refused (the reason is safe to tell the client).
    #[error("refused: {}", .0.code())]
    Refused(AuthFailure, String),
    /// Checking them needs the broker, which is unreachable: try again.
    #[error("credentials cannot be checked now: {0}")]
    Unavailable(#[from] BrokerError),
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => AuthError::Refused(AuthFailure::ExpiredToken, "the token has expired".into()),
            TokenError::Invalid(why) => AuthError::Refused(AuthFailure::InvalidToken, why),
        }
    }
}

/// Checks credentials with every method an endpoint may ask for.
pub struct Authenticator {
    jwt: JwtVerifier,
    api_keys: ApiKeyStore,
}

impl Authenticator {
    /// An authenticator verifying tokens with `jwt` and looking keys up in `api_keys`.
    pub fn new(jwt: JwtVerifier, api_keys: ApiKeyStore) -> Authenticator {
        Authenticator { jwt, api_keys }
    }

    /// The API key store (the admin API manages keys through it).
    pub fn api_keys(&self) -> &ApiKeyStore {
        &self.api_keys
    }

    /// Authenticates a connect to `endpoint` with the credentials its method asks for.
    pub async fn authenticate(
        &self,
        endpoint: &EndpointRuntime,
        credentials: Credentials<'_>,
    ) -> Result<Authenticated, AuthError> {
        let auth = endpoint.auth();
        match auth.method {
            AuthMethod::Jwt => {
                let token = credentials
                    .token
                    .ok_or_else(|| AuthError::Refused(AuthFailure::MissingToken, "no token".into()))?;
                let claims = self.jwt.verify(token)?;
                if auth.require_exp && claims.exp.is_none() {
                    return Err(TokenError::Invalid("the token has no `exp`".into()).into());
                }
                if let Some(sid) = &claims.sid {
                    if self.api_keys.broker().get(&revoked_session(sid)).await?.is_some() {
                        return Err(TokenError::Invalid("the session was revoked".into()).into());
                    }
                }
                let bound = (!auth.max_session.is_zero())
                    .then(|| (now_millis() / 1000).saturating_add(auth.max_session.as_secs()));
                let expires_at = match (claims.exp, bound) {
                    (Some(exp), Some(bound)) => Some(exp.min(bound)),
                    (exp, bound) => exp.or(bound),
                };
                Ok(Authenticated { principal: Principal::User(claims), expires_at })
            }
            AuthMethod::ApiKey => {
                let key = credentials
                    .api_key
                    .ok_or_else(|| AuthError::Refused(AuthFailure::MissingApiKey, "no API key".into()))?;
                match self.api_keys.lookup(key).await? {
                    Some(record) if record.allows(endpoint.path()) => {
                        Ok(Authenticated { principal: Principal::ApiKey(record), expires_at: None })
                    }
                    Some(_) => Err(AuthError::Refused(AuthFailure::InvalidApiKey, "key not allowed here".into())),
                    None => Err(AuthError::Refused(AuthFailure::InvalidApiKey, "unknown key".into())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
