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
        }
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
        let options =
            ConnectOptions { answer_pings: Some(config.dialect), tls: config.tls.clone(), ..ConnectOptions::default() };
        let code = match Connection::open(&full, &options).await {
            Ok(mut conn) => {
                attempt = 0;
                if tx.send(ClientEvent::Connected(url.clone())).await.is_err() {
                    return;
                }
                let mut subscribed = true;
                for s in &config.subscriptions {
                    subscribed &= conn.send(s).await.is_ok();
                }
                if !subscribed {
                    1006
                } else {
                    loop {
                        let text = match conn.next().await {
                            Incoming::Text(t) => t,
                            Incoming::Closed(code) => break code,
                            Incoming::Binary(_) | Incoming::Pong(_) => continue,
                        };
                        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                        let event = match config.dialect.classify(text.as_bytes()) {
                            Some(ServerMessage::Event { id, .. }) => {
                                if !seen.insert(&id) {
                                    continue;
                                }
                                last_id = Some(id);
                                ClientEvent::Event(v)
                            }
                            _ => ClientEvent::Control(v),
                        };
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(ConnectError::Refused(401)) => 4001,
            Err(_) => 1006,
        };
        if tx.send(ClientEvent::Disconnected(code)).await.is_err() || is_fatal(code) {
            return;
        }
        tokio::time::sleep(backoff_delay(&config, attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}
