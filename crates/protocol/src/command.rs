//! The dialect-neutral vocabulary between a client and the edge.
//!
//! Every codec turns its client frames into a [`Command`] and renders [`Reply`]s in its own
//! shape, so the connection actor handles one command set for all five APIs. Where the APIs
//! mean different things by "subscribe", the codec says which by the [`SubscriptionTarget`] it
//! produces: orbnet clients pick event types, the other dialects name channels.

use serde_json::value::RawValue;

use crate::filter::FieldFilter;

/// What a client subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscriptionTarget {
    /// An event type on the connection's own user stream and endpoint broadcast channel
    /// (orbnet's `channels: ["notification", ...]`).
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

/// A decoded client request.
#[derive(Debug)]
pub enum Command {
    /// Start receiving events of these targets, optionally filtered on the payload.
    Subscribe {
        /// What to receive.
        targets: Vec<SubscriptionTarget>,
        /// Server-side payload filter; `None` keeps the current one.
        filter: Option<FieldFilter>,
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
    /// Application-level ping; answered with [`Reply::Pong`].
    Ping {
        /// Correlation id for dialects that acknowledge requests.
        request_id: Option<String>,
    },
    /// The client sends an event to a channel's other members (chat, client publish).
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

/// Why a client request failed, in dialect-neutral terms; each codec maps it to its
/// documented error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The frame is not a valid request (bad JSON, missing field, wrong type).
    InvalidRequest,
    /// The request type is not one this endpoint knows.
    UnknownType,
    /// The channel or event type does not exist on this endpoint.
    UnknownChannel,
    /// The credentials do not allow this channel.
    Forbidden,
    /// The user is not a member of the channel.
    NotMember,
    /// The subscription could not be set up.
    SubscriptionFailed,
    /// The connection already has the maximum number of subscriptions.
    TooManySubscriptions,
    /// Too many requests; slow down.
    RateLimited,
    /// Something went wrong on the server.
    Internal,
}

/// An error reported to the client without closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl ClientError {
    /// Shorthand constructor.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ClientError { kind, message: message.into() }
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
    },
    /// A request succeeded (dialects that acknowledge every request).
    Ack {
        /// Echoed correlation id.
        request_id: Option<&'a str>,
    },
    /// A request failed; the connection stays open.
    Error {
        /// What went wrong.
        error: &'a ClientError,
        /// Echoed correlation id.
        request_id: Option<&'a str>,
    },
    /// End of the batch of missed events sent after a reconnect.
    ReplayComplete {
        /// Number of events replayed.
        count: usize,
        /// Whether older missed events were left out.
        truncated: bool,
    },
}
