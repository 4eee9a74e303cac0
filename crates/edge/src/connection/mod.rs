//! The connection actor: one per WebSocket, the same shape for every dialect.
//!
//! The task that runs [`run`] is the reader and owns the [`Session`] (subscriptions, command
//! handling); a second task runs the [`writer`], fed by a bounded queue. Everything else
//! (dispatcher, drain, revocation) reaches the connection through its [`ConnHandle`].

mod assembler;
mod handle;
mod session;
mod wire;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Role, WebSocketError};
use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::CloseReason;
use tokio::sync::mpsc;

pub use handle::{ClosePlan, ConnHandle, Outbound, Selection, SendOutcome};
pub use wire::{close_payload, push_frame, Opcode};

use crate::auth::Principal;
use crate::endpoint::EndpointRuntime;
use crate::node::Node;
use assembler::MessageAssembler;
use session::Session;

/// How long to wait for the client's close frame after the server sent its own.
const CLOSE_LINGER: Duration = Duration::from_secs(3);

/// Runs one accepted connection to its end.
pub async fn run(
    node: Arc<Node>,
    endpoint: Arc<EndpointRuntime>,
    principal: Principal,
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
    let (mut reader, _) =
        fastwebsockets::after_handshake_split(read_half, tokio::io::sink(), Role::Server);
    reader.set_max_message_size(endpoint.config.max_message_bytes);
    reader.set_auto_close(true);
    reader.set_auto_pong(true);

    let (tx, rx) = mpsc::channel(endpoint.config.outbound_queue);
    let conn = Arc::new(ConnHandle::new(
        node.next_conn_id(),
        endpoint.clone(),
        Selection::default(),
        tx,
    ));
    let expires_at = principal.expires_at().map(|exp| {
        let left = exp.saturating_sub(now_millis() / 1000);
        tokio::time::Instant::now() + Duration::from_secs(left)
    });
    let writer = tokio::spawn(writer::run(write_half, rx, conn.clone(), expires_at));

    let path = endpoint.config.path.as_str();
    node.metrics.connections.with_label_values(&[path]).inc();
    let mut session = Session::new(node.clone(), conn.clone(), principal);
    if let Err(reason) = session.start().await {
        conn.close(reason);
    }

    let mut assembler = MessageAssembler::new(endpoint.config.max_message_bytes);
    let mut obligations = |frame: Frame<'_>| {
        match frame.opcode {
            OpCode::Pong => conn.send_pong(frame.payload.to_vec()),
            OpCode::Close => conn.close_with(ClosePlan::Echo(frame.payload.to_vec())),
            _ => {}
        }
        std::future::ready(Ok::<(), std::convert::Infallible>(()))
    };
    loop {
        let frame = tokio::select! {
            biased;
            _ = conn.cancelled() => break,
            _ = node.draining.cancelled() => {
                conn.close(CloseReason::GoingAway);
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
    // the close frame is not lost to a TCP reset on unread data.
    if let Some(ClosePlan::Server(..)) = conn.close_plan() {
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
    node.metrics
        .disconnects
        .with_label_values(&[path, &code])
        .inc();
    node.metrics.connections.with_label_values(&[path]).dec();
}

fn plan_for(error: &WebSocketError) -> ClosePlan {
    let reason = match error {
        WebSocketError::FrameTooLarge => CloseReason::MessageTooBig,
        WebSocketError::InvalidUTF8 => CloseReason::InvalidPayload,
        WebSocketError::UnexpectedEOF
        | WebSocketError::ConnectionClosed
        | WebSocketError::IoError(_) => return ClosePlan::Silent,
        _ => CloseReason::ProtocolError,
    };
    ClosePlan::Server(reason, reason.default_text().to_owned())
}
