//! Configuration: one TOML file, overridable by `SWITCHBOARD_...` environment variables and
//! flags, validated once at start-up and then passed down as data.
//!
//! The built-in default (`switchboard serve` without `--config`) is `deploy/examples/all.toml`,
//! compiled in, so the shipped example and the default can never drift apart.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use switchboard_protocol::{CloseReason, DialectKind};

/// The example config with every endpoint; also the built-in default.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../deploy/examples/all.toml");

/// Development JWT secret used when none is configured; refused on non-loopback addresses.
pub const DEV_JWT_SECRET: &str = "switchboard-dev-secret-do-not-use-in-production";
/// Development admin key used when none is configured; refused on non-loopback addresses.
pub const DEV_ADMIN_KEY: &str = "switchboard-dev-admin-key";

/// The whole node configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP/WebSocket server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Redis URL; empty means the in-process broker. For a Redis Cluster, several seed URLs
    /// separated by commas, with `redis_cluster = true`.
    #[serde(default)]
    pub redis_url: String,
    /// Whether `redis_url` names a Redis Cluster (sharded pub/sub, slot routing).
    #[serde(default)]
    pub redis_cluster: bool,
    /// Bearer key of the admin and publish API; empty means the development key.
    #[serde(default)]
    pub admin_key: String,
    /// Log filter (`info`, `switchboard_edge=debug`, ...).
    #[serde(default = "default_log")]
    pub log_level: String,
    /// JWT verification settings shared by every JWT endpoint.
    #[serde(default)]
    pub jwt: JwtConfig,
    /// Diagnostic endpoints, off by default.
    #[serde(default)]
    pub diagnostics: DiagnosticsConfig,
    /// How long a graceful drain may take.
    #[serde(default = "default_drain", with = "duration_str")]
    pub drain_window: Duration,
    /// Concurrent connections one user may hold across all endpoints of the cluster
    /// (0: no limit).
    #[serde(default)]
    pub max_connections_per_user: u32,
    /// Lifetime of a connection-quota slot; slots are renewed while the connection lives, so
    /// this bounds how long a crashed node's slots stay taken.
    #[serde(default = "default_quota_lease", with = "duration_str")]
    pub quota_lease: Duration,
    /// Persistence of user-addressed events for replay.
    #[serde(default)]
    pub persistence: PersistenceConfig,
    /// API keys defined in the file (stored as SHA-256 hashes, never in plain text).
    #[serde(default)]
    pub api_keys: Vec<ConfiguredApiKey>,
    /// The WebSocket endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

/// JWT verification.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256`, `RS256` or `ES256`.
    #[serde(default = "default_alg")]
    pub algorithm: String,
    /// HS256 secret; empty means the development secret.
    #[serde(default)]
    pub secret: String,
    /// PEM public key (inline) for RS256/ES256.
    #[serde(default)]
    pub public_key_pem: String,
    /// Required `iss`, if set.
    #[serde(default)]
    pub issuer: String,
    /// Required `aud`, if set.
    #[serde(default)]
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "duration_str")]
    pub leeway: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithm: default_alg(),
            secret: String::new(),
            public_key_pem: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: default_leeway(),
        }
    }
}

/// Which events are kept for replay, and how the persistence worker runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    /// User-addressed events of these types are persisted unless the publisher says
    /// `"persist": false`; other events only if it says `"persist": true`.
    #[serde(default = "default_persist_types")]
    pub types: Vec<String>,
    /// How long a user's events are kept for replay.
    #[serde(default = "default_retention", with = "duration_str")]
    pub retention: Duration,
    /// Most events replayed on one reconnect.
    #[serde(default = "default_replay_limit")]
    pub replay_limit: usize,
    /// Ingest log shards; each is processed by one worker at a time, in order.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// A dead worker's shards are taken over within this time.
    #[serde(default = "default_worker_lease", with = "duration_str")]
    pub worker_lease: Duration,
    /// How often an idle worker looks at its shards anyway. Publishes through an edge wake
    /// the workers at once; this catches entries written to the ingest log by other means.
    #[serde(default = "default_idle_poll", with = "duration_str")]
    pub idle_poll: Duration,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        PersistenceConfig {
            types: default_persist_types(),
            retention: default_retention(),
            replay_limit: default_replay_limit(),
            shards: default_shards(),
            worker_lease: default_worker_lease(),
            idle_poll: default_idle_poll(),
        }
    }
}

fn default_persist_types() -> Vec<String> {
    ["notification", "subscription_update", "device_status", "server_alert"].map(String::from).to_vec()
}
fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_replay_limit() -> usize {
    100
}
fn default_shards() -> u32 {
    4
}
fn default_worker_lease() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_poll() -> Duration {
    Duration::from_millis(100)
}

