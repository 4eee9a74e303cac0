//! Checks across the whole config: every problem is collected, so one `check-config` run lists
//! them all, each phrased with the key to change.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, JwtAlgorithm};

/// Paths the node serves itself.
pub const RESERVED_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/playground"];

/// Shortest secret (HS256 secret, admin key) accepted on a non-loopback address.
const MIN_SECRET_BYTES: usize = 32;

impl Config {
    /// Everything wrong with this config, as sentences naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.credential_problems(&mut problems);
        if self.jwt.algorithm != JwtAlgorithm::HS256 && self.jwt.public_key_pem.trim().is_empty() {
            problems.push(format!("jwt.public_key_pem: required for {:?}", self.jwt.algorithm));
        }
        for (key, lease) in [("quota_lease", self.quota_lease), ("presence_lease", self.presence_lease)] {
            if lease < Duration::from_secs(1) || lease > Duration::from_secs(3600) {
                problems.push(format!("{key}: must be between 1s and 1h"));
            }
        }
        self.persistence.problems(&mut problems);
        self.redis_problems(&mut problems);
        if self.tickets.ttl < Duration::from_secs(1) || self.tickets.ttl > Duration::from_secs(600) {
            problems.push("tickets.ttl: must be between 1s and 10m".into());
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
        if self.handshake_timeout < std::time::Duration::from_millis(100)
            || self.handshake_timeout > std::time::Duration::from_secs(300)
        {
            problems.push("handshake_timeout: must be between 100ms and 5m".into());
        }
        if !(1..=65_535).contains(&self.listen_backlog) {
            problems.push("listen_backlog: must be between 1 and 65535".into());
        }
        if !(0.0..=100_000.0).contains(&self.ip_limits.connects_per_second) {
            problems.push("ip_limits.connects_per_second: must be between 0 and 100000".into());
        }
        match (self.tls_cert.is_empty(), self.tls_key.is_empty()) {
            (true, true) => {}
            (false, false) => {
                if let Err(e) = crate::tls::load_pair(self.tls_cert.as_ref(), self.tls_key.as_ref()) {
                    problems.push(format!("tls_cert / tls_key: {e}"));
                }
            }
            _ => problems.push("tls_cert / tls_key: set both (TLS on) or neither".into()),
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            problems.push("trace_sample_ratio: must be between 0 and 1".into());
        }
        let mut paths = HashSet::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}] ({})", ep.path);
            ep.problems(&at, &mut problems);
            if !paths.insert(ep.path.as_str()) || ep.path == *echo || RESERVED_PATHS.contains(&ep.path.as_str()) {
                problems.push(format!("{at}.path: used twice or reserved"));
            }
        }
        problems
    }

    /// Development or guessable credentials are refused anywhere but loopback.
    fn credential_problems(&self, problems: &mut Vec<String>) {
        if is_loopback(self.listen) {
            return;
        }
        if self.uses_dev_credentials() {
            problems.push(format!(
                "listen: {} is not a loopback address, but development credentials are in use; set SWITCHBOARD_JWT_SECRET and SWITCHBOARD_ADMIN_KEY (or jwt.secret and admin_key), e.g. from `openssl rand -hex 32`",
                self.listen
            ));
            return;
        }
        if self.admin_key().len() < MIN_SECRET_BYTES {
            problems.push(format!(
                "admin_key: at least {MIN_SECRET_BYTES} bytes off loopback (listen is {}); generate one with `openssl rand -hex 32`",
                self.listen
            ));
        }
        if self.jwt.algorithm == JwtAlgorithm::HS256 && self.jwt_secret().len() < MIN_SECRET_BYTES {
            problems.push(format!(
                "jwt.secret: at least {MIN_SECRET_BYTES} bytes off loopback (listen is {}); generate one with `openssl rand -hex 32`",
                self.listen
            ));
        }
    }
}

fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEV_ADMIN_KEY;

    fn open(admin: &str, secret: &str) -> Config {
        let text = format!("listen = \"0.0.0.0:8080\"\nadmin_key = \"{admin}\"\n[jwt]\nsecret = \"{secret}\"\n");
        toml::from_str(&text).expect("parses")
    }

    #[test]
    fn weak_secrets_are_refused_off_loopback_only() {
        let strong = "0123456789abcdef0123456789abcdef";
        assert!(open(strong, strong).problems().is_empty());
        let weak = open("a", "x").problems();
        assert_eq!(weak.len(), 2, "{weak:?}");
        assert!(weak[0].starts_with("admin_key") && weak[1].starts_with("jwt.secret"), "{weak:?}");
        let dev = open(DEV_ADMIN_KEY, strong).problems();
        assert!(dev[0].contains("development credentials"), "{dev:?}");
        let mut local = open("a", "x");
        local.listen = "127.0.0.1:8080".parse().expect("an address");
        assert!(local.problems().is_empty(), "loopback is for trying things out");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = open("0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef");
        c.quota_lease = Duration::ZERO;
        c.persistence.shards = 0;
        c.diagnostics.echo_path = "echo".into();
        c.listen_backlog = 0;
        let mut endpoint = crate::connection::testing::default_config().endpoints[0].clone();
        endpoint.limits.idle_timeout = Duration::from_secs(31 * 24 * 3600);
        c.endpoints = vec![endpoint];
        let problems = c.problems();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems.iter().any(|p| p.ends_with("limits.idle_timeout: at most 30 days")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("listen_backlog")), "{problems:?}");
        assert_eq!(open("a", "x").listen_backlog, 4096, "the default queue");
    }

    #[test]
    fn several_redis_urls_without_cluster_mode_are_refused() {
        let mut c = crate::connection::testing::default_config();
        c.redis_url = "redis://a:7000, redis://b:7000,redis://c:7000".into();
        let problems = c.problems();
        assert!(problems
            .iter()
            .any(|p| p.starts_with("redis_url: 3 URLs") && p.contains("SWITCHBOARD_REDIS_CLUSTER=true")));
        c.redis_cluster = true;
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        c.redis_url = "redis://a:6379".into();
        c.redis_cluster = false;
        assert!(c.problems().is_empty());
    }
}
