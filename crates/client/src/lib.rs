//! A client for Switchboard's endpoints, speaking each dialect through the protocol crate's
//! codecs: [`Connection`] speaks every dialect (brl's binary frames too) and answers the
//! dialect's own pings where it has them (veriops, brl); [`Client`] reconnects and delivers the
//! JSON dialects' events.
//!
//! [`Client`] does what the API documents ask of every client: reconnect with exponential
//! backoff and jitter, subscribe again after every reconnect, resume with `last_event_id` so
//! nothing is missed, and deduplicate events by `id` (an event may be sent again across
//! reconnects). [`Connection`] is one connection without
//! any of that, for tools that hold many (the load generator `sb-load` is built on it).
//!
//! ```no_run
//! # async fn demo() {
//! use switchboard_client::{Client, ClientConfig, ClientEvent, Dialect};
//! let urls = vec!["ws://127.0.0.1:8080/ws/notifications".into()];
//! let config = ClientConfig::new(Dialect::Orbnet, urls, "TOKEN".into()).subscribe_to(&["notification"]);
//! let mut client = Client::start(config);
//! while let Some(event) = client.next().await {
//!     if let ClientEvent::Event(e) = event {
//!         println!("{e}");
//!     }
//! }
//! # }
//! ```

mod connection;
mod dedupe;
mod dialect;
mod reconnecting;
pub mod stream;

pub use connection::{ConnectError, ConnectOptions, Connection, Incoming};
pub use dedupe::RecentIds;
pub use dialect::{event_id, ClientDialect, ClientMessage};
pub use reconnecting::{backoff_delay, Client, ClientConfig, ClientEvent};
pub use switchboard_protocol::{DialectKind as Dialect, ServerMessage};