/// Diagnostic endpoints.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsConfig {
    /// Path of an unauthenticated WebSocket echo endpoint for RFC 6455 conformance runs
    /// (Autobahn); empty disables it. Never enable it in production.
    #[serde(default)]
    pub echo_path: String,
}

/// An API key defined in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfiguredApiKey {
    /// Name shown in logs and used to delete it.
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Endpoint paths it may connect to (empty: every API-key endpoint).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Concurrent connections allowed with this key.
    #[serde(default = "default_key_connections")]
    pub max_connections: u32,
}

/// How clients of an endpoint authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// JWT in `?token=` or `Authorization: Bearer`.
    Jwt,
    /// API key in `X-API-Key` or `?api_key=`.
    ApiKey,
}

/// One WebSocket endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// URL path (`/ws/notifications`).
    pub path: String,
    /// Wire format.
    pub dialect: DialectKind,
    /// Authentication method.
    pub auth: AuthMethod,
    /// Event types this endpoint delivers (orbnet `channels`); empty means any.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Event types clients may send to a conversation (orbnet chat).
    #[serde(default)]
    pub client_publish_types: Vec<String>,
    /// Channel every connection receives (subject to its type selection and filters).
    #[serde(default)]
    pub broadcast_channel: String,
    /// Whether connections receive events addressed to their user.
    #[serde(default = "yes")]
    pub user_events: bool,
    /// Channel name patterns clients may subscribe to (`conversation:*`); empty means none.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Channel patterns that require membership (or a matching JWT `channels` claim).
    #[serde(default)]
    pub member_only_channels: Vec<String>,
    /// Largest client message, bytes.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    /// Concurrent connections one user may hold on this endpoint, cluster-wide (0: no limit).
    /// API-key endpoints use each key's own `max_connections` instead.
    #[serde(default)]
    pub max_connections_per_user: u32,
    /// Client messages per second allowed on one connection, on average (0: no limit).
    #[serde(default)]
    pub message_rate: f64,
    /// Client messages allowed in a burst above the rate.
    #[serde(default = "default_burst")]
    pub message_burst: u32,
    /// Client-published events (chat messages) one user may send per second, cluster-wide
    /// (0: no limit).
    #[serde(default)]
    pub publish_rate_per_user: u32,
    /// Typing indicators pass at most once per this interval per user per channel; extra
    /// ones are dropped (they are ephemeral).
    #[serde(default = "default_typing", with = "duration_str")]
    pub typing_interval: Duration,
    /// Close a connection that sends nothing for this long ("0s": never).
    #[serde(default = "zero", with = "duration_str")]
    pub idle_timeout: Duration,
    /// Close a connection that has no subscription for this long ("0s": never).
    #[serde(default = "zero", with = "duration_str")]
    pub unsubscribed_timeout: Duration,
    /// Replay the user's missed persisted events on connect (orbnet notifications).
    #[serde(default)]
    pub replay: bool,
    /// Most channels one connection may subscribe to.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions: usize,
    /// Outbound queue length per connection; a client that lets it fill is closed.
    #[serde(default = "default_queue")]
    pub outbound_queue: usize,
    /// Interval between server WebSocket pings.
    #[serde(default = "default_ping", with = "duration_str")]
    pub ping_interval: Duration,
    /// How long a pong may take before the connection is closed.
    #[serde(default = "default_ping", with = "duration_str")]
    pub pong_timeout: Duration,
    /// Consecutive unanswered pings before the connection is closed (orbnet: 1).
    #[serde(default = "one")]
    pub max_missed_pongs: u32,
    /// Allowed `Origin` headers (empty: any). Protects browser clients from cross-site hijacking.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Close-code overrides by reason name (`connection_limit = 4008`).
    #[serde(default)]
    pub close_codes: BTreeMap<String, u16>,
    /// Where a plain HTTP client is pointed for documentation.
    #[serde(default = "default_docs")]
    pub docs_url: String,
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_log() -> String {
    "info".into()
}
fn default_alg() -> String {
    "HS256".into()
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_drain() -> Duration {
    Duration::from_secs(10)
}
fn one() -> u32 {
    1
}
fn default_typing() -> Duration {
    Duration::from_secs(2)
}
fn zero() -> Duration {
    Duration::ZERO
}
fn default_quota_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_burst() -> u32 {
    20
}
fn default_key_connections() -> u32 {
    2
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
fn default_ping() -> Duration {
    Duration::from_secs(30)
}
fn default_docs() -> String {
    "/playground".into()
}

/// Durations as human strings (`"30s"`, `"1500ms"`, `"2m"`).
mod duration_str {
    use super::*;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("`{s}` is not a duration ({e}); write e.g. \"30s\" or \"500ms\""))
        })
    }
}

