//! Why a client request failed, in dialect-neutral terms: the edge decides, each codec spells
//! it as its documented error code.

/// What kind of failure; each codec maps it to its documented error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The frame is not a valid request (bad JSON, missing field, wrong type).
    InvalidRequest,
    /// The credentials (token, ticket, key) were refused.
    InvalidCredentials,
    /// A filter expression does not compile (the message says where).
    InvalidFilter,
    /// The request type is not one this endpoint knows.
    UnknownType,
    /// The channel or event type does not exist on this endpoint.
    UnknownChannel,
    /// The credentials do not allow this channel.
    Forbidden,
    /// The user is not a member of the channel.
    NotMember,
    /// The request needs a subscription the connection does not have (typing in a channel
    /// it did not subscribe to).
    NotSubscribed,
    /// The subscription could not be set up.
    SubscriptionFailed,
    /// The connection already has the maximum number of subscriptions.
    TooManySubscriptions,
    /// Too many requests; slow down.
    RateLimited,
    /// Something went wrong on the server.
    Internal,
}

impl ErrorKind {
    /// Every kind, for suites that check each dialect can report each one.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidRequest,
        ErrorKind::InvalidCredentials,
        ErrorKind::InvalidFilter,
        ErrorKind::UnknownType,
        ErrorKind::UnknownChannel,
        ErrorKind::Forbidden,
        ErrorKind::NotMember,
        ErrorKind::NotSubscribed,
        ErrorKind::SubscriptionFailed,
        ErrorKind::TooManySubscriptions,
        ErrorKind::RateLimited,
        ErrorKind::Internal,
    ];
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
