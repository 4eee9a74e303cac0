//! Configuration: one TOML file, overridable by `SWITCHBOARD_...` environment variables and
//! flags, validated once at start-up and then passed down as data.
//!
//! One file per concern: the top-level schema here, [`endpoint`] (an endpoint's groups),
//! [`jwt`], [`persistence`], the environment overlay in [`env`], cross-checks in [`validate`].
//! The built-in default (`switchboard serve` without `--config`) is `deploy/examples/all.toml`,
//! compiled in, so the shipped example and the default can never drift apart.

pub mod endpoint;
mod env;
pub mod jwt;
pub mod persistence;
pub mod redis;
mod validate;

pub(crate) mod duration_str;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use endpoint::{
    AuthConfig, AuthMethod, ChannelsConfig, ClientPublishAudience, ClientPublishConfig, EndpointConfig,
    HeartbeatConfig, LimitsConfig, PresenceConfig, RefusalStyle, ReplayConfig,
};
pub use env::ALIASES as ENV_ALIASES;
pub use jwt::{JwtAlgorithm, JwtConfig};
pub use persistence::PersistenceConfig;
pub use redis::{BrokerKind, SentinelConfig};
pub use switchboard_protocol::token::{DEV_ADMIN_KEY, DEV_JWT_SECRET};
pub use validate::RESERVED_PATHS;

/// The example config with every endpoint; also the built-in default.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../../deploy/examples/all.toml");

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
    /// The master of a Redis Sentinel group, found and followed through the sentinels,
    /// instead of `redis_url`.
    #[serde(default)]
    pub redis_sentinel: SentinelConfig,
    /// PEM certificate chain for TLS on the listener (`wss://`, `https://`), with `tls_key`;
    /// both empty: plain TCP (TLS ends at a proxy or ingress, if anywhere). Reloaded when the
    /// files change.
    #[serde(default)]
    pub tls_cert: String,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: String,
    /// Bearer key of the admin and publish API; empty means the development key.
    #[serde(default)]
    pub admin_key: String,
    /// Bearer token `/metrics` requires (Prometheus' `authorization` / `bearer_token_file`);
    /// empty: `/metrics` is open, as on a private scrape network.
    #[serde(default)]
    pub metrics_token: String,
    /// OTLP/HTTP collector for traces (`http://collector:4318`); empty: the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` if set, else tracing is off (at no cost).
    #[serde(default)]
    pub otlp_endpoint: String,
    /// Share of new traces kept (0 to 1); a request's sampled `traceparent` is always followed.
    #[serde(default = "default_sample_ratio")]
    pub trace_sample_ratio: f64,
    /// Log filter (`info`, `switchboard_edge=debug`, ...); `SWITCHBOARD_LOG`, else `RUST_LOG`,
    /// override it.
    #[serde(default = "default_log")]
    pub log_level: String,
    /// `text` (a line per event, for people) or `json` (one JSON object per line, for log
    /// collectors).
    #[serde(default)]
    pub log_format: LogFormat,
    /// JWT verification settings shared by every JWT endpoint.
    #[serde(default)]
    pub jwt: JwtConfig,
    /// Diagnostic endpoints, off by default.
    #[serde(default)]
    pub diagnostics: DiagnosticsConfig,
    /// How long a graceful drain may take.
    #[serde(default = "default_drain", with = "duration_str")]
    pub drain_window: Duration,
    /// How long a client may take to send its HTTP request head (a WebSocket handshake);
    /// a peer that connects and sends nothing, or half a request, is dropped after it.
    #[serde(default = "default_handshake_timeout", with = "duration_str")]
    pub handshake_timeout: Duration,
    /// Connections the kernel queues until the node accepts them (the listen backlog; the
    /// kernel caps it at `net.core.somaxconn`). When a node dies its clients come back to the
    /// others within a second or two: a connect a short queue drops waits for the client's
    /// retransmit, 1 s, then 3 s, then 7 s later.
    #[serde(default = "default_listen_backlog")]
    pub listen_backlog: u32,
    /// Per-address limits at the TCP accept (off by default).
    #[serde(default)]
    pub ip_limits: IpLimitsConfig,
    /// Concurrent connections one user may hold across all endpoints of the cluster
    /// (0: no limit).
    #[serde(default)]
    pub max_connections_per_user: u32,
    /// Lifetime of a connection-quota slot; slots are renewed while the connection lives, so
    /// this bounds how long a crashed node's slots stay taken.
    #[serde(default = "default_quota_lease", with = "duration_str")]
    pub quota_lease: Duration,
    /// Lifetime of a connection's presence entry, renewed like quota slots: a crashed node's
    /// users go offline within this time.
    #[serde(default = "default_quota_lease", with = "duration_str")]
    pub presence_lease: Duration,
    /// Persistence of user-addressed events for replay.
    #[serde(default)]
    pub persistence: PersistenceConfig,
    /// Single-use connect tickets (endpoints with `auth = "ticket"`).
    #[serde(default)]
    pub tickets: TicketsConfig,
    /// API keys defined in the file (stored as SHA-256 hashes, never in plain text).
    #[serde(default)]
    pub api_keys: Vec<ConfiguredApiKey>,
    /// The WebSocket endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

