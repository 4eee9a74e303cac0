//! Diagnostic echo endpoint (off by default): echoes every message back through the regular
//! connection actor, so RFC 6455 conformance (fragmentation, control frames, close
//! handshake, UTF-8) can be checked with the Autobahn suite against the code the real
//! endpoints run. Never enable it in production: it is unauthenticated.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::connection::{self, EchoHandler, Subscriptions};
use crate::endpoint::EndpointRuntime;
use crate::node::Node;

/// Upgrades and echoes.
pub async fn echo(State(node): State<Arc<Node>>, ep: Arc<EndpointRuntime>, mut req: Request) -> Response {
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((response, upgrade)) => {
            let ctx = node.conns().clone();
            let run = connection::run_upgraded(
                ctx.clone(),
                ep,
                None,
                None,
                Subscriptions::default(),
                EchoHandler::new,
                upgrade,
            );
            ctx.tasks.spawn(run);
            response.map(axum::body::Body::new)
        }
        Err(e) => ApiError::bad_request(format!("invalid WebSocket handshake: {e}")).into_response(),
    }
}
