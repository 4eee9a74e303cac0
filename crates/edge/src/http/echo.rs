//! Diagnostic echo endpoint (off by default): echoes every message back through the regular
//! connection actor, so RFC 6455 conformance (fragmentation, control frames, close
//! handshake, UTF-8) can be checked with the Autobahn suite against the code the real
//! endpoints run. Never enable it in production: it is unauthenticated.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;

use super::ws::{bad_handshake, upgrade};
use crate::connection::{Accepted, EchoHandler};
use crate::endpoint::EndpointRuntime;
use crate::node::Node;

/// Upgrades and echoes.
pub async fn echo(State(node): State<Arc<Node>>, ep: Arc<EndpointRuntime>, req: Request) -> Response {
    upgrade(&node, &ep, req, Accepted::default(), EchoHandler::new).unwrap_or_else(bad_handshake)
}
