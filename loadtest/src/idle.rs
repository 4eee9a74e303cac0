//! `idle`: hold N subscribed connections and report the server's memory per connection.
//!
//! With `--processes P` the connections are split over P child processes of `sb-load` (each
//! process may hold at most RLIMIT_NOFILE descriptors: 20,000 on the reference machine); the
//! parent reads the server's memory while all of them are held (see [`crate::split`]).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::client::Entry;
use crate::crowd::{Crowd, Recipe};
use crate::dialect::DialectArg;
use crate::split::{ensure_descriptors, SplitArgs};
use crate::{procstat, Target};

/// Arguments of `idle`.
#[derive(Args, Clone)]
pub struct IdleArgs {
    /// Connections to open (at most 1,000,000; each needs a descriptor here and on the server).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Seconds to hold them after all are subscribed (at most 600).
    #[arg(long, default_value_t = 3)]
    pub hold_secs: u64,
    /// Dialect the connections speak; each subscribes to a stream of its own (orbnet: its
    /// user's notifications; basic: a channel `status:idle-<i>`).
    #[arg(long, value_enum, default_value_t = DialectArg::Orbnet)]
    pub dialect: DialectArg,
    /// Concurrent handshakes (per process).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    #[command(flatten)]
    pub split: SplitArgs,
}

/// Runs the scenario.
pub async fn run(target: &Target, args: IdleArgs, fd_limit: u64) -> Result<Value> {
    if args.connections > 1_000_000 || args.hold_secs > 600 {
        bail!("idle is bounded to 1,000,000 connections and 600 s");
    }
    ensure_descriptors(args.connections, args.split.processes, "connections", fd_limit)?;
    let pid = target.server_pid.filter(|_| !args.split.child);
    let rss_before = pid.and_then(procstat::rss_bytes);
    let plan = |i| {
        let (path, subscriptions) = args.dialect.own_stream(i);
        (Entry::user(target, args.dialect, path, &format!("idle-{i}")), subscriptions)
    };
    let recipe = Recipe {
        n: args.connections,
        concurrency: args.concurrency,
        plan,
        scenario: "idle",
        count_flag: "--connections",
        dialect: args.dialect,
        extra: Vec::new(),
        split: &args.split,
    };
    let Some(crowd) = Crowd::assemble(target, recipe).await? else { return Ok(Value::Null) };
    let (ok, connect_secs) = (crowd.connected, crowd.connect_seconds);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = pid.and_then(procstat::rss_bytes);
    // What holding them costs the server: heartbeats, quota and presence renewals.
    let window = procstat::Window::start(target.server_pid);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let (held_secs, idle_cpu) = window.finish();
    // Again after the hold: an allocator that gives freed pages back over time (the connect
    // phase's transient state) shows its settled footprint here rather than 2 s after the connects.
    let rss_held = pid.and_then(procstat::rss_bytes);
    let per_10k_per_minute =
        idle_cpu.map(|cpu| cpu * 1000.0 * (10_000.0 / ok.max(1) as f64) * (60.0 / held_secs.max(1e-9)));
    let per_conn = |rss: Option<u64>| rss.map(|r| r as f64 / ok.max(1) as f64);
    let growth = |rss: Option<u64>| rss.zip(rss_before).map(|(a, b)| a.saturating_sub(b) as f64 / ok.max(1) as f64);
    let report = json!({
        "scenario": "idle",
        "dialect": args.dialect.name(),
        "processes": args.split.processes,
        "connections_ok": ok,
        "connections_failed": crowd.failed,
        "first_error": crowd.first_error,
        "connect_seconds": connect_secs,
        "connects_per_second": ok as f64 / connect_secs.max(1e-9),
        "server_rss_before_bytes": rss_before,
        "server_rss_after_bytes": rss_after,
        "server_rss_per_connection_bytes": per_conn(rss_after),
        "server_rss_growth_per_connection_bytes": growth(rss_after),
        "server_rss_end_of_hold_bytes": rss_held,
        "server_rss_growth_per_connection_end_of_hold_bytes": growth(rss_held),
        "server_cpu_seconds_while_held": idle_cpu,
        "server_cpu_ms_per_10k_connections_per_minute": per_10k_per_minute,
    });
    crowd.finish(target, None).await?;
    Ok(report)
}