/// A configuration problem, phrased for the person editing the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is invalid or a key has the wrong type or name.
    #[error("{origin}: {message}")]
    Parse {
        /// File name or `environment`.
        origin: String,
        /// The parser's message, with line and key.
        message: String,
    },
    /// The values parse but do not make sense together.
    #[error("{origin}: {}", problems.join("\n  "))]
    Invalid {
        /// File name.
        origin: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}

/// Environment variables that name a key directly, as documented in the README.
const ENV_ALIASES: [(&str, &str); 5] = [
    ("SWITCHBOARD_LOG", "log_level"),
    ("SWITCHBOARD_JWT_SECRET", "jwt.secret"),
    ("SWITCHBOARD_ADMIN_KEY", "admin_key"),
    ("SWITCHBOARD_REDIS_URL", "redis_url"),
    ("SWITCHBOARD_LISTEN", "listen"),
];

impl Config {
    /// Loads a config file (or the built-in default when `path` is `None`), then applies
    /// environment overrides from `env`, then validates.
    pub fn load(path: Option<&str>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.to_owned(),
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.to_owned(), source })?,
            ),
            None => ("built-in default config".to_owned(), DEFAULT_CONFIG_TOML.to_owned()),
        };
        // Parse the file on its own first so that errors point at its lines and keys.
        toml::from_str::<Config>(&text)
            .map_err(|e| ConfigError::Parse { origin: origin.clone(), message: e.to_string() })?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { origin: origin.clone(), message: e.to_string() })?;
        apply_env(&mut table, env)?;
        let config: Config = table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: "environment overrides".into(),
            message: e.to_string(),
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { origin, problems })
        }
    }

    /// Parses and validates a config given as text (tests, embedding).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { origin: "config".into(), message: e.to_string() })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid { origin: "config".into(), problems })
        }
    }

    /// The JWT secret in effect (the development one when none is set).
    pub fn jwt_secret(&self) -> &str {
        if self.jwt.secret.is_empty() {
            DEV_JWT_SECRET
        } else {
            &self.jwt.secret
        }
    }

    /// The admin key in effect (the development one when none is set).
    pub fn admin_key(&self) -> &str {
        if self.admin_key.is_empty() {
            DEV_ADMIN_KEY
        } else {
            &self.admin_key
        }
    }

    /// Whether development credentials are in use.
    pub fn uses_dev_credentials(&self) -> bool {
        self.admin_key.is_empty() || (self.jwt.algorithm == "HS256" && self.jwt.secret.is_empty())
    }

    /// Everything wrong with this config, as sentences naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !["HS256", "RS256", "ES256"].contains(&self.jwt.algorithm.as_str()) {
            problems.push(format!("jwt.algorithm: `{}` is not one of HS256, RS256, ES256", self.jwt.algorithm));
        }
        if self.jwt.algorithm != "HS256" && self.jwt.public_key_pem.trim().is_empty() {
            problems.push(format!("jwt.public_key_pem: required for {}", self.jwt.algorithm));
        }
        if self.uses_dev_credentials() && !self.listen.ip().is_loopback() {
            problems.push(format!(
                "listen: {} is not a loopback address, but development credentials are in use; set SWITCHBOARD_JWT_SECRET and SWITCHBOARD_ADMIN_KEY (or jwt.secret and admin_key)",
                self.listen
            ));
        }
        if self.quota_lease < Duration::from_secs(1) || self.quota_lease > Duration::from_secs(3600) {
            problems.push("quota_lease: must be between 1s and 1h".to_string());
        }
        let p = &self.persistence;
        if p.shards == 0 || p.shards > 1024 {
            problems.push("persistence.shards: must be between 1 and 1024".to_string());
        }
        if p.replay_limit == 0 || p.replay_limit > 10_000 {
            problems.push("persistence.replay_limit: must be between 1 and 10000".to_string());
        }
        if p.worker_lease < Duration::from_secs(1) {
            problems.push("persistence.worker_lease: must be at least 1s".to_string());
        }
        if p.idle_poll < Duration::from_millis(1) {
            problems.push("persistence.idle_poll: must be at least 1ms".to_string());
        }
        let echo = &self.diagnostics.echo_path;
        if !echo.is_empty() && !echo.starts_with('/') {
            problems.push(format!("diagnostics.echo_path: `{echo}` must start with `/`"));
        }
        for key in &self.api_keys {
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!("api_keys `{}`: sha256 must be 64 hex digits", key.name));
            }
        }
        let mut paths = HashSet::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}] ({})", ep.path);
            if !ep.path.starts_with('/') {
                problems.push(format!("{at}.path: must start with `/`"));
            }
            if !paths.insert(ep.path.as_str()) || ep.path == *echo || RESERVED_PATHS.contains(&ep.path.as_str()) {
                problems.push(format!("{at}.path: used twice or reserved"));
            }
            if ep.max_message_bytes < 128 || ep.max_message_bytes > 16 << 20 {
                problems.push(format!("{at}.max_message_bytes: must be between 128 and 16777216"));
            }
            if ep.outbound_queue == 0 || ep.outbound_queue > 1 << 20 {
                problems.push(format!("{at}.outbound_queue: must be between 1 and 1048576"));
            }
            if !(0.0..=1_000_000.0).contains(&ep.message_rate) || ep.message_burst == 0 {
                problems.push(format!("{at}: message_rate must be 0..=1000000 and message_burst at least 1"));
            }
            if ep.ping_interval.is_zero() || ep.pong_timeout.is_zero() {
                problems.push(format!("{at}: ping_interval and pong_timeout must be positive"));
            }
            if ep.auth == AuthMethod::ApiKey && ep.user_events {
                problems.push(format!("{at}.user_events: API-key connections have no user; set it to false"));
            }
            for name in ep.close_codes.keys() {
                if CloseReason::from_name(name).is_none() {
                    let known: Vec<&str> = CloseReason::ALL.iter().map(|r| r.name()).collect();
                    problems.push(format!("{at}.close_codes.{name}: unknown reason; known: {}", known.join(", ")));
                }
            }
            for (name, code) in &ep.close_codes {
                if !(1000..=4999).contains(code) {
                    problems.push(format!("{at}.close_codes.{name}: {code} is not a valid close code"));
                }
            }
            for t in &ep.client_publish_types {
                if !ep.event_types.is_empty() && !ep.event_types.contains(t) {
                    problems.push(format!("{at}.client_publish_types: `{t}` is not in event_types"));
                }
            }
        }
        problems
    }
}

