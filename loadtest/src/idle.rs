//! `idle`: hold N subscribed connections and report the server's memory per connection.
//!
//! With `--processes P` the connections are split over P child processes of `sb-load` (each
//! process may hold at most RLIMIT_NOFILE descriptors: 20,000 on the reference machine). Each
//! child connects its share, says `ready` on its stdout and holds its connections until the
//! parent closes the child's stdin; the parent reads the server's memory while all of them
//! are held, then adds the children's reports up.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::client::{ensure_descriptors, token};
use crate::crowd::Crowd;
use crate::dialect::DialectArg;
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
    /// Split the connections over this many child processes (at most 64).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Number of this process's first connection (a child's share of a split run).
    #[arg(long, default_value_t = 0, hide = true)]
    pub first: usize,
    /// Run as a child of a split run: say `ready`, then hold until stdin closes.
    #[arg(long, hide = true)]
    pub child: bool,
}

/// Runs the scenario.
pub async fn run(target: &Target, args: IdleArgs, fd_limit: u64) -> Result<Value> {
    if args.connections > 1_000_000 || args.hold_secs > 600 || args.processes == 0 || args.processes > 64 {
        bail!("idle is bounded to 1,000,000 connections, 600 s and 1 to 64 processes");
    }
    if args.processes > 1 {
        return run_split(target, &args).await;
    }
    ensure_descriptors(args.connections, "connections", fd_limit)?;
    let pid = target.server_pid.filter(|_| !args.child);
    let rss_before = pid.and_then(procstat::rss_bytes);
    let first = args.first;
    let crowd = Crowd::gather(target, args.connections, args.concurrency, |i| {
        let (path, subscriptions) = args.dialect.own_stream(first + i);
        (format!("{path}?token={}", token(target, &format!("idle-{}", first + i))), subscriptions)
    })
    .await;
    let (ok, failed, first_error, connect_secs) =
        (crowd.connected, crowd.failed, crowd.first_error.clone(), crowd.connect_seconds);
    if args.child {
        println!("ready");
        std::io::stdout().flush()?;
        // Hold until the parent has measured and closes our stdin.
        let _ =
            tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())).await;
        crowd.finish(target, None).await?;
        return Ok(
            json!({"connections_ok": ok, "connections_failed": failed, "first_error": first_error, "connect_seconds": connect_secs}),
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = pid.and_then(procstat::rss_bytes);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    crowd.finish(target, None).await?;
    Ok(report(&args, ok, failed, first_error, connect_secs, rss_before, rss_after))
}

fn report(
    args: &IdleArgs,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    connect_secs: f64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
) -> Value {
    let per_conn = |rss: Option<u64>| rss.map(|r| r as f64 / ok.max(1) as f64);
    json!({
        "scenario": "idle",
        "dialect": args.dialect.name(),
        "processes": args.processes,
        "connections_ok": ok,
        "connections_failed": failed,
        "first_error": first_error,
        "connect_seconds": connect_secs,
        "connects_per_second": ok as f64 / connect_secs.max(1e-9),
        "server_rss_before_bytes": rss_before,
        "server_rss_after_bytes": rss_after,
        "server_rss_per_connection_bytes": per_conn(rss_after),
        "server_rss_growth_per_connection_bytes": rss_after.zip(rss_before).map(|(a, b)| a.saturating_sub(b) as f64 / ok.max(1) as f64),
    })
}

/// The command line of one child: the same target, its share of the connections.
fn child_command(target: &Target, args: &IdleArgs, first: usize, count: usize) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe().context("locating sb-load")?);
    let servers: Vec<String> = target.server.iter().map(|s| s.to_string()).collect();
    cmd.arg("--server")
        .arg(servers.join(","))
        .arg("--sources")
        .arg(target.sources.to_string())
        .arg("--json")
        .env("SWITCHBOARD_JWT_SECRET", &target.secret)
        .env("SWITCHBOARD_ADMIN_KEY", &target.admin_key)
        .args(["idle", "--child", "--connections", &count.to_string(), "--first", &first.to_string()])
        .args(["--concurrency", &args.concurrency.to_string(), "--dialect", args.dialect.name()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(cmd)
}

async fn run_split(target: &Target, args: &IdleArgs) -> Result<Value> {
    let pid = target.server_pid;
    let rss_before = pid.and_then(procstat::rss_bytes);
    let started = std::time::Instant::now();
    let n = args.processes;
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for k in 0..n {
        let (first, end) = (args.connections * k / n, args.connections * (k + 1) / n);
        children.push(child_command(target, args, first, end - first)?.spawn().context("starting a child sb-load")?);
    }
    // Wait until every child holds its share (or failed to start).
    let mut outputs = Vec::with_capacity(n);
    for child in &mut children {
        let mut out = BufReader::new(child.stdout.take().context("child stdout")?);
        let mut line = String::new();
        let blocking = tokio::task::spawn_blocking(move || {
            let got = out.read_line(&mut line).map(|_| line.trim() == "ready");
            (got, out)
        });
        let (ready, out) = blocking.await?;
        if !ready.unwrap_or(false) {
            bail!("a child sb-load did not get ready (see its errors above)");
        }
        outputs.push(out);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = pid.and_then(procstat::rss_bytes);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    // Release them all, then add their reports up.
    for child in &mut children {
        drop(child.stdin.take());
    }
    let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None);
    for (child, mut out) in children.iter_mut().zip(outputs) {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest)?;
        let status = child.wait()?;
        let report: Value = serde_json::from_str(&rest)
            .with_context(|| format!("a child's report (exit {status}) was not JSON: {rest}"))?;
        ok += report["connections_ok"].as_u64().unwrap_or(0) as usize;
        failed += report["connections_failed"].as_u64().unwrap_or(0) as usize;
        if first_error.is_none() {
            first_error = report["first_error"].as_str().map(str::to_owned);
        }
    }
    Ok(report(args, ok, failed, first_error, connect_secs, rss_before, rss_after))
}
