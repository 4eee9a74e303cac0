//! Running a process in one of its roles: bind, serve HTTP (and WebSockets on an edge), run the
//! persistence worker where the role has one, and drain gracefully on shutdown.
//!
//! The accept loop is our own, on hyper's HTTP/1.1 connection builder over plain
//! `TcpStream`s, or TLS sessions over them ([`crate::tls`]): an upgraded WebSocket then hands
//! back the socket itself (and its session), which the connection reads with no buffer while
//! idle and writes to directly on fan-out (a generic server would wrap the socket, and every
//! connection would carry its buffers for life).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_worker::WorkerMetrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{ops_router, router, Ops};
use crate::ip_limits::{IpLimits, IpRefusal};
use crate::node::{connect_broker, Node};
use crate::tls::Tls;

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
    let admission = Admission::new(node.config(), Some(node.metrics().clone()))?;
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
        tokio::spawn(switchboard_worker::run(node.broker().clone(), settings, metrics, stop_worker.clone()))
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
    let serving = tokio::spawn(accept_until(listener, app, admission, stop_http.clone()));
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
}

/// The broker sink of a worker-only process, which subscribes to nothing: it learns of new
/// ingest entries through blocking reads.
struct NoDeliveries;

impl switchboard_broker::DeliverySink for NoDeliveries {
    fn deliver(&self, _: &str, _: bytes::Bytes) {}
}

impl WorkerProcess {
    /// Connects to the config's broker.
    pub async fn connect(config: Config) -> Result<WorkerProcess, BrokerError> {
        let broker = connect_broker(&config, Arc::new(NoDeliveries)).await?;
        Ok(WorkerProcess { config, broker })
    }

    /// Runs the worker and serves the operations endpoints on `listener` until `shutdown`,
    /// then gives the worker's shards up.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let admission = Admission::new(&self.config, None)?;
        let registry = prometheus::Registry::new_custom(Some("switchboard".into()), None).unwrap_or_default();
        let metrics = WorkerMetrics::register(&registry);
        let draining = CancellationToken::new();
        crate::metrics::register_broker_health(&registry, self.broker.clone(), draining.clone());
        let holder = format!("worker_{}", ulid::Ulid::new());
        let settings = self.config.persistence.worker_settings(holder);
        let stop = CancellationToken::new();
        let worker = tokio::spawn(switchboard_worker::run(self.broker.clone(), settings, metrics, stop.clone()));
        let metrics_token = crate::http::ops::metrics_token(&self.config);
        let ops = Ops { broker: self.broker, registry, draining: draining.clone(), metrics_token };
        let stop_accepting = draining.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("stopping");
            stop_accepting.cancel();
        });
        accept_until(listener, ops_router(ops), admission, draining).await;
        stop.cancel();
        let _ = worker.await;
        Ok(())
    }
}

