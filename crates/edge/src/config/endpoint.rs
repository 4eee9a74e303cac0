//! The schema of one WebSocket endpoint, grouped by concern so that a dialect with new needs
//! adds a group rather than a dozen flat keys:
//!
//! ```toml
//! [[endpoints]]
//! path = "/ws/notifications"
//! dialect = "orbnet"
//! event_types = ["notification", "server_alert"]
//! broadcast_channel = "notifications"
//! auth = { method = "jwt" }
//! limits = { max_connections_per_user = 5, message_rate = 10.0 }
//! heartbeat = { interval = "30s", timeout = "30s" }
//! replay = { enabled = true }
//! close_codes = { connection_limit = 4008 }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{CloseReason, DialectKind};

use super::duration_str;

/// How clients of an endpoint authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// JWT in `?token=` or `Authorization: Bearer`.
    Jwt,
    /// API key in `X-API-Key` or `?api_key=`.
    ApiKey,
    /// A single-use ticket in `?ticket=`, issued for a user JWT by `POST /v1/auth/ws-ticket`
    /// and redeemable once, on any node, within `tickets.ttl`.
    Ticket,
    /// Either: `?token=` (or `Authorization: Bearer`) holds a user JWT or an API key (told apart
    /// by the JWT's shape), or the key comes in `X-API-Key` / `?api_key=`. For APIs whose
    /// documents say "token" and mean both (veriops: `?token=YOUR_API_KEY`).
    JwtOrApiKey,
}

impl AuthMethod {
    /// Whether API keys may connect to an endpoint with this method.
    pub fn accepts_api_keys(self) -> bool {
        matches!(self, AuthMethod::ApiKey | AuthMethod::JwtOrApiKey)
    }

    /// Whether user JWTs may connect to an endpoint with this method.
    pub fn accepts_user_tokens(self) -> bool {
        matches!(self, AuthMethod::Jwt | AuthMethod::JwtOrApiKey)
    }
}

/// What a client whose credentials are refused gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalStyle {
    /// An HTTP 401 JSON answer before the upgrade (`{"error":"unauthorized","code":...}`).
    #[default]
    Http401,
    /// The upgrade, then the dialect's error message and a close with the `auth_failed` code:
    /// for clients (browsers) that cannot read a refused handshake's body.
    Close,
}

/// One WebSocket endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URL path (`/ws/notifications`).
    pub path: String,
    /// Wire format.
    pub dialect: DialectKind,
    /// How clients authenticate.
    pub auth: AuthConfig,
    /// Event types this endpoint delivers; empty means any.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Channel every connection receives (subject to its type selection and filters).
    #[serde(default)]
    pub broadcast_channel: String,
    /// Whether connections receive events addressed to their user.
    #[serde(default = "yes")]
    pub user_events: bool,
    /// Channels clients may subscribe to by name.
    #[serde(default)]
    pub channels: ChannelsConfig,
    /// Events clients may send (chat).
    #[serde(default)]
    pub publish: ClientPublishConfig,
    /// Per-connection and per-user limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Keep-alive and dead-peer detection.
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    /// Replay of missed persisted events on connect.
    #[serde(default)]
    pub replay: ReplayConfig,
    /// Cluster-wide online/offline tracking of this endpoint's users.
    #[serde(default)]
    pub presence: PresenceConfig,
    /// permessage-deflate (RFC 7692) for the clients that offer it.
    #[serde(default)]
    pub compression: CompressionConfig,
    /// Allowed `Origin` headers (empty: any). Protects browser clients from cross-site hijacking.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Close-code overrides by reason (`connection_limit = 4008`).
    #[serde(default)]
    pub close_codes: BTreeMap<CloseReason, u16>,
    /// Where a plain HTTP client is pointed for documentation.
    #[serde(default = "default_docs")]
    pub docs_url: String,
}

