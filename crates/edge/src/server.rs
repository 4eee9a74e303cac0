//! Running a process in one of its roles: bind, serve HTTP (and WebSockets on an edge), run the
//! persistence worker where the role has one, and drain gracefully on shutdown.
//!
//! The accept loop is our own, on hyper's HTTP/1.1 connection builder over plain
//! `TcpStream`s: an upgraded WebSocket then hands back the socket itself, which the connection
//! reads with no buffer while idle and writes to directly on fan-out (a generic server would
//! wrap the socket, and every connection would carry its buffers for life).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_worker::{WakeSink, WorkerMetrics};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{ops_router, router, Ops};
use crate::node::{connect_broker, Node};

/// What a node process runs besides its HTTP surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Edge and persistence worker in one process (`switchboard serve`).
    All,
    /// WebSocket endpoints and the HTTP API, no worker (`switchboard edge`).
    Edge,
}

/// Serves `node` in `role` on `listener` until `shutdown` resolves, then drains: reports not
/// ready, refuses new WebSockets with a 503, closes every connection with 1001 (spread over the
/// drain window), waits for the connections to end, closes the listener, and stops the worker
/// (giving its shards up).
pub async fn serve_role(
    node: Arc<Node>,
    role: Role,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Err(e) = node.join_cluster().await {
        tracing::warn!(error = %e, "not subscribed to cluster control messages yet; the broker connection retries");
    }
    node.start_presence_announcements();
    let app = router(node.clone());
    let renewal = node.quotas().spawn_renewal(node.metrics().clone());
    let presence = node.presence().spawn_upkeep(node.metrics().clone());
    let census = crate::census::spawn_publisher(node.clone());
    let stop_worker = CancellationToken::new();
    let worker = (role == Role::All).then(|| {
        let settings = node.config().persistence.worker_settings(node.id().to_owned());
        let metrics = WorkerMetrics::register(node.metrics().registry());
        let run = switchboard_worker::run(
            node.broker().clone(),
            settings,
            metrics,
            node.ingest_appended().clone(),
            stop_worker.clone(),
        );
        tokio::spawn(run)
    });
    let drain_node = node.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("draining");
        drain_node.start_draining();
    });
    let conns = node.conns().clone();
    // HTTP is served through the drain: probes read 503 from `/readyz`, upgrades get a 503
    // naming the reason (a load balancer retries elsewhere), the open WebSockets close spread
    // over the window. Then the listener closes.
    let stop_http = CancellationToken::new();
    let serving = tokio::spawn(accept_until(listener, app, stop_http.clone()));
    conns.draining.cancelled().await;
    conns.tasks.close();
    let window = node.config().drain_window + Duration::from_secs(5);
    if tokio::time::timeout(window, conns.tasks.wait()).await.is_err() {
        tracing::warn!("drain window passed with connections still open");
    }
    stop_http.cancel();
    if serving.await.is_err() {
        tracing::warn!("the HTTP server task ended abnormally");
    }
    stop_worker.cancel();
    if let Some(w) = worker {
        let _ = w.await;
    }
    renewal.abort();
    presence.abort();
    census.abort();
    crate::census::withdraw(&node).await;
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

/// A persistence-worker process (`switchboard worker`): the broker, the worker and the
/// operations endpoints (`/metrics`, `/healthz`, `/readyz`), none of an edge's machinery.
pub struct WorkerProcess {
    config: Config,
    broker: SharedBroker,
    wake: Arc<Notify>,
}

impl WorkerProcess {
    /// Connects to the config's broker.
    pub async fn connect(config: Config) -> Result<WorkerProcess, BrokerError> {
        let wake = Arc::new(Notify::new());
        let broker = connect_broker(&config, Arc::new(WakeSink(wake.clone()))).await?;
        Ok(WorkerProcess { config, broker, wake })
    }

    /// Runs the worker and serves the operations endpoints on `listener` until `shutdown`,
    /// then gives the worker's shards up.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let registry = prometheus::Registry::new_custom(Some("switchboard".into()), None).unwrap_or_default();
        let metrics = WorkerMetrics::register(&registry);
        crate::metrics::register_subscriber_health(&registry, self.broker.clone());
        let holder = format!("worker_{}", ulid::Ulid::new());
        let settings = self.config.persistence.worker_settings(holder);
        let stop = CancellationToken::new();
        let worker =
            tokio::spawn(switchboard_worker::run(self.broker.clone(), settings, metrics, self.wake, stop.clone()));
        let draining = CancellationToken::new();
        let metrics_token = crate::http::ops::metrics_token(&self.config);
        let ops = Ops { broker: self.broker, registry, draining: draining.clone(), metrics_token };
        let stop_accepting = draining.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("stopping");
            stop_accepting.cancel();
        });
        accept_until(listener, ops_router(ops), draining).await;
        stop.cancel();
        let _ = worker.await;
        Ok(())
    }
}

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight HTTP requests may take to finish once the node stops accepting.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts HTTP/1.1 connections and serves `app` on them until `stop`, then lets requests in
/// flight finish (keep-alive connections close once idle). Upgraded WebSockets are not waited
/// for here: they run on the node's connection tracker and drain on their own.
async fn accept_until(listener: TcpListener, app: Router, stop: CancellationToken) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let http = Arc::new(http);
    let requests = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (http, service, stop) = (http.clone(), TowerToHyperService::new(app.clone()), stop.clone());
        requests.spawn(async move {
            let conn = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    requests.close();
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, requests.wait()).await.is_err() {
        tracing::warn!("HTTP requests still running after the shutdown grace period");
    }
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted)
}
