//! Running a node in one of its roles: bind, serve HTTP (and WebSockets on an edge), run the
//! persistence worker where the role has one, and drain gracefully on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http::{ops_router, router};
use crate::node::Node;
use crate::persistence::worker;

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Edge and persistence worker in one process (`switchboard serve`).
    All,
    /// WebSocket endpoints and the HTTP API, no worker (`switchboard edge`).
    Edge,
    /// The persistence worker, with `/metrics`, `/healthz`, `/readyz` (`switchboard worker`).
    Worker,
}

/// Serves `node` in `role` on `listener` until `shutdown` resolves, then drains: stops
/// accepting, reports not ready, closes every connection with 1001 (spread over the drain
/// window), waits for the connections to end, and stops the worker (giving its shards up).
pub async fn serve_role(
    node: Arc<Node>,
    role: Role,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = if role == Role::Worker { ops_router(node.clone()) } else { router(node.clone()) };
    let renewal = node.quotas.spawn_renewal();
    let stop_worker = CancellationToken::new();
    let worker = (role != Role::Edge).then(|| tokio::spawn(worker::run(node.clone(), stop_worker.clone())));
    let drain_node = node.clone();
    let stop_accepting = async move {
        shutdown.await;
        tracing::info!("draining");
        drain_node.draining.cancel();
    };
    axum::serve(listener, app).with_graceful_shutdown(stop_accepting).await?;
    node.connections.close();
    let window = node.config.drain_window + Duration::from_secs(5);
    if tokio::time::timeout(window, node.connections.wait()).await.is_err() {
        tracing::warn!("drain window passed with connections still open");
    }
    stop_worker.cancel();
    if let Some(w) = worker {
        let _ = w.await;
    }
    renewal.abort();
    Ok(())
}

/// Serves edge and worker in one process (see [`serve_role`]).
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_role(node, Role::All, listener, shutdown).await
}