/// Authentication of an endpoint's clients: `auth = { method = "jwt", ... }`, or just
/// `auth = "jwt"` for the defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, remote = "Self")]
pub struct AuthConfig {
    /// The credential clients present.
    pub method: AuthMethod,
    /// Refuse user tokens without `exp` (tokens that would never expire).
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Longest a connection may live on one token, whatever its `exp` says; the client then
    /// reconnects with a fresh one ("0s": only the token's own expiry).
    #[serde(default = "default_max_session", with = "duration_str")]
    pub max_session: Duration,
    /// How refused credentials are answered.
    #[serde(default)]
    pub refusal: RefusalStyle,
}

impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = AuthConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a method (\"jwt\", \"api_key\", \"ticket\" or \"jwt_or_api_key\") or a table with `method`",
                )
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<AuthConfig, E> {
                use serde::de::IntoDeserializer;
                let method = AuthMethod::deserialize(s.into_deserializer())?;
                Ok(AuthConfig {
                    method,
                    require_exp: yes(),
                    max_session: default_max_session(),
                    refusal: RefusalStyle::default(),
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<AuthConfig, A::Error> {
                AuthConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(Form)
    }
}

impl Serialize for AuthConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AuthConfig::serialize(self, s)
    }
}

/// Channels clients may name.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    /// Channel name patterns clients may subscribe to (`conversation:*`); empty means none.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Patterns that require membership (or a matching JWT `channels` claim).
    #[serde(default)]
    pub member_only: Vec<String>,
    /// Channels must have been created (`PUT /v1/channels/{id}`) to be subscribed to; others
    /// are unknown (`CHANNEL_NOT_FOUND`).
    #[serde(default)]
    pub must_exist: bool,
}

/// Who receives what a client sends on a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientPublishAudience {
    /// Every listed member of the channel, on their user stream, wherever they are connected
    /// (chat messages that must reach a member's every device; the sender's own connections
    /// get messages back as their confirmation, never typing).
    #[default]
    Members,
    /// The channel's subscribers but the sender (typing in the channel a client has open).
    Subscribers,
}

/// Events clients send to a channel's members (chat).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientPublishConfig {
    /// Event types clients may send.
    #[serde(default)]
    pub types: Vec<String>,
    /// Channel patterns clients may send on (`presence`, `chat.*`); empty: any channel the
    /// endpoint lets them name.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Whether the sender's own connections receive what they send (a chat message's
    /// confirmation and copy on their other devices); never for ephemeral sends (typing).
    #[serde(default = "yes")]
    pub echo: bool,
    /// Who receives them (the sender's own connections only messages, never typing).
    #[serde(default)]
    pub to: ClientPublishAudience,
    /// Only a client subscribed to the channel may send on it (else `NOT_SUBSCRIBED`).
    #[serde(default)]
    pub require_subscription: bool,
    /// Events (other than typing) one user may send per second, cluster-wide (0: no limit).
    #[serde(default)]
    pub rate_per_user: u32,
    /// Typing indicators pass at most once per this interval per user per channel; extra ones
    /// are dropped (they are ephemeral).
    #[serde(default = "default_typing", with = "duration_str")]
    pub typing_interval: Duration,
}

impl Default for ClientPublishConfig {
    fn default() -> Self {
        ClientPublishConfig {
            types: Vec::new(),
            channels: Vec::new(),
            echo: yes(),
            to: ClientPublishAudience::default(),
            require_subscription: false,
            rate_per_user: 0,
            typing_interval: default_typing(),
        }
    }
}

