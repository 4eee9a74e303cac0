//! The test harness shared by every integration test: a node on a free loopback port, and
//! clients that talk to it over real sockets (tokio-tungstenite for WebSockets, reqwest for
//! HTTP). Waits are on events with generous timeouts, never on bare sleeps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_edge::config::{Config, DEFAULT_CONFIG_TOML};
use switchboard_edge::Node;
use switchboard_protocol::token::mint_hs256;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod fault_proxy;
pub mod history;
pub mod process;
pub mod raw;
pub mod redis;
pub mod sentinel;
pub mod tls;
pub mod traffic;

pub use tokio_tungstenite::tungstenite;

/// A broker delivery sink that drops every message: for tests that use a broker's commands
/// and never subscribe.
pub struct NoDeliveries;

impl switchboard_broker::DeliverySink for NoDeliveries {
    fn deliver(&self, _: &str, _: bytes::Bytes) {}
}

/// Bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);
/// The JWT secret of test nodes.
pub const SECRET: &str = "test-secret";
/// The admin key of test nodes.
pub const ADMIN: &str = "test-admin";

/// The default config with test credentials, the echo endpoint, and `extra` TOML appended
/// to the top-level table (before the endpoints) or edits applied by `edit`.
pub fn test_config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::from_toml(DEFAULT_CONFIG_TOML).expect("default config is valid");
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.jwt.secret = SECRET.into();
    config.admin_key = ADMIN.into();
    config.diagnostics.echo_path = "/diag/echo".into();
    config.drain_window = Duration::from_secs(1);
    edit(&mut config);
    let problems = config.problems();
    assert!(problems.is_empty(), "test config invalid: {problems:?}");
    config
}

