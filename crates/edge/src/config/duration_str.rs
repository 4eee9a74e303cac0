//! Durations in config files as human strings (`"30s"`, `"1500ms"`, `"2m"`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes as `humantime` text.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Parses `humantime` text, with an error that shows how to write one.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!("`{s}` is not a duration ({e}); write e.g. \"30s\" or \"500ms\""))
    })
}
