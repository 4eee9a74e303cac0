//! Who is connecting: credentials in, a [`Principal`] or a typed refusal out.
//!
//! The [`Authenticator`] knows every method an endpoint may use (a user's JWT, an API key) and
//! nothing about HTTP: the HTTP layer collects the [`Credentials`] a request presents, the
//! authenticator checks the ones the endpoint's method asks for. A new method (single-use
//! tickets, per-token limits) is one more variant here. Refusals become the documented 401
//! answers in one place (`http::ws`).

pub mod api_keys;
pub mod jwt;
pub mod tickets;

use switchboard_broker::BrokerError;
use switchboard_protocol::keyspace::revoked_session;
use switchboard_protocol::timefmt::now_millis;

pub use api_keys::{ApiKeyRecord, ApiKeyStore};
pub use jwt::{JwtVerifier, TokenError};
pub use switchboard_protocol::token::Claims;
pub use tickets::{Issued, TicketStore};

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

    /// The user's display name (the token's `name`), if it has one.
    pub fn display_name(&self) -> Option<&str> {
        match self {
            Principal::User(c) => c.name.as_deref(),
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
    /// A connect ticket (`?ticket=`).
    pub ticket: Option<&'a str>,
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
    /// A connect ticket that is unknown, used or expired.
    InvalidTicket,
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
            AuthFailure::InvalidTicket => "invalid_ticket",
        }
    }

    /// What a client told in the dialect's error message (endpoints that refuse after the
    /// upgrade) reads.
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "Authentication required",
            AuthFailure::InvalidToken => "Token is invalid",
            AuthFailure::ExpiredToken => "Token has expired",
            AuthFailure::MissingApiKey => "API key required",
            AuthFailure::InvalidApiKey => "API key is invalid",
            AuthFailure::InvalidTicket => "WebSocket ticket is invalid or expired",
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
            TokenError::Expired => AuthError::Refused(AuthFailure::ExpiredToken, "its `exp` has passed".into()),
            TokenError::Invalid(why) => AuthError::Refused(AuthFailure::InvalidToken, why),
        }
    }
}

/// Checks credentials with every method an endpoint may ask for.
pub struct Authenticator {
    jwt: JwtVerifier,
    api_keys: ApiKeyStore,
    tickets: TicketStore,
}

fn refused(failure: AuthFailure, why: &str) -> AuthError {
    AuthError::Refused(failure, why.to_owned())
}

impl Authenticator {
    /// An authenticator verifying tokens with `jwt`, looking keys up in `api_keys` and
    /// redeeming connect tickets from `tickets`.
    pub fn new(jwt: JwtVerifier, api_keys: ApiKeyStore, tickets: TicketStore) -> Authenticator {
        Authenticator { jwt, api_keys, tickets }
    }

    /// Verifies a user token as every user endpoint does: signature and registered claims,
    /// `exp` present where required, session not revoked.
    pub async fn verify_user(&self, token: &str, require_exp: bool) -> Result<Claims, AuthError> {
        let claims = self.jwt.verify(token)?;
        if require_exp && claims.exp.is_none() {
            return Err(TokenError::Invalid("the token has no `exp`".into()).into());
        }
        self.check_not_revoked(&claims).await?;
        Ok(claims)
    }

    async fn check_not_revoked(&self, claims: &Claims) -> Result<(), AuthError> {
        if let Some(sid) = &claims.sid {
            if self.api_keys.broker().get(&revoked_session(sid)).await?.is_some() {
                return Err(TokenError::Invalid("the session was revoked".into()).into());
            }
        }
        Ok(())
    }

    /// Issues a connect ticket for the holder of a valid user `token`.
    pub async fn issue_ticket(&self, token: &str, require_exp: bool) -> Result<Issued, AuthError> {
        let claims = self.verify_user(token, require_exp).await?;
        Ok(self.tickets.issue(&claims).await?)
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
                let token = credentials.token.ok_or_else(|| {
                    refused(AuthFailure::MissingToken, "send the token as `?token=` or `Authorization: Bearer`")
                })?;
                let claims = self.verify_user(token, auth.require_exp).await?;
                Ok(user_session(claims, auth.max_session))
            }
            AuthMethod::Ticket => {
                let ticket = credentials.ticket.ok_or_else(|| {
                    refused(
                        AuthFailure::MissingToken,
                        "get one with `POST /v1/auth/ws-ticket` and connect with `?ticket=`",
                    )
                })?;
                let claims = self
                    .tickets
                    .redeem(ticket)
                    .await?
                    .ok_or_else(|| refused(AuthFailure::InvalidTicket, "unknown, used or expired ticket"))?;
                // The token was valid when the ticket was issued; it may have expired or been
                // revoked since, and this endpoint may be stricter.
                if claims.exp.is_some_and(|exp| exp <= now_millis() / 1000) {
                    return Err(TokenError::Expired.into());
                }
                if auth.require_exp && claims.exp.is_none() {
                    return Err(TokenError::Invalid("the token has no `exp`".into()).into());
                }
                self.check_not_revoked(&claims).await?;
                Ok(user_session(claims, auth.max_session))
            }
            AuthMethod::ApiKey => {
                let key = credentials
                    .api_key
                    .ok_or_else(|| refused(AuthFailure::MissingApiKey, "send it as `?api_key=` or `X-API-Key`"))?;
                self.api_key_session(endpoint, key).await
            }
            AuthMethod::JwtOrApiKey => match (credentials.token, credentials.api_key) {
                (Some(token), _) if looks_like_jwt(token) => {
                    let claims = self.verify_user(token, auth.require_exp).await?;
                    Ok(user_session(claims, auth.max_session))
                }
                (Some(key), _) | (None, Some(key)) => self.api_key_session(endpoint, key).await,
                (None, None) => Err(refused(
                    AuthFailure::MissingToken,
                    "send a JWT or an API key as `?token=` (or `Authorization: Bearer`, `X-API-Key`)",
                )),
            },
        }
    }

    async fn api_key_session(&self, endpoint: &EndpointRuntime, key: &str) -> Result<Authenticated, AuthError> {
        match self.api_keys.lookup(key).await? {
            Some(record) if record.allows(endpoint.path()) => {
                Ok(Authenticated { principal: Principal::ApiKey(record), expires_at: None })
            }
            Some(_) => {
                Err(AuthError::Refused(AuthFailure::InvalidApiKey, "the key is not allowed on this endpoint".into()))
            }
            None => {
                Err(AuthError::Refused(AuthFailure::InvalidApiKey, "no such key (deleted, or never created)".into()))
            }
        }
    }
}

/// A compact JWS has three base64url parts joined by dots; API keys have no dots.
fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

/// A user's connection: it ends at the token's expiry, or after `max_session` if sooner.
fn user_session(claims: Claims, max_session: std::time::Duration) -> Authenticated {
    let bound = (!max_session.is_zero()).then(|| (now_millis() / 1000).saturating_add(max_session.as_secs()));
    let expires_at = match (claims.exp, bound) {
        (Some(exp), Some(bound)) => Some(exp.min(bound)),
        (exp, bound) => exp.or(bound),
    };
    Authenticated { principal: Principal::User(claims), expires_at }
}

#[cfg(test)]
mod tests;
