//! Dialects: one codec per documented real-time API, all behind the [`Codec`] trait.
//!
//! A codec is pure. On the server side it decodes one complete client message into a
//! [`Command`] and encodes events and replies into complete messages; on the client side it
//! encodes commands and decodes server messages, so the client crate and the load tool speak
//! exactly what the server does. It also states the dialect's fixed conventions: text or binary
//! frames, how heartbeats work, which close code each reason gets. The edge never branches on
//! the dialect; it asks the endpoint's codec. Adding a dialect means adding a module here, a
//! [`DialectKind`] variant, presets and tests.

mod basic;
pub mod brl;
mod json;
mod ocvr;
mod orbnet;
pub mod veriops;

#[cfg(test)]
mod conformance;

use bytes::Bytes;

use crate::close::CloseReason;
use crate::command::{Command, Reply, ServerMessage};
use crate::error::ClientError;
use crate::event::Event;

pub use basic::Basic;
pub use brl::Brl;
pub use ocvr::{user_id_value, Ocvr};
pub use orbnet::Orbnet;
pub use veriops::Veriops;

/// Whether a dialect's messages travel in text or binary WebSocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// UTF-8 text frames (the JSON dialects).
    Text,
    /// Binary frames.
    Binary,
}

/// How a dialect keeps a connection alive and tells a dead peer; the endpoint's heartbeat
/// settings give the intervals and the number of misses allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatStyle {
    /// The server sends WebSocket ping frames; the client's pong frames answer.
    WebSocketPing,
    /// The server sends the dialect's own ping message ([`Reply::Ping`]); the client's
    /// [`Command::Pong`] answers.
    DialectPing,
    /// The client sends heartbeats ([`Command::Ping`]); the server only watches for silence
    /// (the endpoint's idle timeout).
    ClientHeartbeat,
}

/// Who sent a client event, as the server knows them (never as the client claims).
#[derive(Debug, Clone, Copy)]
pub struct ClientSender<'a> {
    /// Their user id.
    pub user: &'a str,
    /// Their display name, if their token has one.
    pub display_name: Option<&'a str>,
}

/// Why a server message could not be decoded by a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable server message: {0}")]
pub struct DecodeError(pub String);

/// One wire format. Implementations hold no per-connection state.
pub trait Codec: Send + Sync + 'static {
    /// Which dialect this is.
    fn kind(&self) -> DialectKind;

    /// The WebSocket frame type of every message this dialect sends, both ways.
    fn frame_kind(&self) -> FrameKind;

    /// How heartbeats work in this dialect.
    fn heartbeat(&self) -> HeartbeatStyle {
        HeartbeatStyle::WebSocketPing
    }

    /// Whether clients receive only the event types they subscribed to by name, rather than
    /// everything on the streams they are registered on.
    fn opt_in_event_types(&self) -> bool {
        false
    }

    /// The close code this dialect documents for `reason`.
    fn close_code(&self, reason: CloseReason) -> u16 {
        reason.standard_code()
    }

    /// A failed request after which this dialect closes the connection (its `ack` or error
    /// goes out first): veriops ends a connection at its 51st subscription. `None`: the
    /// connection stays open.
    fn closes_after(&self, error: crate::error::ErrorKind) -> Option<CloseReason> {
        let _ = error;
        None
    }

    /// The correlation id of a client message [`Codec::decode`] refused, so the error still
    /// answers the request it belongs to (dialects that acknowledge requests).
    fn request_id_of(&self, message: &[u8]) -> Option<String> {
        let _ = message;
        None
    }

    // --- server side ---

    /// Decodes one complete client message.
    fn decode(&self, message: &[u8]) -> Result<Command, ClientError>;

    /// Encodes an event. `replayed` marks events sent from the replay log after a reconnect.
    fn encode_event(&self, event: &Event, replayed: bool) -> Bytes;

    /// Encodes a reply, or `None` when this dialect has no such frame.
    fn encode_reply(&self, reply: &Reply<'_>) -> Option<Bytes>;

    /// What a client's send on `channel` ([`Command::Publish`]) becomes for those who receive
    /// it: its event type and payload. By default the same; a dialect may rename it or build
    /// the payload from what the server knows of the sender (who is typing).
    fn client_event(
        &self,
        kind: &str,
        channel: &str,
        payload: &serde_json::value::RawValue,
        sender: &ClientSender<'_>,
    ) -> Result<(String, Box<serde_json::value::RawValue>), ClientError> {
        let _ = (channel, sender);
        Ok((kind.to_owned(), payload.to_owned()))
    }

    /// The event announcing that `user` came online or went offline (with their status text,
    /// if set), as this dialect's clients expect it: its type and payload. `None`: the dialect
    /// has no presence event.
    fn presence_event(
        &self,
        user: &str,
        online: bool,
        status_text: Option<&str>,
    ) -> Option<(&'static str, Box<serde_json::value::RawValue>)> {
        let _ = (user, online, status_text);
        None
    }

    // --- client side ---

    /// The messages a client sends for `command` (some dialects subscribe to one target per
    /// message). Fails for a command this dialect cannot express.
    fn encode_command(&self, command: &Command) -> Result<Vec<Bytes>, ClientError>;

    /// Decodes one server message.
    fn decode_server(&self, message: &[u8]) -> Result<ServerMessage, DecodeError>;

    /// The answer a client owes `message` when it is this dialect's heartbeat ping (dialects
    /// whose heartbeat is a message: veriops, brl); `None` for anything else. Cheap enough to
    /// ask of every message a client receives.
    fn answer_to_ping(&self, message: &[u8]) -> Option<Bytes> {
        let _ = message;
        None
    }
}

/// The dialects Switchboard speaks, as named in config files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialectKind {
    /// OrbNET notifications and chat, OrbGuard threat stream: JSON
    /// `{"type","id","timestamp","payload"}` events, subscriptions by event type.
    Orbnet,
    /// The generic JWT WebSocket service: JSON `{"type","data"}` frames, channels.
    Basic,
    /// OCVR chat, presence, typing and notifications: JSON `{"type","data"}` frames, single-use
    /// connect tickets, client heartbeats.
    Ocvr,
    /// The brl real-time API: binary frames, topics with filter expressions.
    Brl,
    /// The VeriOps API: JSON `{"type","request_id","sent_at","payload"}` envelopes, every
    /// request acknowledged, channels with field filters, client publish, JSON pings.
    Veriops,
}

impl DialectKind {
    /// Every dialect; `kind as usize` indexes this array, so per-dialect caches are arrays.
    pub const ALL: [DialectKind; 5] =
        [DialectKind::Orbnet, DialectKind::Basic, DialectKind::Ocvr, DialectKind::Brl, DialectKind::Veriops];

    /// Number of dialects, for per-dialect caches.
    pub const COUNT: usize = Self::ALL.len();

    /// The codec for this dialect.
    pub fn codec(self) -> &'static dyn Codec {
        match self {
            DialectKind::Orbnet => &Orbnet,
            DialectKind::Basic => &Basic,
            DialectKind::Ocvr => &Ocvr,
            DialectKind::Brl => &Brl,
            DialectKind::Veriops => &Veriops,
        }
    }

    /// Dense index, for per-dialect encode caches.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            DialectKind::Orbnet => "orbnet",
            DialectKind::Basic => "basic",
            DialectKind::Ocvr => "ocvr",
            DialectKind::Brl => "brl",
            DialectKind::Veriops => "veriops",
        }
    }
}
