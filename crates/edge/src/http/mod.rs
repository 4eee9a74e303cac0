//! The node's HTTP surface: WebSocket endpoints, the publish and admin API, and operations
//! (`/healthz`, `/readyz`, `/metrics`, `/playground`), all on one port.

mod admin;
mod credentials;
mod echo;
mod error;
pub(crate) mod ops;
mod publish;
mod tickets;
mod ws;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::routing::{delete, get, post, put};
use axum::Router;

pub use error::ApiError;
pub use ops::Ops;

use crate::node::Node;

/// Largest accepted HTTP request body (publish batches included).
const MAX_BODY_BYTES: usize = 4 << 20;

/// The operations endpoints (`/healthz`, `/readyz`, `/metrics`): all a worker process serves.
pub fn ops_router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .with_state(ops)
}

/// Builds the router of an edge.
pub fn router(node: Arc<Node>) -> Router {
    let mut router = Router::new()
        .route("/playground", get(ops::playground))
        .route("/playground/endpoints", get(ops::playground_endpoints))
        .route("/playground/token", post(ops::playground_token))
        .route("/v1/publish", post(publish::publish))
        .route("/v1/publish/batch", post(publish::publish_batch))
        .route("/v1/api-keys", post(admin::create_api_key).get(admin::list_api_keys))
        .route("/v1/api-keys/{name}", delete(admin::delete_api_key))
        .route("/v1/channels/{id}", put(admin::create_channel).get(admin::get_channel).delete(admin::delete_channel))
        .route("/v1/connections", get(admin::connections))
        .route("/v1/channels/{id}/members", get(admin::get_channel))
        .route("/v1/channels/{id}/members/{user}", put(admin::add_member).delete(admin::remove_member))
        .route("/v1/sessions/revoke", post(admin::revoke_sessions))
        .route("/v1/presence/{channel}", get(admin::channel_presence))
        .route("/v1/users/{user}/status", put(admin::set_status).delete(admin::clear_status));
    if node.endpoints().iter().any(|e| e.auth().method == crate::config::AuthMethod::Ticket) {
        router = router.route("/v1/auth/ws-ticket", post(tickets::issue));
    }
    for endpoint in node.endpoints() {
        let ep = endpoint.clone();
        router = router.route(
            endpoint.path(),
            get(move |state: State<Arc<Node>>, req: Request| ws::accept(state, ep.clone(), req)),
        );
    }
    if let Some(ep) = crate::endpoint::echo_endpoint(node.config()) {
        let path = ep.path().to_owned();
        router =
            router.route(&path, get(move |state: State<Arc<Node>>, req: Request| echo::echo(state, ep.clone(), req)));
    }
    let ops = Ops::of(&node);
    router
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
        .merge(ops_router(ops))
}
