//! The dialect-neutral vocabulary between a client and the edge, in both directions.
//!
//! Every codec turns its client frames into a [`Command`] and renders [`Reply`]s and events in
//! its own shape, so the connection handles one command set for every API. Where the APIs mean
//! different things by "subscribe", the codec says which by the [`SubscriptionTarget`] it
//! produces: some clients pick event types of their own streams, others name channels.
//!
//! The same codecs serve clients (the client crate, the load tool): they encode [`Command`]s
//! and decode what the server sends into a [`ServerMessage`], so each wire format is written
//! once.

use serde_json::value::RawValue;

use crate::filter::Filter;

/// What a client subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscriptionTarget {
    /// An event type on the connection's own streams (its user's events and the endpoint's
    /// broadcast channel), e.g. `channels: ["notification", ...]` on the notifications endpoint.
    EventType(String),
    /// A named channel (`conversation:conv-123`, `project.updated`).
    Channel(String),
}

impl SubscriptionTarget {
    /// The name as the client wrote it.
    pub fn name(&self) -> &str {
        match self {
            SubscriptionTarget::EventType(s) | SubscriptionTarget::Channel(s) => s,
        }
    }
}

/// A client request.
#[derive(Debug, Clone)]
pub enum Command {
    /// Start receiving events of these targets; the filter applies to the subscriptions this
    /// command makes (each target gets it).
    Subscribe {
        /// What to receive.
        targets: Vec<SubscriptionTarget>,
        /// Server-side payload filter of these subscriptions.
        filter: Option<Filter>,
        /// Correlation id for dialects that acknowledge requests.
        request_id: Option<String>,
    },
    /// Stop receiving these targets.
    Unsubscribe {
        /// What to stop.
        targets: Vec<SubscriptionTarget>,
        /// Correlation id for dialects that acknowledge requests.
        request_id: Option<String>,
    },
    /// A client's application-level ping (or heartbeat); answered with [`Reply::Pong`].
    Ping {
        /// Correlation id for dialects that acknowledge requests.
        request_id: Option<String>,
        /// Opaque bytes the answer echoes (binary dialects); empty otherwise.
        echo: bytes::Bytes,
    },
    /// The client's answer to a server heartbeat ping ([`Reply::Ping`]).
    Pong {
        /// The ping's correlation id, as the client echoed it.
        request_id: Option<String>,
    },
    /// The client sends an event to a channel (chat, client publish, typing).
    Publish {
        /// Channel the event goes to.
        channel: String,
        /// Event type.
        kind: String,
        /// Event body as the client sent it.
        payload: Box<RawValue>,
        /// Whether the event is ephemeral (typing) and must never be persisted.
        ephemeral: bool,
        /// Correlation id for dialects that acknowledge requests.
        request_id: Option<String>,
    },
}

impl PartialEq for Command {
    /// Payloads compare as their JSON text (a raw value has no equality of its own).
    fn eq(&self, other: &Self) -> bool {
        use Command::*;
        match (self, other) {
            (
                Subscribe { targets: a, filter: fa, request_id: ra },
                Subscribe { targets: b, filter: fb, request_id: rb },
            ) => a == b && fa == fb && ra == rb,
            (Unsubscribe { targets: a, request_id: ra }, Unsubscribe { targets: b, request_id: rb }) => {
                a == b && ra == rb
            }
            (Ping { request_id: ra, echo: ea }, Ping { request_id: rb, echo: eb }) => ra == rb && ea == eb,
            (Pong { request_id: a }, Pong { request_id: b }) => a == b,
            (
                Publish { channel: ca, kind: ka, payload: pa, ephemeral: ea, request_id: ra },
                Publish { channel: cb, kind: kb, payload: pb, ephemeral: eb, request_id: rb },
            ) => ca == cb && ka == kb && pa.get() == pb.get() && ea == eb && ra == rb,
            _ => false,
        }
    }
}

impl Command {
    /// The request id the client gave, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Command::Subscribe { request_id, .. }
            | Command::Unsubscribe { request_id, .. }
            | Command::Ping { request_id, .. }
            | Command::Pong { request_id }
            | Command::Publish { request_id, .. } => request_id.as_deref(),
        }
    }
}

/// A server-originated frame that is not an event.
#[derive(Debug)]
pub enum Reply<'a> {
    /// Sent once right after the upgrade.
    Welcome {
        /// The connection's session id (`sess_...`).
        session_id: &'a str,
        /// Server time, unix milliseconds.
        now_ms: u64,
    },
    /// Answer to [`Command::Ping`].
    Pong {
        /// Echoed correlation id.
        request_id: Option<&'a str>,
        /// Echoed opaque bytes.
        echo: &'a [u8],
        /// Server time, unix milliseconds (dialects that report it).
        now_ms: u64,
    },
    /// The server's heartbeat, for dialects whose heartbeat is a message rather than a
    /// WebSocket ping frame; the client answers with [`Command::Pong`].
    Ping {
        /// Correlation id the answer carries back.
        request_id: &'a str,
    },
    /// A request succeeded (dialects that acknowledge every request).
    Ack {
        /// Echoed correlation id.
        request_id: Option<&'a str>,
    },
    /// A request failed; the connection stays open.
    Error {
        /// What went wrong.
        error: &'a crate::ClientError,
        /// Echoed correlation id.
        request_id: Option<&'a str>,
    },
    /// The connection's session was revoked (logout elsewhere); the server closes it next.
    SessionRevoked {
        /// Why, as the revoking back end said (`logout_all`).
        reason: &'a str,
    },
    /// End of the batch of missed events sent after a reconnect.
    ReplayComplete {
        /// Number of events replayed.
        count: usize,
        /// Whether older missed events were left out.
        truncated: bool,
    },
}

/// A server message as a client sees it, decoded by the endpoint's codec.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The greeting after the upgrade.
    Welcome {
        /// The session id, where the dialect sends one.
        session_id: Option<String>,
    },
    /// An event.
    Event {
        /// Its id (clients deduplicate by it).
        id: String,
        /// Its type.
        kind: String,
        /// Whether it came from the replay log.
        replayed: bool,
    },
    /// End of a replay.
    ReplayComplete {
        /// Events replayed.
        count: u64,
        /// Whether older ones were left out.
        truncated: bool,
    },
    /// A request was acknowledged.
    Ack {
        /// Its correlation id.
        request_id: Option<String>,
    },
    /// The answer to a client ping.
    Pong,
    /// A server heartbeat the client must answer with [`Command::Pong`].
    Ping {
        /// The id to answer with.
        request_id: Option<String>,
    },
    /// A request failed (or the server reports a problem).
    Error {
        /// The dialect's error code.
        code: String,
        /// Human-readable detail.
        message: String,
        /// The failed request's correlation id.
        request_id: Option<String>,
    },
    /// A message this client does not need to tell apart (its type, as the dialect names it).
    Other(String),
}
