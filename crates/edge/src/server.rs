//! Running a node: bind, serve HTTP and WebSockets, and drain gracefully on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::http::router;
use crate::node::Node;

/// Serves `node` on `listener` until `shutdown` resolves, then drains: stops accepting,
/// reports not ready, closes every connection with 1001, and waits (at most the configured
/// drain window) for the connections to end.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(node.clone());
    let renewal = node.quotas.spawn_renewal();
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
    renewal.abort();
    Ok(())
}
