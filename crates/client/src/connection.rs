//! One WebSocket connection to a Switchboard endpoint, without reconnection: the building
//! block of [`crate::Client`], and what load tools use directly when they hold tens of
//! thousands of connections and want to choose the source address and buffer sizes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use switchboard_protocol::{DialectKind, FrameKind, ServerMessage};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Bytes, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::stream::Stream;
use crate::{ClientDialect, ClientMessage};

/// How a connection is opened.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Local address to connect from (e.g. one of several `127.0.0.x`, to use more than one
    /// address's ephemeral ports); `None` lets the system choose.
    pub source: Option<IpAddr>,
    /// Read buffer per connection; small values suit processes holding many connections.
    pub read_buffer_bytes: usize,
    /// Answer this dialect's heartbeat pings (veriops JSON `ping`, brl `0x20`) inside
    /// [`Connection::next`], as a well-behaved client must to stay connected.
    pub answer_pings: Option<DialectKind>,
    /// TLS settings for `wss://` URLs (trusted roots, resumption); `None`: the system's
    /// trusted roots ([`crate::stream::system_roots`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions { source: None, read_buffer_bytes: 16 * 1024, answer_pings: None, tls: None }
    }
}

/// Why a connection could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server answered the upgrade with this HTTP status (401: credentials refused).
    #[error("the server refused the WebSocket upgrade with HTTP {0}")]
    Refused(u16),
    /// The URL is not a `ws://host[:port]/path` URL this client can open.
    #[error("bad URL: {0}")]
    Url(String),
    /// Resolving, binding or connecting failed.
    #[error("{what}: {error}")]
    Io {
        /// The step that failed.
        what: &'static str,
        /// The system's error.
        error: std::io::Error,
    },
    /// The server answered a message with an error message (this one, as sent).
    #[error("the server refused a message: {0}")]
    Rejected(String),
    /// The server closed the connection (with this code) before answering.
    #[error("the server closed the connection with {0}")]
    Closed(u16),
    /// The WebSocket handshake or a later frame failed.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
}

/// What the server sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A text message (both JSON dialects send text), unparsed.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// The answer to a ping this side sent.
    Pong(Bytes),
    /// The connection ended with this close code (1005: a close frame without a code; 1006:
    /// no close frame).
    Closed(u16),
}

