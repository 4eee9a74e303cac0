//! Dialects: one codec per documented real-time API, all behind the [`Codec`] trait.
//!
//! A codec is pure: it decodes one complete client message into a [`Command`] and encodes
//! events and replies into complete messages. The edge never branches on the dialect; it asks
//! the endpoint's codec. Adding a dialect means adding a module and a [`DialectKind`] variant.

mod basic;
mod json;
mod orbnet;

use bytes::Bytes;

use crate::close::CloseReason;
use crate::command::{ClientError, Command, Reply};
use crate::event::Event;

pub use basic::Basic;
pub use orbnet::Orbnet;

/// Whether a dialect's messages travel in text or binary WebSocket frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// UTF-8 text frames (the JSON dialects).
    Text,
    /// Binary frames.
    Binary,
}

/// One wire format. Implementations hold no per-connection state.
pub trait Codec: Send + Sync + 'static {
    /// Which dialect this is.
    fn kind(&self) -> DialectKind;

    /// The WebSocket frame type of every message this dialect sends.
    fn frame_kind(&self) -> FrameKind;

    /// Decodes one complete client message.
    fn decode(&self, message: &[u8]) -> Result<Command, ClientError>;

    /// Encodes an event. `replayed` marks events sent from the replay log after a reconnect.
    fn encode_event(&self, event: &Event, replayed: bool) -> Bytes;

    /// Encodes a reply, or `None` when this dialect has no such frame.
    fn encode_reply(&self, reply: &Reply<'_>) -> Option<Bytes>;

    /// Whether clients receive only the event types they subscribed to by name (orbnet's
    /// `channels`), rather than everything on the topics they are registered on.
    fn opt_in_event_types(&self) -> bool {
        false
    }

    /// The close code this dialect documents for `reason`.
    fn close_code(&self, reason: CloseReason) -> u16 {
        reason.standard_code()
    }
}

/// The dialects Switchboard speaks, as named in config files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DialectKind {
    /// Seed 000: OrbNET notifications + chat, OrbGuard threat stream.
    Orbnet,
    /// Seed 003: the generic JWT WebSocket service.
    Basic,
}

impl DialectKind {
    /// Every dialect; `kind as usize` indexes this array, so per-dialect caches are arrays.
    pub const ALL: [DialectKind; 2] = [DialectKind::Orbnet, DialectKind::Basic];

    /// Number of dialects, for per-dialect caches.
    pub const COUNT: usize = Self::ALL.len();

    /// The codec for this dialect.
    pub fn codec(self) -> &'static dyn Codec {
        match self {
            DialectKind::Orbnet => &Orbnet,
            DialectKind::Basic => &Basic,
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
        }
    }
}