/// Limits of one connection (and of one user on this endpoint).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent connections one user may hold on this endpoint, cluster-wide (0: no limit).
    /// API-key endpoints use each key's own `max_connections` instead.
    #[serde(default)]
    pub max_connections_per_user: u32,
    /// Concurrent connections per token (the same JWT), cluster-wide; 0 for no limit.
    #[serde(default)]
    pub max_connections_per_token: u32,
    /// Largest client message, bytes.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Client messages per second allowed on one connection, on average (0: no limit).
    #[serde(default)]
    pub message_rate: f64,
    /// Client messages allowed in a burst above the rate.
    #[serde(default = "default_burst")]
    pub message_burst: u32,
    /// Most subscriptions one connection may hold.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions: usize,
    /// Messages that may wait behind a socket that does not take them; a client that lets
    /// this fill is closed as a slow consumer.
    #[serde(default = "default_queue")]
    pub outbound_queue: usize,
    /// Bytes that may wait behind such a socket (the frames' payloads); past this too the
    /// client is closed as a slow consumer, so a few large events cannot hold memory either.
    #[serde(default = "default_queue_bytes")]
    pub outbound_queue_bytes: usize,
    /// Close a connection that sends nothing for this long ("0s": never).
    #[serde(default = "zero", with = "duration_str")]
    pub idle_timeout: Duration,
    /// Close a connection that has no subscription for this long ("0s": never).
    #[serde(default = "zero", with = "duration_str")]
    pub unsubscribed_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_user: 0,
            max_connections_per_token: 0,
            max_message_bytes: default_max_message(),
            message_rate: 0.0,
            message_burst: default_burst(),
            max_subscriptions: default_max_subscriptions(),
            outbound_queue: default_queue(),
            outbound_queue_bytes: default_queue_bytes(),
            idle_timeout: zero(),
            unsubscribed_timeout: zero(),
        }
    }
}

/// Heartbeats: what is sent and answered is the dialect's (WebSocket pings, or its own ping
/// message); the timing is configured here.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Time between server pings.
    #[serde(default = "default_ping", with = "duration_str")]
    pub interval: Duration,
    /// How long an answer may take.
    #[serde(default = "default_ping", with = "duration_str")]
    pub timeout: Duration,
    /// Consecutive unanswered pings before the connection is closed.
    #[serde(default = "one")]
    pub max_missed: u32,
    /// Ping only after `interval` without a client message (instead of every `interval`).
    #[serde(default)]
    pub when_idle: bool,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig { interval: default_ping(), timeout: default_ping(), max_missed: one(), when_idle: false }
    }
}

/// Replay on connect.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// Send the user's missed persisted events before live ones.
    #[serde(default)]
    pub enabled: bool,
}

/// Presence of this endpoint's users.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// A user is online while a connection of theirs to this endpoint is open anywhere.
    #[serde(default)]
    pub enabled: bool,
    /// A user's transitions (online, offline) are sent, as the dialect's presence event, to
    /// the subscribers of every channel the user is a listed member of (or of `channel`).
    #[serde(default)]
    pub announce: bool,
    /// Announce every user's transitions on this one channel (veriops `presence`) instead of
    /// the channels they are members of.
    #[serde(default)]
    pub channel: String,
}

/// permessage-deflate on an endpoint. Every message is compressed on its own (no context
/// takeover either way), so a broadcast is compressed once per node and shared, and an idle
/// connection keeps no compression state.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionConfig {
    /// Negotiate permessage-deflate with clients that offer it (browsers do).
    #[serde(default)]
    pub enabled: bool,
    /// Messages shorter than this go out uncompressed (compressing them gains little).
    #[serde(default = "default_compress_min")]
    pub min_bytes: usize,
    /// Deflate level, 1 (fastest) to 9 (smallest).
    #[serde(default = "one")]
    pub level: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig { enabled: false, min_bytes: default_compress_min(), level: one() }
    }
}

fn default_compress_min() -> usize {
    256
}

pub(super) fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn zero() -> Duration {
    Duration::ZERO
}
fn default_typing() -> Duration {
    Duration::from_secs(2)
}
fn default_burst() -> u32 {
    20
}
fn default_max_message() -> usize {
    64 * 1024
}
fn default_max_subscriptions() -> usize {
    64
}
fn default_queue() -> usize {
    1024
}
/// Twice the largest publish body, so one event always fits behind a busy socket.
fn default_queue_bytes() -> usize {
    8 << 20
}
fn default_ping() -> Duration {
    Duration::from_secs(30)
}
fn default_max_session() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_docs() -> String {
    "/playground".into()
}