/// An open connection.
pub struct Connection {
    ws: WebSocketStream<Stream>,
    answer_pings: Option<DialectKind>,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ConnectError {
    move |error| ConnectError::Io { what, error }
}

impl Connection {
    /// Opens `url` (`ws://host:port/path?token=...`, or `wss://` for TLS): TCP from
    /// `options.source`, the TLS handshake for `wss://` (`options.tls`), then the WebSocket
    /// handshake.
    pub async fn open(url: &str, options: &ConnectOptions) -> Result<Connection, ConnectError> {
        let request = url.into_client_request().map_err(|e| ConnectError::Url(format!("{url}: {e}")))?;
        let uri = request.uri();
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(ConnectError::Url(format!("{url}: only ws:// and wss:// URLs"))),
        };
        let host = uri.host().ok_or_else(|| ConnectError::Url(format!("{url}: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let server = tokio::net::lookup_host((host, port))
            .await
            .map_err(io("resolve"))?
            .find(|a| options.source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
            .ok_or_else(|| ConnectError::Url(format!("{url}: no address of a usable family")))?;
        let socket = if server.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(io("socket"))?;
        if let Some(source) = options.source {
            socket.bind(SocketAddr::new(source, 0)).map_err(io("bind"))?;
        }
        let stream = socket.connect(server).await.map_err(io("connect"))?;
        stream.set_nodelay(true).map_err(io("nodelay"))?;
        let stream = if tls {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| ConnectError::Url(format!("{url}: {e}")))?;
            let config = options.tls.clone().unwrap_or_else(crate::stream::system_roots);
            let session = tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(io("tls"))?;
            Stream::Tls(Box::new(session))
        } else {
            Stream::Plain(stream)
        };
        // Writes go straight to the socket: no write buffer to hold per connection.
        let config = WebSocketConfig::default().read_buffer_size(options.read_buffer_bytes).write_buffer_size(0);
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok((ws, _)) => Ok(Connection { ws, answer_pings: options.answer_pings }),
            Err(tungstenite::Error::Http(resp)) => Err(ConnectError::Refused(resp.status().as_u16())),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), ConnectError> {
        Ok(self.ws.send(Message::Text(text.into())).await?)
    }

    /// Sends a dialect message (a subscribe, a ping, a chat message).
    pub async fn send(&mut self, message: &ClientMessage) -> Result<(), ConnectError> {
        let frame = match message.frame {
            FrameKind::Text => {
                let text = Utf8Bytes::try_from(message.bytes.clone())
                    .map_err(|e| ConnectError::WebSocket(tungstenite::Error::Utf8(e.to_string())))?;
                Message::Text(text)
            }
            FrameKind::Binary => Message::Binary(message.bytes.clone()),
        };
        Ok(self.ws.send(frame).await?)
    }

    /// Sends a WebSocket ping; its pong comes back as [`Incoming::Pong`].
    pub async fn ping(&mut self, payload: &'static [u8]) -> Result<(), ConnectError> {
        Ok(self.ws.send(Message::Ping(Bytes::from_static(payload))).await?)
    }

    /// Sends `messages`, then a ping, and waits for its pong: the server handles a
    /// connection's frames in order, so once the pong is back every message was processed
    /// (e.g. the subscriptions are in force). Returns the text messages that arrived meanwhile,
    /// or [`ConnectError::Rejected`] if one of them was an error message of `dialect`.
    pub async fn send_confirmed(
        &mut self,
        dialect: DialectKind,
        messages: &[ClientMessage],
    ) -> Result<Vec<Utf8Bytes>, ConnectError> {
        for m in messages {
            self.send(m).await?;
        }
        self.ping(b"confirm").await?;
        let mut meanwhile = Vec::new();
        loop {
            match self.next().await {
                Incoming::Pong(_) => break,
                Incoming::Text(t) => meanwhile.push(t),
                Incoming::Binary(b) => {
                    if let Some(ServerMessage::Error { code, message, .. }) = dialect.classify(&b) {
                        return Err(ConnectError::Rejected(format!("{code}: {message}")));
                    }
                }
                Incoming::Closed(code) => return Err(ConnectError::Closed(code)),
            }
        }
        let is_error = |t: &&Utf8Bytes| matches!(dialect.classify(t.as_bytes()), Some(ServerMessage::Error { .. }));
        match meanwhile.iter().find(is_error) {
            Some(error) => Err(ConnectError::Rejected(error.to_string())),
            None => Ok(meanwhile),
        }
    }

    /// Answers `message` if it is a heartbeat ping of the dialect this connection answers for;
    /// returns whether it was one.
    async fn answered(&mut self, message: &[u8]) -> bool {
        let Some(dialect) = self.answer_pings else { return false };
        let codec = dialect.codec();
        let Some(pong) = codec.answer_to_ping(message) else { return false };
        // A failed send surfaces as the close that follows.
        let _ = self.send(&ClientMessage { frame: codec.frame_kind(), bytes: pong }).await;
        true
    }

    /// The next message; WebSocket pings (and the dialect's own, where
    /// [`ConnectOptions::answer_pings`] says so) are answered on the way.
    pub async fn next(&mut self) -> Incoming {
        loop {
            return match self.ws.next().await {
                Some(Ok(Message::Text(t))) if self.answered(t.as_bytes()).await => continue,
                Some(Ok(Message::Binary(b))) if self.answered(&b).await => continue,
                Some(Ok(Message::Text(t))) => Incoming::Text(t),
                Some(Ok(Message::Binary(b))) => Incoming::Binary(b),
                Some(Ok(Message::Pong(p))) => Incoming::Pong(p),
                Some(Ok(Message::Close(frame))) => Incoming::Closed(frame.map_or(1005, |f| u16::from(f.code))),
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => continue,
                Some(Err(_)) | None => Incoming::Closed(1006),
            };
        }
    }

    /// Closes with 1000 and waits (briefly) for the server's close frame.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