/// How long in-flight HTTP requests may take to finish once the node stops accepting.
const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Who may connect, how long a handshake (TLS, then the request head) may take, and TLS: the
/// accept loop's settings.
struct Admission {
    handshake_timeout: Duration,
    ip_limits: Option<Arc<IpLimits>>,
    tls: Option<Arc<Tls>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Admission {
    /// Fails when TLS is configured and its certificate or key does not load.
    fn new(config: &Config, metrics: Option<Arc<crate::metrics::Metrics>>) -> std::io::Result<Admission> {
        let tls = match (config.tls_cert.as_str(), config.tls_key.as_str()) {
            ("", "") => None,
            (cert, key) => Some(Arc::new(
                Tls::new(cert.as_ref(), key.as_ref())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?,
            )),
        };
        Ok(Admission {
            handshake_timeout: config.handshake_timeout,
            ip_limits: IpLimits::new(&config.ip_limits),
            tls,
            metrics,
        })
    }
}

/// The answer to a connection over its address's limits, written before any of its request
/// is read (best effort: the socket is closed right after).
fn refuse(stream: &tokio::net::TcpStream, why: IpRefusal) {
    let body = format!(
        r#"{{"error":"too_many_requests","code":"{}","status":429,"message":"too many connections from this address; retry later"}}"#,
        why.code()
    );
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// A listener on `addr` whose kernel accept queue holds `backlog` connections (see
/// `listen_backlog` in the config), with `SO_REUSEADDR` as the standard library sets it.
pub fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts HTTP/1.1 connections and serves `app` on them until `stop`, then lets requests in
/// flight finish (keep-alive connections close once idle). Upgraded WebSockets are not waited
/// for here: they run on the node's connection tracker and drain on their own. A connection
/// over its address's limits is answered 429 and closed before its request is read; one that
/// does not send its request head within the handshake timeout is dropped.
async fn accept_until(listener: TcpListener, app: Router, admission: Admission, stop: CancellationToken) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(admission.handshake_timeout);
    let http = Arc::new(http);
    let requests = TaskTracker::new();
    let reload = admission.tls.as_ref().map(|tls| tls.spawn_reload());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
        let app = match &admission.ip_limits {
            None => app.clone(),
            Some(limits) => match limits.admit(peer.ip(), std::time::Instant::now()) {
                // The slot rides in every request of the connection, and from an upgrade on
                // in the WebSocket's task: the address's count drops when the last one ends.
                Ok(slot) => app.clone().layer(axum::Extension(Arc::new(slot))),
                Err(why) => {
                    if let Some(m) = &admission.metrics {
                        m.connects.with_label_values(&["(tcp)", why.code()]).inc();
                    }
                    refuse(&stream, why);
                    continue;
                }
            },
        };
        let (http, service, stop) = (http.clone(), TowerToHyperService::new(app), stop.clone());
        let Some(tls) = admission.tls.clone() else {
            requests.spawn(serve_http(http, TokioIo::new(stream), service, stop));
            continue;
        };
        let (timeout, metrics) = (admission.handshake_timeout, admission.metrics.clone());
        requests.spawn(async move {
            let done = tls.accept(stream, timeout).await;
            let outcome = done.as_ref().map_or_else(|h| *h, |(_, kind)| *kind);
            if let Some(m) = &metrics {
                m.tls_handshakes.with_label_values(&[outcome.label()]).inc();
            }
            if let Ok((stream, _)) = done {
                serve_http(http, TokioIo::new(stream), service, stop).await;
            }
        });
    }
    if let Some(reload) = reload {
        reload.abort();
    }
    drop(listener);
    requests.close();
    if tokio::time::timeout(HTTP_SHUTDOWN_GRACE, requests.wait()).await.is_err() {
        tracing::warn!("HTTP requests still running after the shutdown grace period");
    }
}

/// Serves HTTP/1.1 (and upgrades) on one accepted connection until it ends, or until `stop`
/// lets the request in flight finish.
async fn serve_http<I>(
    http: Arc<hyper::server::conn::http1::Builder>,
    io: I,
    service: TowerToHyperService<Router>,
    stop: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = http.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted)
}

#[cfg(test)]
mod bind_tests {
    use std::time::Duration;

    #[tokio::test]
    async fn the_listen_backlog_bounds_the_connections_waiting_to_be_accepted() {
        // Nothing accepts: the kernel queues backlog + 1 connections, then drops further SYNs
        // (the client would retry after a second), so the next connect does not complete.
        let listener = super::bind("127.0.0.1:0".parse().expect("an address"), 2).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut queued = Vec::new();
        for i in 0..3 {
            let connect = tokio::net::TcpStream::connect(addr);
            queued
                .push(tokio::time::timeout(Duration::from_secs(10), connect).await.expect("queued").expect("connect"));
            assert_eq!(queued.len(), i + 1);
        }
        let over = tokio::time::timeout(Duration::from_millis(300), tokio::net::TcpStream::connect(addr)).await;
        assert!(over.is_err(), "a connect past the backlog was queued too");
        drop(listener);
    }
}