/// Paths the node serves itself.
pub const RESERVED_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/playground"];

fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("SWITCHBOARD_") else {
            continue;
        };
        if rest == "CONFIG" || rest.is_empty() {
            continue;
        }
        let path = match ENV_ALIASES.iter().find(|(n, _)| *n == name) {
            Some((_, p)) => p.to_string(),
            None => rest.to_ascii_lowercase().replace("__", "."),
        };
        // A value that parses as TOML (a number, a boolean, an array) keeps its type;
        // anything else is a string.
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let parsed = match parsed {
            toml::Value::String(_)
            | toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
            | toml::Value::Array(_) => parsed,
            _ => toml::Value::String(value.clone()),
        };
        let mut node = &mut *table;
        let segments: Vec<&str> = path.split('.').collect();
        for seg in &segments[..segments.len() - 1] {
            let entry = node.entry(seg.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            node = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(ConfigError::Parse {
                        origin: "environment".into(),
                        message: format!("{name}: `{seg}` is not a table in the config"),
                    })
                }
            };
        }
        // Keys the file leaves to defaults are still overridable; the string/number typing is
        // checked when the table is deserialized.
        let leaf = segments[segments.len() - 1].to_string();
        let value = match (&parsed, leaf.as_str()) {
            // Listen addresses and URLs are always strings, even if they look like numbers.
            (_, "listen" | "redis_url" | "admin_key" | "secret" | "log_level") => toml::Value::String(value.clone()),
            _ => parsed,
        };
        node.insert(leaf, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid_and_has_the_documented_endpoints() {
        let c = Config::load(None, Vec::new()).unwrap();
        let paths: Vec<&str> = c.endpoints.iter().map(|e| e.path.as_str()).collect();
        for p in ["/ws/notifications", "/ws/chat", "/ws/threats", "/ws"] {
            assert!(paths.contains(&p), "{p} missing from the default config");
        }
        assert_eq!(c.listen, default_listen());
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            ("SWITCHBOARD_JWT_SECRET".to_string(), "s3cret".to_string()),
            ("SWITCHBOARD_LISTEN".to_string(), "127.0.0.1:9999".to_string()),
            ("SWITCHBOARD_DRAIN_WINDOW".to_string(), "3s".to_string()),
            ("OTHER".to_string(), "x".to_string()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.jwt.secret, "s3cret");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.drain_window, Duration::from_secs(3));
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\n[jwt]\nalgoritm = \"HS256\"\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("algoritm"), "{err}");
        let err = Config::from_toml("listen = \"0.0.0.0:80\"\n").unwrap_err().to_string();
        assert!(err.contains("development credentials"), "{err}");
    }
}
