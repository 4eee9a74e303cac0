//! The connection actor: one per WebSocket, the same shape for every dialect.
//!
//! The task that runs [`run`] is the reader and owns the [`MessageHandler`] (for the real
//! endpoints a [`Session`]: subscriptions, command handling); a second task runs the writer,
//! fed by a bounded queue. Everything else (dispatcher, drain, revocation) reaches the
//! connection through its [`ConnHandle`].

mod assembler;
mod echo;
mod handle;
mod rate;
mod session;
mod wire;
mod writer;

use std::future::Future;

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Role, WebSocketError};
use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::CloseReason;
use tokio::sync::mpsc;

pub use echo::EchoHandler;
pub use handle::{ClosePlan, ConnHandle, Outbound, Selection, SendOutcome};
pub use session::Session;
pub use wire::{close_payload, push_frame, Opcode};

use crate::endpoint::EndpointRuntime;
use crate::node::Node;
use assembler::MessageAssembler;

/// What a connection does with the messages it receives. The actor shape (reader, writer,
/// heartbeats, close handshake) is the same for every handler.
pub trait MessageHandler: Send {
    /// Called once after the upgrade, before any message is read.
    fn start(&mut self) -> impl Future<Output = Result<(), CloseReason>> + Send;
    /// One complete client message.
    fn handle(&mut self, data: &[u8], is_text: bool) -> impl Future<Output = ()> + Send;
    /// Called once when the connection ends.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
    /// Whether the client subscribed to anything (connections that never do are closed after
    /// the endpoint's `unsubscribed_timeout`).
    fn is_subscribed(&self) -> bool;
}

