//! `bare-server`: the baseline the fan-out target is judged against. A minimal WebSocket
//! server on one thread that does nothing but accept, answer pings, and, for every
//! `POST /v1/publish`, write the request body as one pre-encoded text frame to every socket
//! with a plain `write` per socket. No routing, no queues, no tasks woken per delivery: what the
//! kernel costs for the same deliveries on the same sockets. Run the `fanout` scenario against
//! it exactly as against the gateway.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use switchboard_wsframe::{decode, push_frame, Decoded, FrameOp, Opcode};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest client frame accepted (clients send only subscribe messages and pings).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Arguments of `bare-server`.
#[derive(Args)]
pub struct BareArgs {
    /// Where to listen (loopback only).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Stop after this many seconds (at most 3,600).
    #[arg(long, default_value_t = 600)]
    pub max_secs: u64,
}

/// Subscribed sockets, and what happened to the writes.
#[derive(Default)]
struct Fanout {
    sockets: Vec<Rc<TcpStream>>,
    deliveries: u64,
    short_writes: u64,
}

type Shared = Rc<RefCell<Fanout>>;

/// Runs the server on the current thread until `max_secs` pass.
pub fn run(args: BareArgs) -> Result<Value> {
    if !args.listen.ip().is_loopback() || args.max_secs > 3_600 {
        bail!("bare-server listens on loopback only, for at most 3,600 s");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(args.listen).await.with_context(|| format!("bind {}", args.listen))?;
        eprintln!("bare-server listening on {} (pid {})", args.listen, std::process::id());
        let shared: Shared = Rc::default();
        let accept = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(serve(Rc::new(stream), shared.clone()));
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(args.max_secs), accept).await;
        let f = shared.borrow();
        Ok(json!({"scenario": "bare-server", "deliveries": f.deliveries, "short_writes": f.short_writes}))
    })
}

/// One connection: an HTTP request (upgrade or publish), then WebSocket frames.
async fn serve(stream: Rc<TcpStream>, shared: Shared) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(head_end) = read_until_head(&stream, &mut buf).await else { return };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        // Header names are case-insensitive; the WebSocket key's value is not.
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        if let Some(key) = header("sec-websocket-key") {
            let accept = derive_accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            if write_all(&stream, response.as_bytes()).await.is_err() {
                return;
            }
            buf.drain(..head_end);
            shared.borrow_mut().sockets.push(stream.clone());
            websocket(&stream, buf).await;
            shared.borrow_mut().sockets.retain(|s| !Rc::ptr_eq(s, &stream));
            return;
        }
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < head_end + length {
            if read_more(&stream, &mut buf).await.is_none() {
                return;
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        fan_out(&shared, &body);
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if write_all(&stream, reply).await.is_err() {
            return;
        }
    }
}

/// Writes one pre-encoded frame to every subscribed socket, one `write` each.
fn fan_out(shared: &Shared, payload: &[u8]) {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    push_frame(&mut frame, Opcode::Text, payload);
    let mut f = shared.borrow_mut();
    let mut short = 0;
    for socket in &f.sockets {
        match socket.try_write(&frame) {
            Ok(n) if n == frame.len() => {}
            _ => short += 1,
        }
    }
    f.deliveries += (f.sockets.len() - short) as u64;
    f.short_writes += short as u64;
}

/// Reads client frames (with the gateway's own decoder): answers pings, ignores the rest,
/// returns when the client closes, errs or goes.
async fn websocket(stream: &TcpStream, mut buf: Vec<u8>) {
    loop {
        loop {
            let (op, payload, used) = match decode(&mut buf, MAX_CLIENT_FRAME, false) {
                Ok(Decoded::Frame(frame, used)) => (frame.op, frame.payload.to_vec(), used),
                Ok(Decoded::Incomplete { .. }) => break,
                Err(_) => return,
            };
            buf.drain(..used);
            match op {
                FrameOp::Ping => {
                    let mut pong = Vec::new();
                    push_frame(&mut pong, Opcode::Pong, &payload);
                    if write_all(stream, &pong).await.is_err() {
                        return;
                    }
                }
                FrameOp::Close => return,
                _ => {}
            }
        }
        if read_more(stream, &mut buf).await.is_none() {
            return;
        }
    }
}

async fn read_until_head(stream: &TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        read_more(stream, buf).await?;
    }
}

async fn read_more(stream: &TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    loop {
        stream.readable().await.ok()?;
        match stream.try_read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
