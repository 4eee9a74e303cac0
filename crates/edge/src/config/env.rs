//! The environment overlay: `SWITCHBOARD_<KEY>` overrides a key of the config file, nested keys
//! joined by `__` (`SWITCHBOARD_JWT__ISSUER=me`), plus the short forms in [`ALIASES`].
//!
//! A variable that names no key is a warning, never fatal: orchestrators inject variables of
//! their own under the same prefix. Kubernetes gives every pod "service link" variables for each
//! Service in its namespace, and a Service named `switchboard` yields `SWITCHBOARD_SERVICE_HOST`,
//! `SWITCHBOARD_PORT_8080_TCP_ADDR` and so on; those shapes are ignored without a word, anything
//! else unknown is reported once so that a typo stays visible. A variable that names a key but
//! holds a value of the wrong type is an error, as the same mistake in the file would be.

use super::ConfigError;

/// Environment variables that name a key directly, as documented in the README.
pub const ALIASES: [(&str, &str); 7] = [
    ("SWITCHBOARD_LOG", "log_level"),
    ("SWITCHBOARD_JWT_SECRET", "jwt.secret"),
    ("SWITCHBOARD_ADMIN_KEY", "admin_key"),
    ("SWITCHBOARD_REDIS_URL", "redis_url"),
    ("SWITCHBOARD_REDIS_SENTINELS", "redis_sentinel.sentinels"),
    ("SWITCHBOARD_REDIS_SENTINEL_MASTER", "redis_sentinel.master"),
    ("SWITCHBOARD_LISTEN", "listen"),
];

/// Variables with the prefix that are not config keys (read elsewhere).
const NOT_KEYS: [&str; 1] = ["SWITCHBOARD_CONFIG"];

/// Keys whose values are always strings, even when they look like numbers or booleans.
const STRING_KEYS: [&str; 8] =
    ["listen", "redis_url", "admin_key", "secret", "log_level", "master", "username", "password"];

/// Applies the `SWITCHBOARD_*` variables of `env` to `table`, in name order. `accepts` says
/// whether a table is a valid config (the caller's schema); returns the warnings (unknown
/// variables).
pub(super) fn overlay(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
    accepts: impl Fn(&toml::Table) -> Result<(), toml::de::Error>,
) -> Result<Vec<String>, ConfigError> {
    let mut vars: Vec<(String, String)> =
        env.into_iter().filter(|(name, _)| name.starts_with("SWITCHBOARD_")).collect();
    vars.sort();
    let mut warnings = Vec::new();
    for (name, value) in vars {
        let rest = &name["SWITCHBOARD_".len()..];
        if rest.is_empty() || NOT_KEYS.contains(&name.as_str()) || is_service_link(rest) {
            continue;
        }
        let path = match ALIASES.iter().find(|(n, _)| *n == name) {
            Some((_, p)) => p.to_string(),
            None => rest.to_ascii_lowercase().replace("__", "."),
        };
        let mut candidate = table.clone();
        if !insert(&mut candidate, &path, &value) {
            warnings.push(unknown(&name, &path));
            continue;
        }
        match accepts(&candidate) {
            Ok(()) => *table = candidate,
            Err(e) if e.message().contains("unknown field") => warnings.push(unknown(&name, &path)),
            Err(e) => {
                return Err(ConfigError::Parse {
                    origin: format!("environment variable {name}"),
                    message: e.message().trim().to_owned(),
                })
            }
        }
    }
    Ok(warnings)
}

fn unknown(name: &str, path: &str) -> String {
    format!("environment variable {name} names no config key (`{path}`); it is ignored")
}

/// Puts `value` at the dotted `path`, creating tables on the way; false when the path runs
/// through a key that is not a table.
fn insert(table: &mut toml::Table, path: &str, value: &str) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    let Some((leaf, parents)) = segments.split_last() else { return false };
    let mut node = table;
    for seg in parents {
        let entry = node.entry(seg.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = match entry {
            toml::Value::Table(t) => t,
            _ => return false,
        };
    }
    node.insert(leaf.to_string(), typed(leaf, value));
    true
}

/// A value that parses as TOML (a number, a boolean, an array) keeps its type; anything else,
/// and every string-only key, is a string. Type mistakes surface when the table is checked.
fn typed(key: &str, value: &str) -> toml::Value {
    if STRING_KEYS.contains(&key) {
        return toml::Value::String(value.to_owned());
    }
    match toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut t| t.remove("v")) {
        Some(
            v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) | toml::Value::Array(_)),
        ) => v,
        _ => toml::Value::String(value.to_owned()),
    }
}

/// Whether the part after `SWITCHBOARD_` has the shape of a Kubernetes service-link variable:
/// `[<NAME>_]SERVICE_HOST`, `[<NAME>_]SERVICE_PORT[_<PORT NAME>]`, `[<NAME>_]PORT`,
/// `[<NAME>_]PORT_<n>_<TCP|UDP|SCTP>[_ADDR|_PORT|_PROTO]`.
pub(super) fn is_service_link(rest: &str) -> bool {
    let words: Vec<&str> = rest.split('_').collect();
    let proto = |w: &str| matches!(w, "TCP" | "UDP" | "SCTP");
    let number = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
    words.ends_with(&["SERVICE", "HOST"])
        || words.windows(2).any(|w| w == ["SERVICE", "PORT"])
        || words.last() == Some(&"PORT")
        || words.windows(3).any(|w| w[0] == "PORT" && number(w[1]) && proto(w[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_service_links_are_recognised() {
        for rest in [
            "SERVICE_HOST",
            "SERVICE_PORT",
            "SERVICE_PORT_HTTP",
            "PORT",
            "PORT_8080_TCP",
            "PORT_8080_TCP_ADDR",
            "PORT_8080_TCP_PORT",
            "PORT_8080_TCP_PROTO",
            "EDGE_SERVICE_HOST",
            "EDGE_PORT_9090_UDP_ADDR",
        ] {
            assert!(is_service_link(rest), "{rest}");
        }
        for rest in ["LISTEN", "REDIS_URL", "JWT__SECRET", "DRAIN_WINDOW", "PORTAL", "SERVICE"] {
            assert!(!is_service_link(rest), "{rest}");
        }
    }
}