/// Per-IP admission: at most `max_connections` open connections per client address, and new
/// ones at `connects_per_second` after a burst of `connect_burst` (0: that limit is off).
/// Leave both off behind a proxy or load balancer that does not preserve client addresses:
/// every client would share its address.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IpLimitsConfig {
    /// Most open connections (HTTP and WebSocket) from one address; 0: no limit.
    #[serde(default)]
    pub max_connections: u32,
    /// New connections per second from one address, after the burst; 0: no limit.
    #[serde(default)]
    pub connects_per_second: f64,
    /// New connections one address may open at once.
    #[serde(default = "default_connect_burst")]
    pub connect_burst: u32,
}

impl Default for IpLimitsConfig {
    fn default() -> Self {
        IpLimitsConfig { max_connections: 0, connects_per_second: 0.0, connect_burst: default_connect_burst() }
    }
}

fn default_connect_burst() -> u32 {
    20
}
fn default_listen_backlog() -> u32 {
    4096
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`.
    Json,
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

/// Connect tickets: `POST /v1/auth/ws-ticket` exchanges a user JWT for a ticket that opens one
/// connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TicketsConfig {
    /// How long an unredeemed ticket stays valid.
    #[serde(default = "default_ticket_ttl", with = "duration_str")]
    pub ttl: Duration,
    /// Tickets one user may be issued per second, cluster-wide (0: no limit).
    #[serde(default = "default_ticket_rate")]
    pub rate_per_user: u32,
}

impl Default for TicketsConfig {
    fn default() -> Self {
        TicketsConfig { ttl: default_ticket_ttl(), rate_per_user: default_ticket_rate() }
    }
}

fn default_ticket_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_ticket_rate() -> u32 {
    10
}
fn default_sample_ratio() -> f64 {
    1.0
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

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_log() -> String {
    "info".into()
}
fn default_drain() -> Duration {
    Duration::from_secs(10)
}
fn default_quota_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_key_connections() -> u32 {
    2
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
        /// File name or environment variable.
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

/// A config as loaded, with what deserves a warning but does not stop the node.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// Where it came from (the file, or the built-in default).
    pub origin: String,
    /// Environment variables with the prefix that name no key (ignored).
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads a config file (or the built-in default when `path` is `None`), then applies
    /// environment overrides from `env`, then validates.
    pub fn load(path: Option<&str>, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
        let (origin, text) = match path {
            Some(p) => (
                p.to_owned(),
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.to_owned(), source })?,
            ),
            None => ("built-in default config".to_owned(), DEFAULT_CONFIG_TOML.to_owned()),
        };
        Self::load_text(&text, origin, env)
    }

    /// Like [`Config::load`], for config text that came from `origin` (a file name, for errors).
    pub fn load_text(
        text: &str,
        origin: String,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        // Parse the file on its own first so that errors point at its lines and keys.
        toml::from_str::<Config>(text)
            .map_err(|e| ConfigError::Parse { origin: origin.clone(), message: e.to_string() })?;
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Parse { origin: origin.clone(), message: e.to_string() })?;
        let warnings = env::overlay(&mut table, env, |t| t.clone().try_into::<Config>().map(|_| ()))?;
        let config: Config = table.try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            origin: "environment overrides".into(),
            message: e.message().to_owned(),
        })?;
        config.validated(&origin).map(|config| Loaded { config, origin, warnings })
    }

    /// Parses and validates a config given as text (tests, embedding).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse { origin: "config".into(), message: e.to_string() })?;
        config.validated("config")
    }

    fn validated(self, origin: &str) -> Result<Config, ConfigError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError::Invalid { origin: origin.to_owned(), problems })
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
        self.admin_key() == DEV_ADMIN_KEY || self.uses_dev_jwt_secret()
    }

    /// Whether user tokens are checked against the public development secret (anyone can mint
    /// them, so the playground may too).
    pub fn uses_dev_jwt_secret(&self) -> bool {
        self.jwt.algorithm == JwtAlgorithm::HS256 && self.jwt_secret() == DEV_JWT_SECRET
    }

    /// The endpoint at `path`, if configured.
    pub fn endpoint(&self, path: &str) -> Option<&EndpointConfig> {
        self.endpoints.iter().find(|e| e.path == path)
    }

    /// The endpoint at `path`, for tests and tools that adjust one preset.
    pub fn endpoint_mut(&mut self, path: &str) -> Option<&mut EndpointConfig> {
        self.endpoints.iter_mut().find(|e| e.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_default_config_is_valid_and_has_the_documented_endpoints() {
        let c = Config::load(None, Vec::new()).unwrap().config;
        let paths: Vec<&str> = c.endpoints.iter().map(|e| e.path.as_str()).collect();
        for p in ["/ws/notifications", "/ws/chat", "/ws/threats", "/ws", "/v1/ws", "/api/v2/realtime", "/realtime"] {
            assert!(paths.contains(&p), "{p} missing from the default config");
        }
        assert_eq!(c.listen, default_listen());
    }

    #[test]
    fn every_per_dialect_preset_holds_the_same_endpoints_as_all_toml() {
        let all = Config::from_toml(DEFAULT_CONFIG_TOML).expect("all.toml");
        let presets = [
            include_str!("../../../../deploy/examples/orbnet.toml"),
            include_str!("../../../../deploy/examples/basic.toml"),
            include_str!("../../../../deploy/examples/ocvr.toml"),
            include_str!("../../../../deploy/examples/brl.toml"),
            include_str!("../../../../deploy/examples/veriops.toml"),
        ];
        let mut covered = 0;
        for text in presets {
            let preset = Config::from_toml(text).expect("a valid preset");
            for ep in &preset.endpoints {
                let same = all.endpoint(&ep.path).expect("in all.toml");
                let as_toml = |e: &EndpointConfig| toml::Value::try_from(e).expect("serializes");
                assert_eq!(as_toml(ep), as_toml(same), "{} differs from all.toml", ep.path);
                covered += 1;
            }
        }
        assert_eq!(covered, all.endpoints.len(), "every endpoint of all.toml is in one preset");
    }

    #[test]
    fn environment_overrides_the_file() {
        let vars = env(&[
            ("SWITCHBOARD_JWT_SECRET", "s3cret"),
            ("SWITCHBOARD_LISTEN", "127.0.0.1:9999"),
            ("SWITCHBOARD_DRAIN_WINDOW", "3s"),
            ("SWITCHBOARD_JWT__ISSUER", "me"),
            ("OTHER", "x"),
        ]);
        let loaded = Config::load(None, vars).unwrap();
        let c = loaded.config;
        assert_eq!(c.jwt.secret, "s3cret");
        assert_eq!(c.jwt.issuer, "me");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.drain_window, Duration::from_secs(3));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn unknown_variables_are_warnings_and_service_links_are_silent() {
        let vars = env(&[
            ("SWITCHBOARD_SERVICE_HOST", "10.0.0.1"),
            ("SWITCHBOARD_SERVICE_PORT", "8080"),
            ("SWITCHBOARD_PORT", "tcp://10.0.0.1:8080"),
            ("SWITCHBOARD_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ("SWITCHBOARD_DRAIN_WINDOWW", "3s"),
            ("SWITCHBOARD_JWT__ISSUR", "me"),
            ("SWITCHBOARD_LISTEN__HOST", "x"),
        ]);
        let loaded = Config::load(None, vars).expect("unknown variables are not fatal");
        assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("SWITCHBOARD_DRAIN_WINDOWW"), "{:?}", loaded.warnings);
    }

    #[test]
    fn a_known_variable_with_a_bad_value_is_an_error_naming_it() {
        let err = Config::load(None, env(&[("SWITCHBOARD_DRAIN_WINDOW", "soon")])).unwrap_err().to_string();
        assert!(err.contains("SWITCHBOARD_DRAIN_WINDOW") && err.contains("soon"), "{err}");
    }

    #[test]
    fn auth_is_a_method_name_or_a_table() {
        let endpoint = |auth: &str| format!("[[endpoints]]\npath = \"/x\"\ndialect = \"basic\"\nauth = {auth}\n");
        let short = Config::from_toml(&endpoint("\"jwt\"")).expect("shorthand");
        assert!(short.endpoints[0].auth.require_exp);
        let long = Config::from_toml(&endpoint("{ method = \"jwt\", require_exp = false }")).expect("table");
        assert!(!long.endpoints[0].auth.require_exp);
        let err = Config::from_toml(&endpoint("{ method = \"jwt\", requir_exp = false }")).unwrap_err().to_string();
        assert!(err.contains("requir_exp") && err.contains("line 4"), "{err}");
        let err = Config::from_toml(&endpoint("\"password\"")).unwrap_err().to_string();
        assert!(err.contains("password") && err.contains("api_key"), "{err}");
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let err = Config::from_toml("listen = \"127.0.0.1:1\"\n[jwt]\nalgoritm = \"HS256\"\n").unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("algoritm"), "{err}");
        let err = Config::from_toml("[jwt]\nalgorithm = \"HS512\"\n").unwrap_err().to_string();
        assert!(err.contains("HS512") && err.contains("HS256"), "{err}");
        let err = Config::from_toml("listen = \"0.0.0.0:80\"\n").unwrap_err().to_string();
        assert!(err.contains("development credentials"), "{err}");
    }
}