/// The longest timeout or heartbeat interval an endpoint may set.
const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

impl EndpointConfig {
    /// Everything wrong with this endpoint, as sentences naming the key (`at` names the
    /// endpoint).
    pub(super) fn problems(&self, at: &str, problems: &mut Vec<String>) {
        if !self.path.starts_with('/') {
            problems.push(format!("{at}.path: must start with `/`"));
        }
        let l = &self.limits;
        if l.max_message_bytes < 128 || l.max_message_bytes > 16 << 20 {
            problems.push(format!("{at}.limits.max_message_bytes: must be between 128 and 16777216"));
        }
        if l.outbound_queue == 0 || l.outbound_queue > 1 << 20 {
            problems.push(format!("{at}.limits.outbound_queue: must be between 1 and 1048576"));
        }
        if l.outbound_queue_bytes < l.max_message_bytes.max(64 << 10) || l.outbound_queue_bytes > 1 << 30 {
            problems.push(format!(
                "{at}.limits.outbound_queue_bytes: must be at least max_message_bytes and 65536, at most 1073741824"
            ));
        }
        if !(0.0..=1_000_000.0).contains(&l.message_rate) || l.message_burst == 0 {
            problems.push(format!("{at}.limits: message_rate must be 0..=1000000 and message_burst at least 1"));
        }
        if l.max_subscriptions == 0 || l.max_subscriptions > 10_000 {
            problems.push(format!("{at}.limits.max_subscriptions: must be between 1 and 10000"));
        }
        if !(1..=9).contains(&self.compression.level) {
            problems.push(format!("{at}.compression.level: must be between 1 and 9"));
        }
        let h = &self.heartbeat;
        if h.interval.is_zero() || h.timeout.is_zero() || h.max_missed == 0 {
            problems.push(format!("{at}.heartbeat: interval and timeout must be positive, max_missed at least 1"));
        }
        // A connection keeps its deadlines as 32-bit milliseconds (49 days); these stay well inside.
        let timeouts = [
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.unsubscribed_timeout", l.unsubscribed_timeout),
            ("heartbeat.interval", h.interval),
            ("heartbeat.timeout", h.timeout),
        ];
        for (key, timeout) in timeouts {
            if timeout > MAX_TIMEOUT {
                problems.push(format!("{at}.{key}: at most 30 days"));
            }
        }
        if self.auth.method == AuthMethod::ApiKey && self.user_events {
            problems.push(format!("{at}.user_events: API-key connections have no user; set it to false"));
        }
        if self.auth.method == AuthMethod::ApiKey && self.presence.enabled {
            problems.push(format!("{at}.presence.enabled: API-key connections have no user"));
        }
        if !self.presence.channel.is_empty() && !self.presence.announce {
            problems.push(format!("{at}.presence.channel: needs presence.announce = true"));
        }
        if self.presence.announce && !self.presence.enabled {
            problems.push(format!("{at}.presence.announce: needs presence.enabled = true"));
        }
        if self.presence.announce && self.dialect.codec().presence_event("u", true, None).is_none() {
            problems.push(format!("{at}.presence.announce: the {} dialect has no presence event", self.dialect.name()));
        }
        for (reason, code) in &self.close_codes {
            if !(1000..=4999).contains(code) {
                problems.push(format!("{at}.close_codes.{}: {code} is not a valid close code", reason.name()));
            }
        }
        for t in &self.publish.types {
            if !self.event_types.is_empty() && !self.event_types.contains(t) {
                problems.push(format!("{at}.publish.types: `{t}` is not in event_types"));
            }
        }
    }
}
