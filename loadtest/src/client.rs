//! Opening many client WebSockets through the client crate's [`Connection`]: spread over
//! several 127.0.0.x source addresses, with the descriptor limit raised as far as the system
//! allows.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use switchboard_client::{ConnectOptions, Connection};
use switchboard_protocol::token::mint_hs256;

use crate::dialect::DialectArg;
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

/// Where a client connects and how it proves who it is.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Endpoint path.
    pub path: String,
    /// The user's token.
    pub token: String,
    /// Trade the token for a connect ticket first (`POST /v1/auth/ws-ticket`, then
    /// `?ticket=`), as ticket endpoints want; else `?token=`.
    pub ticket: bool,
    /// The dialect spoken, whose heartbeat pings the connection answers.
    pub dialect: switchboard_client::Dialect,
}

impl Entry {
    /// `user` connecting to `path` as `dialect`'s clients do (ocvr with a ticket).
    pub fn user(target: &Target, dialect: DialectArg, path: &str, user: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            token: token(target, user),
            ticket: dialect.uses_tickets(),
            dialect: dialect.kind(),
        }
    }
}

/// Connects client number `i` to `entry`, from source address 127.0.0.(1 + i % sources). A
/// ticket, when the entry needs one, is fetched from the same server right before (its time
/// is part of the connect, as for a real client).
pub async fn connect(target: &Target, i: usize, entry: &Entry) -> Result<Connection> {
    let source = Ipv4Addr::new(127, 0, 0, 1 + (i % target.sources.max(1) as usize) as u8);
    let server = target.server[i % target.server.len()];
    let query = if entry.ticket {
        format!("ticket={}", ticket(server, &entry.token).await?)
    } else {
        format!("token={}", entry.token)
    };
    // Small buffers: the tool holds tens of thousands of clients in one process.
    let options = ConnectOptions {
        source: Some(IpAddr::V4(source)),
        read_buffer_bytes: 4096,
        answer_pings: Some(entry.dialect),
        tls: crate::tls::client_config(),
    };
    Connection::open(&format!("{}://{server}{}?{query}", crate::tls::ws(), entry.path), &options)
        .await
        .with_context(|| format!("from {source}"))
}

/// One HTTP client for the whole run (its connection pool is shared).
pub fn http() -> &'static reqwest::Client {
    static HTTP: OnceLock<reqwest::Client> = OnceLock::new();
    HTTP.get_or_init(crate::tls::http_client)
}

/// A connect ticket for the holder of `token`.
async fn ticket(server: SocketAddr, token: &str) -> Result<String> {
    let resp =
        http().post(format!("{}://{server}/v1/auth/ws-ticket", crate::tls::http())).bearer_auth(token).send().await?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("a ticket answer that is not JSON")?;
    match body["data"]["ticket"].as_str() {
        Some(t) if status.is_success() => Ok(t.to_owned()),
        _ => anyhow::bail!("no ticket: HTTP {status} {body}"),
    }
}

/// A token for `sub`.
pub fn token(target: &Target, sub: &str) -> String {
    mint_hs256(&target.secret, sub, 3600, Default::default()).unwrap_or_default()
}

/// Microseconds since the unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
