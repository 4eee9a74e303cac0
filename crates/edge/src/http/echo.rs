//! Diagnostic echo endpoint (off by default): echoes every message back, so RFC 6455
//! conformance (fragmentation, control frames, close handshake, UTF-8) can be checked with the
//! Autobahn suite against the same WebSocket stack the real endpoints use.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use fastwebsockets::{FragmentCollector, OpCode};

use super::ApiError;

/// Largest message echoed (Autobahn sends up to 16 MiB).
const MAX_ECHO_BYTES: usize = 32 << 20;

/// Upgrades and echoes.
pub async fn echo(mut req: Request) -> Response {
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!("invalid WebSocket handshake: {e}"))
                .into_response()
        }
    };
    tokio::spawn(async move {
        let Ok(mut ws) = upgrade.await else { return };
        ws.set_max_message_size(MAX_ECHO_BYTES);
        let mut ws = FragmentCollector::new(ws);
        loop {
            let frame = match ws.read_frame().await {
                Ok(f) => f,
                Err(_) => break,
            };
            let echo = matches!(frame.opcode, OpCode::Text | OpCode::Binary);
            if frame.opcode == OpCode::Close || (echo && ws.write_frame(frame).await.is_err()) {
                break;
            }
        }
    });
    response.map(axum::body::Body::new)
}
