//! The pure core of Switchboard: what an event is, what a client may ask for, how each
//! documented real-time API ("dialect") puts those on the wire, how filters select events, and
//! under which names the cluster shares state.
//!
//! Nothing here does IO or knows about tokio: every codec is a function from bytes to a
//! [`Command`] and from an [`Event`] or [`Reply`] to bytes (and back, for clients), so it can be
//! unit tested with byte strings, fuzzed, and benchmarked in isolation. The edge owns sockets;
//! this crate owns formats.

pub mod close;
pub mod command;
pub mod dialect;
pub mod error;
pub mod event;
pub mod filter;
pub mod keyspace;
pub mod timefmt;
pub mod token;

pub use close::CloseReason;
pub use command::{Command, Reply, ServerMessage, SubscriptionTarget};
pub use dialect::{ClientSender, Codec, DecodeError, DialectKind, FrameKind, HeartbeatStyle};
pub use error::{ClientError, ErrorKind};
pub use event::{Event, EventTarget};
pub use filter::{Expression, FieldFilter, Filter};
