//! The Switchboard edge: WebSocket endpoints for every dialect, local fan-out, and the HTTP
//! publish/admin/operations API, over any [`switchboard_broker::Broker`].
//!
//! What is public is what a process needs to run a node: [`config`], [`Node`] and [`server`].
//! The rest is the node's inside, each module owning one concern:
//! - [`auth`]: credentials to principal (JWT, API keys);
//! - `endpoint`: an endpoint's config made ready to serve (codec, heartbeat, patterns);
//! - `connection`: the per-connection actor, its shared handle, output and subscriptions;
//! - `session`: what a connection does with each command, through a narrow set of services;
//! - `fanout`: local topic registry, broker subscription sync, encode-once dispatch;
//! - `publish`: the one way in for events (publish API and client sends);
//! - `replay`, `quota`, `presence`, `membership`, `index`, `control`, `inbox`: replay on
//!   connect and gap-fill of open connections, cluster-wide quotas, who is online, channel
//!   membership, connections by user, cluster control messages, and routing of broker
//!   deliveries;
//! - `readiness`: what "ready" means, check by check;
//! - `http`: the routes; `node`: the composition root; `server`: roles, serving and draining.

pub mod auth;
mod census;
pub mod config;
mod connection;
mod control;
mod endpoint;
mod fanout;
pub mod http;
mod idempotency;
mod ids;
mod inbox;
mod index;
mod ip_limits;
mod membership;
mod metrics;
pub mod node;
mod presence;
mod publish;
mod quota;
mod reach;
mod readiness;
mod replay;
pub mod server;
mod session;
pub mod tls;
mod topic_set;

#[cfg(feature = "internals")]
pub mod internals;

pub use config::Config;
pub use fanout::dispatch::INLINE_FANOUT;
pub use node::Node;
