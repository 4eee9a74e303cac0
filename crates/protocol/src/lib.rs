//! The pure core of Switchboard: what an event is, what a client may ask for, and how each
//! documented real-time API ("dialect") puts those on the wire.
//!
//! Nothing here does IO or knows about tokio: every codec is a function from bytes to a
//! [`Command`] and from an [`Event`] or [`Reply`] to bytes, so it can be unit tested with byte
//! strings, fuzzed, and benchmarked in isolation. The edge owns sockets; this crate owns formats.

pub mod close;
pub mod command;
pub mod dialect;
pub mod event;
pub mod filter;
pub mod timefmt;

pub use close::CloseReason;
pub use command::{ClientError, Command, ErrorKind, Reply, SubscriptionTarget};
pub use dialect::{Codec, DialectKind, FrameKind};
pub use event::{Event, EventTarget};
pub use filter::FieldFilter;
