//! `idle`: hold N subscribed connections and report the server's memory per connection.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::client::{ensure_descriptors, token};
use crate::crowd::Crowd;
use crate::{procstat, Target};

/// Arguments of `idle`.
#[derive(Args)]
pub struct IdleArgs {
    /// Connections to open (at most 1,000,000; each needs a descriptor here and on the server).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds to hold them after all are subscribed (at most 600).
    #[arg(long, default_value_t = 3)]
    pub hold_secs: u64,
    /// Concurrent handshakes.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// Runs the scenario.
pub async fn run(target: &Target, args: IdleArgs, fd_limit: u64) -> Result<Value> {
    if args.connections > 1_000_000 || args.hold_secs > 600 {
        bail!("idle is bounded to 1,000,000 connections and 600 s");
    }
    ensure_descriptors(args.connections, "connections", fd_limit)?;
    let pid = target.server_pid;
    let rss_before = pid.and_then(procstat::rss_bytes);
    let crowd = Crowd::gather(
        target,
        args.connections,
        args.concurrency,
        json!({"type": "subscribe", "channels": ["notification"]}),
        |i| format!("/ws/notifications?token={}", token(target, &format!("idle-{i}"))),
    )
    .await;
    let (ok, failed, first_error, connect_secs) =
        (crowd.connected, crowd.failed, crowd.first_error.clone(), crowd.connect_seconds);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = pid.and_then(procstat::rss_bytes);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    crowd.finish(target, None).await?;
    let per_conn = |rss: Option<u64>| rss.map(|r| r as f64 / ok.max(1) as f64);
    Ok(json!({
        "scenario": "idle",
        "connections_ok": ok,
        "connections_failed": failed,
        "first_error": first_error,
        "connect_seconds": connect_secs,
        "connects_per_second": ok as f64 / connect_secs,
        "server_rss_before_bytes": rss_before,
        "server_rss_after_bytes": rss_after,
        "server_rss_per_connection_bytes": per_conn(rss_after),
        "server_rss_growth_per_connection_bytes": rss_after.zip(rss_before).map(|(a, b)| a.saturating_sub(b) as f64 / ok.max(1) as f64),
    }))
}
