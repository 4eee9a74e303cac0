//! Opening many client WebSockets through the client crate's [`Connection`]: spread over
//! several 127.0.0.x source addresses, with the descriptor limit raised as far as the system
//! allows.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use switchboard_client::{ConnectOptions, Connection};
use switchboard_protocol::token::mint_hs256;

use crate::Target;

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

/// Connects client number `i` to `path_and_query`, from source address 127.0.0.(1 + i % sources).
pub async fn connect(target: &Target, i: usize, path_and_query: &str) -> Result<Connection> {
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % target.sources.max(1) as usize) as u8);
    let server = target.server[i % target.server.len()];
    // Small buffers: the tool holds tens of thousands of clients in one process.
    let options = ConnectOptions { source: Some(IpAddr::V4(source)), read_buffer_bytes: 4096 };
    Connection::open(&format!("ws://{server}{path_and_query}"), &options)
        .await
        .with_context(|| format!("from {source}"))
}

/// A token for `sub`.
pub fn token(target: &Target, sub: &str) -> String {
    mint_hs256(&target.secret, sub, 3600, Default::default()).unwrap_or_default()
}

/// Microseconds since the unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
