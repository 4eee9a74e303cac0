//! Why a connection is closed, in dialect-neutral terms.
//!
//! The documented APIs disagree on codes (4008 is "connection limit" in one and "rate limited"
//! in another), so the edge only ever names a [`CloseReason`]; the endpoint's dialect (and its
//! config overrides) turn it into a code in exactly one place: [`crate::Codec::close_code`].

/// Every reason the server closes a connection. Config files name them in snake case
/// (`connection_limit = 4008` in an endpoint's `close_codes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// Normal closure.
    Normal,
    /// The node is shutting down or draining.
    GoingAway,
    /// The client broke a rule that has no more specific code.
    PolicyViolation,
    /// Server-side failure.
    Internal,
    /// Credentials were rejected.
    AuthFailed,
    /// The token expired during the session.
    AuthExpired,
    /// The credentials do not allow something the client asked for.
    Forbidden,
    /// Too many concurrent connections for this user, key or token.
    ConnectionLimit,
    /// The client sent too many messages.
    RateLimited,
    /// The client did not read fast enough and its outbound queue filled up.
    SlowConsumer,
    /// The client stopped answering heartbeats.
    HeartbeatTimeout,
    /// A message was larger than the endpoint allows.
    MessageTooBig,
    /// The client sent bytes that are not a valid WebSocket frame sequence.
    ProtocolError,
    /// A text message was not valid UTF-8.
    InvalidPayload,
    /// Too many subscriptions on one connection.
    TooManySubscriptions,
    /// Nothing happened on the connection for too long.
    Idle,
    /// The session was revoked (logout elsewhere, an administrator).
    SessionRevoked,
}

impl CloseReason {
    /// Every reason, for config validation and documentation.
    pub const ALL: [CloseReason; 17] = [
        CloseReason::Normal,
        CloseReason::GoingAway,
        CloseReason::PolicyViolation,
        CloseReason::Internal,
        CloseReason::AuthFailed,
        CloseReason::AuthExpired,
        CloseReason::Forbidden,
        CloseReason::ConnectionLimit,
        CloseReason::RateLimited,
        CloseReason::SlowConsumer,
        CloseReason::HeartbeatTimeout,
        CloseReason::MessageTooBig,
        CloseReason::ProtocolError,
        CloseReason::InvalidPayload,
        CloseReason::TooManySubscriptions,
        CloseReason::Idle,
        CloseReason::SessionRevoked,
    ];

    /// The config name of this reason (`connection_limit`), used in close-code overrides.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::GoingAway => "going_away",
            CloseReason::PolicyViolation => "policy_violation",
            CloseReason::Internal => "internal",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::AuthExpired => "auth_expired",
            CloseReason::Forbidden => "forbidden",
            CloseReason::ConnectionLimit => "connection_limit",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidPayload => "invalid_payload",
            CloseReason::TooManySubscriptions => "too_many_subscriptions",
            CloseReason::Idle => "idle",
            CloseReason::SessionRevoked => "session_revoked",
        }
    }

    /// Parses a config name back into a reason.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The RFC 6455 code used when a dialect has nothing more specific.
    pub fn standard_code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::Internal => 1011,
            CloseReason::MessageTooBig => 1009,
            CloseReason::AuthFailed | CloseReason::AuthExpired | CloseReason::SessionRevoked => 4001,
            CloseReason::Forbidden => 4003,
            CloseReason::ConnectionLimit => 4008,
            CloseReason::RateLimited => 4029,
            CloseReason::PolicyViolation
            | CloseReason::SlowConsumer
            | CloseReason::HeartbeatTimeout
            | CloseReason::TooManySubscriptions
            | CloseReason::Idle => 1008,
        }
    }

    /// Whether the peer broke the WebSocket protocol itself, in which case the server drops
    /// the TCP connection right after its close frame instead of waiting for the handshake
    /// (RFC 6455 §7.1.7, "fail the WebSocket connection").
    pub fn fails_connection(self) -> bool {
        matches!(self, CloseReason::ProtocolError | CloseReason::InvalidPayload)
    }

    /// Short default reason text sent in the close frame.
    pub fn default_text(self) -> &'static str {
        match self {
            CloseReason::Normal => "Normal closure",
            CloseReason::GoingAway => "Server going away",
            CloseReason::PolicyViolation => "Policy violation",
            CloseReason::Internal => "Internal server error",
            CloseReason::AuthFailed => "Authentication failed",
            CloseReason::AuthExpired => "Token expired",
            CloseReason::Forbidden => "Forbidden",
            CloseReason::ConnectionLimit => "Connection Limit Reached",
            CloseReason::RateLimited => "Rate limited",
            CloseReason::SlowConsumer => "Slow consumer: outbound queue full",
            CloseReason::HeartbeatTimeout => "Heartbeat timeout",
            CloseReason::MessageTooBig => "Message too big",
            CloseReason::ProtocolError => "Protocol error",
            CloseReason::InvalidPayload => "Invalid UTF-8 in text message",
            CloseReason::TooManySubscriptions => "Too many subscriptions",
            CloseReason::Idle => "Idle timeout",
            CloseReason::SessionRevoked => "Session revoked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_config_spelling() {
        for r in CloseReason::ALL {
            assert_eq!(CloseReason::from_name(r.name()), Some(r));
            assert_eq!(serde_json::to_value(r).expect("serializes"), serde_json::json!(r.name()));
        }
    }
}