/// A node serving on a free loopback port inside the test's runtime.
pub struct TestNode {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The node itself, for white-box checks.
    pub node: Arc<Node>,
    http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl TestNode {
    /// Starts a node with the given config on the embedded broker.
    pub async fn start(config: Config) -> TestNode {
        let node = Node::embedded(config).expect("node");
        Self::serve(node).await
    }

    /// Starts a node sharing an in-process hub with other test nodes (a cluster in one process).
    pub async fn start_on_hub(config: Config, hub: &switchboard_broker::memory::MemoryHub) -> TestNode {
        let node = Node::with_broker(config, |sink| Arc::new(hub.node(sink))).expect("node");
        Self::serve(node).await
    }

    /// Starts a node on an in-process broker whose clock the test controls.
    pub async fn start_with_clock(config: Config, clock: Arc<dyn switchboard_broker::Clock>) -> TestNode {
        let hub = switchboard_broker::memory::MemoryHub::with_clock(clock);
        let node = Node::with_broker(config, |sink| Arc::new(hub.node(sink))).expect("node");
        Self::serve(node).await
    }

    /// Starts a node on the broker its config names (Redis when `redis_url` is set) in `role`:
    /// an edge alone, or an edge with the persistence worker.
    pub async fn start_in_role(config: Config, role: switchboard_edge::server::Role) -> TestNode {
        let node = Node::connect(config).await.expect("node connects to its broker");
        Self::serve_in(node, role).await
    }

    async fn serve(node: Arc<Node>) -> TestNode {
        Self::serve_in(node, switchboard_edge::server::Role::All).await
    }

    async fn serve_in(node: Arc<Node>, role: switchboard_edge::server::Role) -> TestNode {
        let listener = tokio::net::TcpListener::bind(node.config().listen).await.expect("bind a free port");
        let addr = listener.local_addr().expect("local addr");
        let serving = node.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            let _ = switchboard_edge::server::serve_role(serving, role, listener, shutdown).await;
        });
        TestNode { addr, node, http: reqwest::Client::new(), shutdown: Some(tx), served: Some(served) }
    }

    /// Starts a graceful drain (as SIGTERM does) and waits until the server has finished.
    pub async fn drain(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(WAIT, served).await.expect("drain finished in time").expect("server task");
        }
    }

    /// Starts a node with the default test config.
    pub async fn default() -> TestNode {
        Self::start(test_config(|_| {})).await
    }

    /// A token for `sub` signed with the test secret.
    pub fn token(&self, sub: &str) -> String {
        token_with(sub, serde_json::Map::new())
    }

    /// `ws://addr{path_and_query}`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.addr)
    }

    /// `http://addr{path}`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connects a WebSocket client to `path_and_query`, with extra headers.
    pub async fn connect(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, tungstenite::Error> {
        connect_ws(&self.ws_url(path_and_query), headers).await
    }

    /// Connects `user` with a token in the query string and returns the client after the
    /// connection ack (orbnet) or right away (dialects without one).
    pub async fn connect_user(&self, path: &str, user: &str) -> WsClient {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.connect(&format!("{path}{sep}token={}", self.token(user)), &[]).await.expect("connect")
    }

    /// An authenticated admin request.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.http_url(path)).bearer_auth(ADMIN)
    }

    /// A plain request.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.http_url(path))
    }

    /// Publishes an event through the API and returns its id.
    pub async fn publish(&self, body: Value) -> String {
        let resp = self.admin(reqwest::Method::POST, "/v1/publish").json(&body).send().await.expect("publish request");
        let status = resp.status();
        let json: Value = resp.json().await.expect("publish answer is JSON");
        assert_eq!(status, 200, "publish failed: {json}");
        json["id"].as_str().expect("id").to_owned()
    }

    /// Creates an API key and returns it.
    pub async fn api_key(&self, name: &str, max_connections: u32) -> String {
        let body = serde_json::json!({"name": name, "endpoints": ["/ws/threats"], "max_connections": max_connections});
        let resp = self.admin(reqwest::Method::POST, "/v1/api-keys").json(&body).send().await.expect("create key");
        assert_eq!(resp.status(), 201);
        let json: Value = resp.json().await.expect("JSON");
        json["key"].as_str().expect("key").to_owned()
    }

    /// Adds a channel member.
    pub async fn add_member(&self, channel: &str, user: &str) {
        let resp = self
            .admin(reqwest::Method::PUT, &format!("/v1/channels/{channel}/members/{user}"))
            .send()
            .await
            .expect("add member");
        assert_eq!(resp.status(), 204);
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.request(reqwest::Method::GET, "/metrics").send().await.expect("metrics").text().await.expect("text")
    }

    /// The value of one series on `/metrics` (`switchboard_persisted_total`, or with labels
    /// `switchboard_connections{endpoint="/ws"}`), 0 when it is not there yet.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until `series` on `/metrics` reaches `at_least`.
    pub async fn await_metric(&self, series: &str, at_least: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.metric(series).await;
            if value >= at_least {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{series} stayed at {value}, below {at_least}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until no local connection is registered on `topic` (a closed connection has been
    /// cleaned up).
    pub async fn await_no_local_subscribers(&self, topic: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.node.has_local_subscribers(topic) {
            assert!(tokio::time::Instant::now() < deadline, "{topic} still has local subscribers");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The value of `series` in a Prometheus text exposition (0 when absent, as for a labelled
/// counter nothing has counted yet; a sample that does not parse fails the test). A series
/// given without labels matches the sample without labels.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap_or_else(|_| panic!("unparseable sample: {l}")))
        })
        .unwrap_or(0.0)
}

/// Connects a WebSocket client to `url`, with extra headers.
pub async fn connect_ws(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, tungstenite::Error> {
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            v.parse().expect("header value"),
        );
    }
    let (ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await.expect("connect timed out")?;
    Ok(WsClient { ws })
}

/// A token for `sub` with extra claims, signed with the test secret.
pub fn token_with(sub: &str, claims: serde_json::Map<String, Value>) -> String {
    mint_hs256(SECRET, sub, 3600, claims).expect("mint token")
}

/// What a client observed.
#[derive(Debug)]
pub enum Received {
    /// A text message, parsed.
    Json(Value),
    /// A binary message.
    Binary(Vec<u8>),
    /// The server closed with this code and reason.
    Closed(u16, String),
    /// The connection ended without a close frame.
    Gone,
}

/// A real WebSocket client.
pub struct WsClient {
    /// The underlying stream, for tests that need raw access.
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// The next data message or close (pings and pongs are skipped), failing after [`WAIT`].
    pub async fn next(&mut self) -> Received {
        loop {
            let msg = match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("nothing received within {WAIT:?}"),
                Ok(None) => return Received::Gone,
                Ok(Some(Err(_))) => return Received::Gone,
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => return Received::Json(serde_json::from_str(&t).expect("server sent invalid JSON")),
                Message::Binary(b) => return Received::Binary(b.to_vec()),
                Message::Close(Some(f)) => return Received::Closed(f.code.into(), f.reason.to_string()),
                Message::Close(None) => return Received::Closed(1005, String::new()),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// Reads the welcome of a replaying endpoint (orbnet notifications): `connection_ack`,
    /// then `replay_complete` with nothing missed; returns the ack.
    pub async fn welcomed(&mut self) -> Value {
        let ack = self.json().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        let replay = self.json().await;
        assert_eq!(replay, serde_json::json!({"type": "replay_complete", "count": 0, "truncated": false}));
        ack
    }

    /// The next JSON message, failing on anything else.
    pub async fn json(&mut self) -> Value {
        match self.next().await {
            Received::Json(v) => v,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// Waits for the close frame, skipping data; returns code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Received::Closed(code, reason) => return (code, reason),
                Received::Gone => panic!("connection dropped without a close frame"),
                _ => continue,
            }
        }
    }

    /// Sends a JSON text message.
    pub async fn send_json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.expect("send");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s.to_owned())).await.expect("send");
    }

    /// A round trip that proves every message sent before it has been processed by the
    /// server: a WebSocket ping is answered only after the frames before it were handled.
    pub async fn barrier(&mut self) {
        self.ws.send(Message::Ping(b"barrier".to_vec().into())).await.expect("send ping");
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Pong(p)))) if &p[..] == b"barrier" => return,
                Ok(Some(Ok(Message::Text(t)))) => panic!("unexpected message before barrier: {t}"),
                Ok(Some(Ok(_))) => continue,
                other => panic!("barrier failed: {other:?}"),
            }
        }
    }

    /// Like [`WsClient::barrier`], but hands every JSON message that arrives before the pong
    /// to `seen` instead of failing on it.
    pub async fn barrier_allowing_messages(&mut self, mut seen: impl FnMut(&Value)) {
        self.ws.send(Message::Ping(b"barrier".to_vec().into())).await.expect("send ping");
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Ok(Some(Ok(Message::Pong(p)))) if &p[..] == b"barrier" => return,
                Ok(Some(Ok(Message::Text(t)))) => seen(&serde_json::from_str(&t).expect("server sent invalid JSON")),
                Ok(Some(Ok(_))) => continue,
                other => panic!("barrier failed: {other:?}"),
            }
        }
    }

    /// Whether the server admitted this fresh connection (`Some`) or refused it over a quota
    /// with 4008 or 1008 (`None`): a ping is answered only once the session runs. Greetings before
    /// the answer are skipped; anything else fails the test.
    pub async fn admitted(mut self) -> Option<WsClient> {
        self.ws.send(Message::Ping(b"admitted?".to_vec().into())).await.expect("send ping");
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("an answer to the ping or a close") {
                Some(Ok(Message::Pong(p))) if &p[..] == b"admitted?" => return Some(self),
                // 4008 in the JSON dialects, 1008 (policy) where the document says so (brl).
                Some(Ok(Message::Close(Some(f)))) if [4008, 1008].contains(&u16::from(f.code)) => return None,
                Some(Ok(Message::Text(_) | Message::Ping(_))) => continue,
                other => panic!("neither admitted nor refused with 4008: {other:?}"),
            }
        }
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await;
    }

    /// Closes from the client side and reads to the end of the closing handshake: returns the
    /// JSON messages the server sent before its close frame. They reached the client, and the
    /// server counts them as delivered (its replay cursor moves past them).
    pub async fn close_and_drain(mut self) -> Vec<Value> {
        let _ = self.ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await;
        let mut sent = Vec::new();
        loop {
            match self.next().await {
                Received::Json(m) => sent.push(m),
                Received::Binary(_) => {}
                Received::Closed(..) | Received::Gone => return sent,
            }
        }
    }
}
