//! The Switchboard edge: WebSocket endpoints for every dialect, local fan-out, and the HTTP
//! publish/admin/operations API, over any [`switchboard_broker::Broker`].
//!
//! Layout: [`config`] (typed, validated config), [`auth`] (JWT, API keys), [`endpoint`] (an
//! endpoint ready to serve), [`connection`] (the per-connection actor), [`registry`] and
//! [`topics`] (local subscriptions and their broker mirror), [`dispatch`] (encode once, share
//! bytes), [`http`] (routes), [`node`] (the shared handle), [`server`] (serve and drain).

pub mod auth;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod endpoint;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod node;
pub mod persistence;
pub mod quota;
pub mod registry;
pub mod server;
pub mod short_set;
pub mod topics;

pub use config::Config;
pub use node::Node;
