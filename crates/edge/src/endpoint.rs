//! An endpoint as the running node uses it: its config plus everything derived from it once
//! (codec, type set, compiled channel patterns, close-code map), so the per-message paths
//! never re-parse config.

use std::collections::{HashMap, HashSet};

use switchboard_protocol::{CloseReason, Codec};
use wildmatch::WildMatch;

use std::sync::Arc;

use crate::config::{Config, EndpointConfig};

/// A configured endpoint, ready to serve.
pub struct EndpointRuntime {
    /// Its configuration.
    pub config: EndpointConfig,
    /// Its dialect's codec.
    pub codec: &'static dyn Codec,
    event_types: HashSet<String>,
    channels: Vec<WildMatch>,
    member_only: Vec<WildMatch>,
    close_codes: HashMap<CloseReason, u16>,
}

impl EndpointRuntime {
    /// Derives the runtime form of an endpoint config (already validated).
    pub fn new(config: EndpointConfig) -> Self {
        let close_codes = config
            .close_codes
            .iter()
            .filter_map(|(name, code)| CloseReason::from_name(name).map(|r| (r, *code)))
            .collect();
        EndpointRuntime {
            codec: config.dialect.codec(),
            event_types: config.event_types.iter().cloned().collect(),
            channels: config.channels.iter().map(|p| WildMatch::new(p)).collect(),
            member_only: config.member_only_channels.iter().map(|p| WildMatch::new(p)).collect(),
            close_codes,
            config,
        }
    }

    /// The close code for `reason` on this endpoint: config override, else the dialect's.
    pub fn close_code(&self, reason: CloseReason) -> u16 {
        self.close_codes.get(&reason).copied().unwrap_or_else(|| self.codec.close_code(reason))
    }

    /// Whether events of this type are delivered on this endpoint.
    pub fn allows_type(&self, kind: &str) -> bool {
        self.event_types.is_empty() || self.event_types.contains(kind)
    }

    /// The event types this endpoint offers, for error messages.
    pub fn type_list(&self) -> String {
        self.config.event_types.join(", ")
    }

    /// Whether clients may subscribe to this channel name at all.
    pub fn channel_allowed(&self, channel: &str) -> bool {
        self.channels.iter().any(|p| p.matches(channel))
    }

    /// Whether the channel requires membership.
    pub fn member_only(&self, channel: &str) -> bool {
        self.member_only.iter().any(|p| p.matches(channel))
    }
}

/// The diagnostic echo endpoint, when the config enables it: large messages allowed (the
/// conformance suite sends 16 MiB), a deep queue, no subscriptions.
pub fn echo_endpoint(config: &Config) -> Option<Arc<EndpointRuntime>> {
    let path = &config.diagnostics.echo_path;
    if path.is_empty() {
        return None;
    }
    let toml = format!("path = {path:?}\ndialect = \"basic\"\nauth = \"jwt\"\nuser_events = false\n");
    let mut ep: EndpointConfig = toml::from_str(&toml).ok()?;
    ep.max_message_bytes = 32 << 20;
    ep.outbound_queue = 4096;
    Some(Arc::new(EndpointRuntime::new(ep)))
}

/// Broker topic for events addressed to a user.
pub fn user_topic(user: &str) -> String {
    format!("u:{user}")
}

/// Broker topic for a channel.
pub fn channel_topic(channel: &str) -> String {
    format!("c:{channel}")
}

/// Broker set that holds a channel's members.
pub fn members_key(channel: &str) -> String {
    format!("members:{channel}")
}
