//! Opening many client WebSockets: spread over several 127.0.0.x source addresses, with the
//! descriptor limit raised as far as the system allows.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use switchboard_edge::auth::jwt::mint_hs256;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::Target;

/// A connected client.
pub type Ws = WebSocketStream<TcpStream>;

/// Raises RLIMIT_NOFILE to its hard limit; returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

/// Fails unless `n` clients (plus a margin for the tool's own descriptors) fit under the
/// descriptor limit in force, naming the limit the run would hit.
pub fn ensure_descriptors(n: usize, what: &str, fd_limit: u64) -> Result<()> {
    if n as u64 + 64 > fd_limit {
        anyhow::bail!(
            "{n} {what} need more descriptors than RLIMIT_NOFILE allows here ({fd_limit}); use fewer (idle splits them over processes with --processes N)"
        );
    }
    Ok(())
}

/// Connects client number `i` to `path_and_query`, from source address 127.0.0.(1 + i % sources).
pub async fn connect(target: &Target, i: usize, path_and_query: &str) -> Result<Ws> {
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % target.sources.max(1) as usize) as u8);
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0))).with_context(|| format!("bind {source}"))?;
    let server = target.server[i % target.server.len()];
    let stream = socket.connect(server).await.with_context(|| format!("connect from {source}"))?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{server}{path_and_query}");
    // Small buffers: the tool holds tens of thousands of clients in one process.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await.context("WebSocket handshake")?;
    Ok(ws)
}

/// A token for `sub`.
pub fn token(target: &Target, sub: &str) -> String {
    mint_hs256(&target.secret, sub, 3600, Default::default()).unwrap_or_default()
}

/// Microseconds since the unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
