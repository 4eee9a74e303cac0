//! The reconnecting client: backoff with jitter, resubscribe, resume, deduplicate.

use std::time::Duration;

use serde_json::Value;
use switchboard_protocol::{DialectKind, ServerMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{ClientDialect, ClientMessage, ConnectError, ConnectOptions, Connection, Incoming, RecentIds};

/// How to connect and what to subscribe to.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The endpoints' dialect.
    pub dialect: DialectKind,
    /// Endpoint URLs (`ws://host/ws/notifications`); tried round-robin, so a client moves to
    /// another node when one goes away.
    pub urls: Vec<String>,
    /// The JWT, sent as `?token=`.
    pub token: String,
    /// Messages sent after every (re)connect, in order.
    pub subscriptions: Vec<ClientMessage>,
    /// First reconnect delay; doubles per failed attempt.
    pub min_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
    /// How many recent event ids are remembered for deduplication.
    pub dedupe_window: usize,
    /// TLS settings for `wss://` URLs; `None`: the system's trusted roots.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Local address to connect from; `None`: the system chooses.
    pub source: Option<std::net::IpAddr>,
}

impl ClientConfig {
    /// A config with the documents' reconnection defaults (1 s doubling to 30 s, jittered).
    pub fn new(dialect: DialectKind, urls: Vec<String>, token: String) -> Self {
        ClientConfig {
            dialect,
            urls,
            token,
            subscriptions: Vec::new(),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            dedupe_window: 10_000,
            tls: None,
            source: None,
        }
    }

    /// Connects from local address `source` (a host with several addresses; a load generator
    /// spreading its clients over them).
    pub fn source(mut self, source: std::net::IpAddr) -> Self {
        self.source = Some(source);
        self
    }

    /// Uses `tls` for `wss://` URLs (e.g. a private CA's roots).
    pub fn tls(mut self, tls: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Adds a message to send after every connect.
    pub fn subscribe(mut self, message: ClientMessage) -> Self {
        self.subscriptions.push(message);
        self
    }

    /// Adds the messages that subscribe to `topics` (see [`ClientDialect::subscriptions`]).
    pub fn subscribe_to(mut self, topics: &[&str]) -> Self {
        self.subscriptions.extend(self.dialect.subscriptions(topics));
        self
    }

    /// Sets the backoff bounds.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }
}

/// What the application sees.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Connected (or reconnected) to this URL.
    Connected(String),
    /// An event, never one already delivered.
    Event(Value),
    /// Any other server message (acks, errors, `replay_complete`, pongs).
    Control(Value),
    /// The connection ended with this close code (1006: no close frame); a reconnect follows
    /// unless the code means the credentials were refused.
    Disconnected(u16),
    /// A connect attempt to `url` failed: refused by the server (`status`: the HTTP status it
    /// answered the upgrade with) or not reached at all (`status: None`: the node is down or
    /// unreachable). The next attempt follows the backoff, except after HTTP 401 (the
    /// credentials were refused), which ends the client.
    ConnectFailed {
        /// The URL tried.
        url: String,
        /// The server's HTTP answer, when it gave one.
        status: Option<u16>,
        /// What went wrong, for logs.
        error: String,
    },
}

/// A running client; dropping it disconnects.
pub struct Client {
    rx: mpsc::Receiver<ClientEvent>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Starts connecting in the background.
    pub fn start(config: ClientConfig) -> Client {
        let (tx, rx) = mpsc::channel(1024);
        Client { rx, task: tokio::spawn(run(config, tx)) }
    }

    /// The next event; `None` once the client gave up (credentials refused).
    pub async fn next(&mut self) -> Option<ClientEvent> {
        self.rx.recv().await
    }
}

/// Close codes after which reconnecting cannot help: the credentials were refused.
fn is_fatal(code: u16) -> bool {
    matches!(code, 4001 | 4003 | 4401)
}

/// The delay before reconnect attempt `attempt` (0-based): exponential, capped, with full
/// jitter so that many clients dropped at once do not come back at once.
pub fn backoff_delay(config: &ClientConfig, attempt: u32) -> Duration {
    let exp = config.min_backoff.saturating_mul(1u32 << attempt.min(16));
    let cap = exp.min(config.max_backoff);
    cap.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

async fn run(config: ClientConfig, tx: mpsc::Sender<ClientEvent>) {
    let mut seen = RecentIds::new(config.dedupe_window);
    let mut last_id: Option<String> = None;
    let mut attempt = 0u32;
    for url in config.urls.iter().cycle() {
        let sep = if url.contains('?') { '&' } else { '?' };
        let mut full = format!("{url}{sep}token={}", config.token);
        if let Some(id) = &last_id {
            full.push_str(&format!("&last_event_id={id}"));
        }
        let options = ConnectOptions {
            answer_pings: Some(config.dialect),
            tls: config.tls.clone(),
            source: config.source,
            ..ConnectOptions::default()
        };
        let (ended, fatal) = match Connection::open(&full, &options).await {
            Ok(conn) => {
                attempt = 0;
                let Some(code) = deliver(conn, url, &config, &mut seen, &mut last_id, &tx).await else { return };
                (ClientEvent::Disconnected(code), is_fatal(code))
            }
            Err(e) => {
                let status = match e {
                    ConnectError::Refused(status) => Some(status),
                    _ => None,
                };
                (ClientEvent::ConnectFailed { url: url.clone(), status, error: e.to_string() }, status == Some(401))
            }
        };
        if tx.send(ended).await.is_err() || fatal {
            return;
        }
        tokio::time::sleep(backoff_delay(&config, attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Runs one open connection to `url`: announces it, subscribes, delivers its new events.
/// Returns the close code it ended with, or `None` once the application dropped the client.
async fn deliver(
    mut conn: Connection,
    url: &str,
    config: &ClientConfig,
    seen: &mut RecentIds,
    last_id: &mut Option<String>,
    tx: &mpsc::Sender<ClientEvent>,
) -> Option<u16> {
    tx.send(ClientEvent::Connected(url.to_owned())).await.ok()?;
    for s in &config.subscriptions {
        if conn.send(s).await.is_err() {
            return Some(1006);
        }
    }
    loop {
        let text = match conn.next().await {
            Incoming::Text(t) => t,
            Incoming::Closed(code) => return Some(code),
            Incoming::Binary(_) | Incoming::Pong(_) => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
        let event = match config.dialect.classify(text.as_bytes()) {
            Some(ServerMessage::Event { id, .. }) => {
                if !seen.insert(&id) {
                    continue;
                }
                *last_id = Some(id);
                ClientEvent::Event(v)
            }
            _ => ClientEvent::Control(v),
        };
        tx.send(event).await.ok()?;
    }
}
