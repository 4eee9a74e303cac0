//! The writer half of the connection actor: drains the bounded outbound queue onto the
//! socket, sends heartbeat pings, enforces token expiry, and writes the close frame.
//!
//! Queued frames are coalesced into one socket write (up to [`BATCH_BYTES`]), which is what
//! makes large fan-outs cheap: one syscall per connection per burst, not per event.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::{CloseReason, FrameKind};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::handle::{ClosePlan, ConnHandle, Outbound};
use super::wire::{close_payload, header, push_frame, push_header, Opcode};

/// Most bytes coalesced into one socket write.
const BATCH_BYTES: usize = 64 * 1024;
/// Payloads larger than this are written without copying them into the batch buffer.
const COPY_LIMIT: usize = 16 * 1024;
/// How long the close frame may take to write.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the writer until the connection ends.
pub async fn run<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut rx: mpsc::Receiver<Outbound>,
    conn: Arc<ConnHandle>,
    expires_at: Option<Instant>,
) -> W {
    let ep = conn.endpoint.clone();
    let opcode = match ep.codec.frame_kind() {
        FrameKind::Text => Opcode::Text,
        FrameKind::Binary => Opcode::Binary,
    };
    let (interval, timeout) = (ep.config.ping_interval, ep.config.pong_timeout);
    let heartbeat = tokio::time::sleep(interval);
    tokio::pin!(heartbeat);
    let far_future = Instant::now() + Duration::from_secs(10 * 365 * 86_400);
    let expiry = tokio::time::sleep_until(expires_at.unwrap_or(far_future));
    tokio::pin!(expiry);
    let mut ping_sent_ms: Option<u64> = None;
    let (mut missed, max_missed) = (0u32, ep.config.max_missed_pongs.max(1));
    let mut broken = false;
    let mut buf: Vec<u8> = Vec::new();

    loop {
        tokio::select! {
            biased;
            _ = conn.cancelled() => break,
            first = rx.recv() => {
                let Some(first) = first else { break };
                // A lone message (the common case at moderate rates) goes out as header plus
                // the shared bytes in one vectored write: no copy, no allocation.
                if let (Outbound::Message(bytes), true) = (&first, rx.is_empty()) {
                    let (head, n) = header(opcode, bytes.len());
                    let result = tokio::select! {
                        r = write_vectored_all(&mut socket, &head[..n], bytes) => r,
                        _ = conn.cancelled() => { broken = true; break }
                    };
                    if result.is_err() {
                        conn.close_with(ClosePlan::Silent);
                        broken = true;
                        break;
                    }
                    continue;
                }
                let mut large = None;
                let mut written_sid = None;
                append(&mut buf, first, opcode, &mut large, &mut written_sid);
                while large.is_none() && buf.len() < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(next) => append(&mut buf, next, opcode, &mut large, &mut written_sid),
                        Err(_) => break,
                    }
                }
                let result = tokio::select! {
                    r = write_batch(&mut socket, &buf, large.as_deref()) => r,
                    _ = conn.cancelled() => { broken = true; break }
                };
                buf.clear();
                if buf.capacity() > BATCH_BYTES || rx.is_empty() {
                    // Idle connections hold no write buffer.
                    buf = Vec::new();
                }
                if result.is_err() {
                    conn.close_with(ClosePlan::Silent);
                    broken = true;
                    break;
                }
                if let Some(sid) = written_sid {
                    conn.written(sid);
                }
            }
            _ = &mut heartbeat => {
                match ping_sent_ms {
                    Some(sent) if conn.last_pong_ms() < sent => {
                        missed += 1;
                        if missed >= max_missed {
                            conn.close(CloseReason::HeartbeatTimeout);
                        } else {
                            // Ping again at once; the connection gets `max_missed` chances.
                            ping_sent_ms = None;
                            heartbeat.as_mut().reset(Instant::now());
                        }
                    }
                    Some(sent) => {
                        missed = 0;
                        ping_sent_ms = None;
                        let next = Instant::now() + interval.saturating_sub(Duration::from_millis(now_millis().saturating_sub(sent)));
                        heartbeat.as_mut().reset(next);
                    }
                    None => {
                        ping_sent_ms = Some(now_millis());
                        let mut ping = Vec::with_capacity(2);
                        push_header(&mut ping, Opcode::Ping, 0);
                        if socket.write_all(&ping).await.is_err() {
                            conn.close_with(ClosePlan::Silent);
                            broken = true;
                            break;
                        }
                        heartbeat.as_mut().reset(Instant::now() + timeout);
                    }
                }
            }
            _ = &mut expiry => conn.close(CloseReason::AuthExpired),
        }
    }

    if !broken {
        let plan = conn.close_plan();
        // Messages queued before the close are still owed to the client, except to a slow
        // consumer, which is closed precisely because it does not read them.
        if !matches!(plan, Some(ClosePlan::Server(CloseReason::SlowConsumer, _)) | Some(ClosePlan::Silent) | None) {
            let (mut large, mut sid) = (None, None);
            while let Ok(item) = rx.try_recv() {
                append(&mut buf, item, opcode, &mut large, &mut sid);
                if let Some(payload) = large.take() {
                    buf.extend_from_slice(&payload);
                }
            }
        }
        let payload = match plan {
            Some(ClosePlan::Server(reason, text)) => Some(close_payload(ep.close_code(reason), &text)),
            Some(ClosePlan::Echo(payload)) => Some(payload),
            Some(ClosePlan::Silent) | None => None,
        };
        if let Some(payload) = payload {
            push_frame(&mut buf, Opcode::Close, &payload);
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                socket.write_all(&buf).await?;
                socket.flush().await
            })
            .await;
        }
    }
    socket
}

/// Appends a queued item to the batch, or sets it aside as `large` (header in the batch,
/// payload written straight from the shared bytes).
fn append(
    buf: &mut Vec<u8>,
    item: Outbound,
    opcode: Opcode,
    large: &mut Option<bytes::Bytes>,
    written_sid: &mut Option<switchboard_broker::LogId>,
) {
    match item {
        Outbound::Event { frame, sid } => {
            *written_sid = Some(sid);
            append(buf, Outbound::Message(frame), opcode, large, written_sid);
        }
        Outbound::Message(bytes) if bytes.len() > COPY_LIMIT => {
            push_header(buf, opcode, bytes.len());
            *large = Some(bytes);
        }
        Outbound::Message(bytes) => push_frame(buf, opcode, &bytes),
        Outbound::Typed { text, data } => {
            let opcode = if text { Opcode::Text } else { Opcode::Binary };
            push_header(buf, opcode, data.len());
            if data.len() > COPY_LIMIT {
                *large = Some(data);
            } else {
                buf.extend_from_slice(&data);
            }
        }
        Outbound::Pong(payload) => push_frame(buf, Opcode::Pong, &payload),
    }
}

/// Writes `head` then `body` with as few syscalls as the socket allows, then flushes.
async fn write_vectored_all<W: AsyncWrite + Unpin>(
    socket: &mut W,
    mut head: &[u8],
    mut body: &[u8],
) -> std::io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = if head.is_empty() {
            socket.write(body).await?
        } else {
            socket.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n < head.len() {
            head = &head[n..];
        } else {
            body = &body[n - head.len()..];
            head = &[];
        }
    }
    socket.flush().await
}

async fn write_batch<W: AsyncWrite + Unpin>(socket: &mut W, buf: &[u8], large: Option<&[u8]>) -> std::io::Result<()> {
    socket.write_all(buf).await?;
    if let Some(payload) = large {
        socket.write_all(payload).await?;
    }
    socket.flush().await
}
