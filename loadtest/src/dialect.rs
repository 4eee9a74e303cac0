//! `--dialect`: which of the gateway's dialects a scenario speaks, and what that means for
//! the endpoint path, the subscription and the publish body of a broadcast.

use clap::ValueEnum;
use serde_json::{json, Value};
use switchboard_client::{ClientDialect, ClientMessage, Dialect};

/// A dialect on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DialectArg {
    /// OrbNET at `/ws/notifications`: a broadcast is a `server_alert` to the `notifications` channel.
    Orbnet,
    /// The generic service at `/ws`: a broadcast is a `status_update` to a channel.
    Basic,
    /// OCVR chat at `/v1/ws`, connected with tickets: a broadcast is a `message_create` to a
    /// channel that must exist with every client a member (the `typing` scenario sets that up).
    Ocvr,
    /// brl at `/api/v2/realtime`, binary frames: a broadcast is an `alert` to a topic. It has
    /// no user streams (no `many`, no `replay`).
    Brl,
    /// VeriOps at `/realtime`: a broadcast is a `project.updated` event to that channel; it has
    /// no user streams (no `many`, no `replay`). Connections answer the server's JSON pings.
    Veriops,
}

/// The brl endpoint's path.
const BRL_PATH: &str = "/api/v2/realtime";
/// The veriops endpoint's path.
const VERIOPS_PATH: &str = "/realtime";

/// Everything a scenario needs to subscribe clients to one shared stream and publish to it.
#[derive(Clone)]
pub struct Broadcast {
    /// Endpoint path.
    pub path: &'static str,
    /// Messages each client sends to subscribe.
    pub subscriptions: Vec<ClientMessage>,
    channel: String,
    kind: &'static str,
    dialect: Dialect,
}

impl Broadcast {
    /// The same stream with `filter` on its subscription (dialects with filter expressions).
    pub fn filtered(mut self, filter: Option<&str>) -> anyhow::Result<Broadcast> {
        let Some(text) = filter else { return Ok(self) };
        let expression = switchboard_protocol::Expression::parse(text).map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
        let command = switchboard_protocol::Command::Subscribe {
            targets: vec![switchboard_protocol::SubscriptionTarget::Channel(self.channel.clone())],
            filter: Some(switchboard_protocol::Filter::Expression(expression)),
            request_id: None,
        };
        let codec = self.dialect.codec();
        let messages = codec.encode_command(&command).map_err(|e| anyhow::anyhow!("--filter: {}", e.message))?;
        self.subscriptions =
            messages.into_iter().map(|bytes| ClientMessage { frame: codec.frame_kind(), bytes }).collect();
        Ok(self)
    }

    /// The channel it is published on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The publish API body of one event carrying `payload`.
    pub fn publish_body(&self, payload: Value) -> Value {
        json!({"channel": self.channel, "type": self.kind, "payload": payload})
    }
}

impl DialectArg {
    /// The protocol's dialect.
    pub fn kind(self) -> Dialect {
        match self {
            DialectArg::Orbnet => Dialect::Orbnet,
            DialectArg::Basic => Dialect::Basic,
            DialectArg::Ocvr => Dialect::Ocvr,
            DialectArg::Brl => Dialect::Brl,
            DialectArg::Veriops => Dialect::Veriops,
        }
    }

    /// Whether its clients connect with a ticket traded for their token.
    pub fn uses_tickets(self) -> bool {
        matches!(self, DialectArg::Ocvr)
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            DialectArg::Orbnet => "orbnet",
            DialectArg::Basic => "basic",
            DialectArg::Ocvr => "ocvr",
            DialectArg::Brl => "brl",
            DialectArg::Veriops => "veriops",
        }
    }

    /// Endpoint path and subscriptions of client `i` on a stream of its own: its user's
    /// notifications (orbnet, ocvr), or a channel `status:idle-<i>` (basic).
    pub fn own_stream(self, i: usize) -> (&'static str, Vec<ClientMessage>) {
        match self {
            DialectArg::Orbnet => ("/ws/notifications", Dialect::Orbnet.subscriptions(&["notification"])),
            DialectArg::Ocvr => ("/v1/ws", Vec::new()),
            DialectArg::Basic => ("/ws", Dialect::Basic.subscriptions(&[&format!("status:idle-{i}")])),
            DialectArg::Brl => (BRL_PATH, Dialect::Brl.subscriptions(&[&format!("idle-{i}")])),
            DialectArg::Veriops => (VERIOPS_PATH, Dialect::Veriops.subscriptions(&["project.updated"])),
        }
    }

    /// The endpoint path its clients connect to.
    pub fn path(self) -> &'static str {
        self.own_stream(0).0
    }

    /// Endpoint path and subscriptions of a client that wants its user's events: orbnet
    /// subscribes to `notification` on `/ws/notifications`; basic gets them on `/ws` unasked.
    /// brl has no user streams.
    pub fn user_stream(self) -> anyhow::Result<(&'static str, Vec<ClientMessage>)> {
        Ok(match self {
            DialectArg::Orbnet => ("/ws/notifications", Dialect::Orbnet.subscriptions(&["notification"])),
            DialectArg::Basic => ("/ws", Vec::new()),
            DialectArg::Ocvr => ("/v1/ws", Vec::new()),
            DialectArg::Brl => anyhow::bail!("brl has no user streams: its clients subscribe to topics (try fanout)"),
            DialectArg::Veriops => {
                anyhow::bail!("veriops has no user streams: its clients subscribe to channels (try fanout)")
            }
        })
    }

    /// The shared stream: `channel`, or the dialect's default (`notifications`, the orbnet
    /// endpoint's broadcast channel; `status:load` for basic). Channel-subscribing dialects
    /// subscribe to the channel itself; dialects whose clients pick event types (orbnet) pick the
    /// broadcast's type on their own streams.
    pub fn broadcast(self, channel: Option<&str>) -> Broadcast {
        let (path, default_channel, kind) = match self {
            DialectArg::Orbnet => ("/ws/notifications", "notifications", "server_alert"),
            DialectArg::Basic => ("/ws", "status:load", "status_update"),
            DialectArg::Brl => (BRL_PATH, "load.alerts", "alert"),
            DialectArg::Veriops => (VERIOPS_PATH, "project.updated", "project.updated"),
            DialectArg::Ocvr => ("/v1/ws", "ch_load", "message_create"),
        };
        let channel = channel.unwrap_or(default_channel);
        let dialect = self.kind();
        let target = if dialect.codec().opt_in_event_types() { kind } else { channel };
        Broadcast { path, subscriptions: dialect.subscriptions(&[target]), channel: channel.to_owned(), kind, dialect }
    }
}