/// How long to wait for the client's close frame after the server sent its own.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Runs one accepted connection to its end. `expires_at` (unix seconds) closes it with the
/// endpoint's `auth_expired` code; `make_handler` builds the handler from the shared handle.
pub async fn run<H: MessageHandler>(
    node: Arc<Node>,
    endpoint: Arc<EndpointRuntime>,
    expires_at: Option<u64>,
    make_handler: impl FnOnce(Arc<ConnHandle>) -> H,
    upgrade: fastwebsockets::upgrade::UpgradeFut,
) {
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (read_half, write_half) = tokio::io::split(ws.into_inner());
    let (mut reader, _) = fastwebsockets::after_handshake_split(read_half, tokio::io::sink(), Role::Server);
    reader.set_max_message_size(endpoint.config.max_message_bytes);
    reader.set_auto_close(true);
    reader.set_auto_pong(true);

    let (tx, rx) = mpsc::channel(endpoint.config.outbound_queue);
    let conn = Arc::new(ConnHandle::new(node.next_conn_id(), endpoint.clone(), Selection::default(), tx));
    let expires_at = expires_at.map(|exp| {
        let left = exp.saturating_sub(now_millis() / 1000);
        tokio::time::Instant::now() + Duration::from_secs(left)
    });
    let writer = tokio::spawn(writer::run(write_half, rx, conn.clone(), expires_at));

    let path = endpoint.config.path.as_str();
    node.metrics.connections.with_label_values(&[path]).inc();
    let mut session = make_handler(conn.clone());
    if let Err(reason) = session.start().await {
        conn.close(reason);
    }

    let mut assembler = MessageAssembler::new(endpoint.config.max_message_bytes);
    let mut bucket = rate::TokenBucket::new(endpoint.config.message_rate, endpoint.config.message_burst);
    // On drain, each connection closes at a random point of the drain window, so clients
    // reconnect elsewhere spread out instead of all at once.
    let jitter = node.config.drain_window.mul_f64(rand::random::<f64>());
    let drain = async {
        node.draining.cancelled().await;
        tokio::time::sleep(jitter).await;
    };
    tokio::pin!(drain);
    let far = tokio::time::Instant::now() + Duration::from_secs(10 * 365 * 86_400);
    let after = |d: Duration| if d.is_zero() { far } else { tokio::time::Instant::now() + d };
    let idle = tokio::time::sleep_until(after(endpoint.config.idle_timeout));
    tokio::pin!(idle);
    let unsubscribed = tokio::time::sleep_until(after(endpoint.config.unsubscribed_timeout));
    tokio::pin!(unsubscribed);
    let mut obligations = |frame: Frame<'_>| {
        match frame.opcode {
            OpCode::Pong => conn.send_pong(frame.payload.to_vec()),
            // Control frames carry at most 125 bytes; a longer close is a protocol error.
            OpCode::Close if frame.payload.len() > 125 => conn.close(CloseReason::ProtocolError),
            OpCode::Close => conn.close_with(ClosePlan::Echo(frame.payload.to_vec())),
            _ => {}
        }
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    loop {
        let frame = tokio::select! {
            biased;
            _ = conn.cancelled() => break,
            _ = &mut drain => {
                conn.close(CloseReason::GoingAway);
                break;
            }
            _ = &mut idle => {
                conn.close(CloseReason::Idle);
                break;
            }
            _ = &mut unsubscribed => {
                if session.is_subscribed() {
                    unsubscribed.as_mut().reset(after(endpoint.config.unsubscribed_timeout));
                    continue;
                }
                conn.close_with(ClosePlan::Server(CloseReason::Idle, "No subscription".to_owned()));
                break;
            }
            frame = reader.read_frame(&mut obligations) => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                conn.close_with(plan_for(&e));
                break;
            }
        };
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Pong => conn.pong_received(now_millis()),
            OpCode::Ping => {}
            OpCode::Text | OpCode::Binary | OpCode::Continuation => match assembler.push(frame) {
                Ok(Some(message)) => {
                    node.metrics.messages_in.with_label_values(&[path]).inc();
                    idle.as_mut().reset(after(endpoint.config.idle_timeout));
                    if let Err(wait) = bucket.take(std::time::Instant::now()) {
                        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                        let text = format!("Rate limited: retry in {secs} s");
                        conn.close_with(ClosePlan::Server(CloseReason::RateLimited, text));
                        break;
                    }
                    session.handle(&message.data, message.is_text).await;
                }
                Ok(None) => {}
                Err(reason) => {
                    conn.close(reason);
                    break;
                }
            },
        }
    }

    session.finish().await;
    // After a server-initiated close, read until the client answers (or a bound passes) so
    // the close frame is not lost to a TCP reset on unread data. A connection failed for a
    // protocol violation is dropped at once instead (RFC 6455 §7.1.7).
    let linger = matches!(conn.close_plan(), Some(ClosePlan::Server(reason, _)) if !reason.fails_connection());
    if linger {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            loop {
                match reader.read_frame(&mut obligations).await {
                    Ok(f) if f.opcode == OpCode::Close => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
        .await;
    }
    let _ = writer.await;
    let code = match conn.close_plan() {
        Some(ClosePlan::Server(reason, _)) => endpoint.close_code(reason).to_string(),
        Some(ClosePlan::Echo(p)) if p.len() >= 2 => u16::from_be_bytes([p[0], p[1]]).to_string(),
        Some(ClosePlan::Echo(_)) => "1005".into(),
        _ => "1006".into(),
    };
    node.metrics.disconnects.with_label_values(&[path, &code]).inc();
    node.metrics.connections.with_label_values(&[path]).dec();
}

fn plan_for(error: &WebSocketError) -> ClosePlan {
    let reason = match error {
        WebSocketError::FrameTooLarge => CloseReason::MessageTooBig,
        WebSocketError::InvalidUTF8 => CloseReason::InvalidPayload,
        WebSocketError::UnexpectedEOF | WebSocketError::ConnectionClosed | WebSocketError::IoError(_) => {
            return ClosePlan::Silent
        }
        _ => CloseReason::ProtocolError,
    };
    ClosePlan::Server(reason, reason.default_text().to_owned())
}
