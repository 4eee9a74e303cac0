//! An endpoint as the running node uses it: its config plus everything derived from it once
//! (codec, type set, compiled channel patterns, heartbeat policy, broadcast topic), so the
//! per-message paths never re-parse config.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::keyspace::{channel_topic, is_user_topic};
use switchboard_protocol::{CloseReason, Codec, HeartbeatStyle};
use wildmatch::WildMatch;

use crate::config::{AuthConfig, AuthMethod, ClientPublishAudience, Config, EndpointConfig, LimitsConfig};

/// A configured endpoint, ready to serve.
pub struct EndpointRuntime {
    /// Its configuration.
    pub config: EndpointConfig,
    /// Its dialect's codec.
    pub codec: &'static dyn Codec,
    /// How its connections are kept alive.
    pub heartbeat: Heartbeat,
    event_types: HashSet<String>,
    channels: Vec<WildMatch>,
    member_only: Vec<WildMatch>,
    publish_channels: Vec<WildMatch>,
    broadcast_topic: Option<String>,
    member_events: bool,
}

/// An endpoint's heartbeat: the dialect's style with the endpoint's timing.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// What is sent and what answers it.
    pub style: HeartbeatStyle,
    /// Time between pings.
    pub interval: Duration,
    /// How long an answer may take.
    pub timeout: Duration,
    /// Consecutive unanswered pings before the connection is closed.
    pub max_missed: u32,
    /// Whether pings are sent only after `interval` without a client message.
    pub when_idle: bool,
}

impl EndpointRuntime {
    /// Derives the runtime form of an endpoint config (already validated).
    pub fn new(config: EndpointConfig) -> Self {
        let codec = config.dialect.codec();
        let h = &config.heartbeat;
        EndpointRuntime {
            heartbeat: Heartbeat {
                style: codec.heartbeat(),
                interval: h.interval,
                timeout: h.timeout,
                max_missed: h.max_missed.max(1),
                when_idle: h.when_idle,
            },
            codec,
            event_types: config.event_types.iter().cloned().collect(),
            channels: config.channels.allowed.iter().map(|p| WildMatch::new(p)).collect(),
            member_only: config.channels.member_only.iter().map(|p| WildMatch::new(p)).collect(),
            publish_channels: config.publish.channels.iter().map(|p| WildMatch::new(p)).collect(),
            broadcast_topic: (!config.broadcast_channel.is_empty()).then(|| channel_topic(&config.broadcast_channel)),
            member_events: config.publish.to == ClientPublishAudience::Members && !config.publish.types.is_empty(),
            config,
        }
    }

    /// The endpoint's path.
    pub fn path(&self) -> &str {
        &self.config.path
    }

    /// Its limits.
    pub fn limits(&self) -> &LimitsConfig {
        &self.config.limits
    }

    /// How its clients authenticate.
    pub fn auth(&self) -> &AuthConfig {
        &self.config.auth
    }

    /// The close code for `reason` on this endpoint: config override, else the dialect's.
    pub fn close_code(&self, reason: CloseReason) -> u16 {
        self.config.close_codes.get(&reason).copied().unwrap_or_else(|| self.codec.close_code(reason))
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

    /// Whether the endpoint delivers channels by membership (chat): its clients send to a
    /// channel's members, and a channel's events reach the members' connections on their user
    /// streams. Other endpoints deliver channels to those who subscribed to them by name.
    pub fn delivers_member_events(&self) -> bool {
        self.member_events
    }

    /// Whether events of `channel` reach this endpoint's connections of its members (a chat
    /// conversation: the endpoint delivers by membership and the channel is members-only).
    pub fn member_routed(&self, channel: &str) -> bool {
        self.member_events && self.member_only(channel)
    }

    /// The broker topic of the endpoint's broadcast channel, if it has one.
    pub fn broadcast_topic(&self) -> Option<&str> {
        self.broadcast_topic.as_deref()
    }

    /// Whether `topic` is one of a connection's own streams here (its user's stream, where the
    /// endpoint delivers user events; the broadcast channel) rather than a channel subscribed
    /// to by name. Every user connection is registered on its user's topic (it is how the node
    /// finds a user's connections), but only these endpoints deliver what is published there.
    pub fn is_own_stream(&self, topic: &str) -> bool {
        (self.config.user_events && is_user_topic(topic)) || self.broadcast_topic.as_deref() == Some(topic)
    }

    /// Whether connections authenticate as users (and so have a user stream, quotas, presence).
    pub fn has_users(&self) -> bool {
        self.config.auth.method != AuthMethod::ApiKey
    }

    /// Whether clients may send on `channel` (the endpoint's `publish.channels`; empty: any).
    pub fn client_publish_allowed(&self, channel: &str) -> bool {
        self.publish_channels.is_empty() || self.publish_channels.iter().any(|p| p.matches(channel))
    }
}

/// The diagnostic echo endpoint, when the config enables it: large messages allowed (the
/// conformance suite sends 16 MiB), a deep queue, no subscriptions, permessage-deflate for
/// every message that gains from it.
pub fn echo_endpoint(config: &Config) -> Option<Arc<EndpointRuntime>> {
    let path = &config.diagnostics.echo_path;
    if path.is_empty() {
        return None;
    }
    let toml = format!(
        "path = {path:?}\ndialect = \"basic\"\nauth = {{ method = \"jwt\" }}\nuser_events = false\n\
         limits = {{ max_message_bytes = {}, outbound_queue = 4096, outbound_queue_bytes = {} }}\n\
         compression = {{ enabled = true, min_bytes = 0 }}\n",
        32 << 20,
        64 << 20
    );
    let ep: EndpointConfig = toml::from_str(&toml).ok()?;
    Some(Arc::new(EndpointRuntime::new(ep)))
}
