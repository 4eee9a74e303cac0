//! `connect`: a connection storm. Opens N connections at R per second (each: a ticket where
//! the dialect wants one, TCP connect, WebSocket handshake, then proof that the session runs:
//! orbnet's `connection_ack`, or for dialects that send nothing on connect, the answer to a
//! ping), holds them until all are open (or with `--churn` closes each at once), then closes
//! them. Reports connect latency percentiles, failures by cause and, with `--server-pid`, the
//! server's CPU per connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use switchboard_client::{ClientDialect, ConnectError, Incoming, ServerMessage};
use tokio::sync::broadcast;

use crate::client::{connect, Entry};
use crate::dialect::DialectArg;
use crate::procstat;
use crate::split::ensure_descriptors;
use crate::Target;

/// Arguments of `connect`.
#[derive(Args)]
pub struct StormArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connections started per second.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Dialect the clients speak.
    #[arg(long, value_enum, default_value_t = DialectArg::Orbnet)]
    pub dialect: DialectArg,
    /// Endpoint path (default: `/ws/notifications` for orbnet, `/ws` for basic, `/v1/ws` for
    /// ocvr).
    #[arg(long)]
    pub path: Option<String>,
    /// Close each connection as soon as it is open (a churn of connects and disconnects at
    /// the rate) instead of holding them all until the last one is open.
    #[arg(long)]
    pub churn: bool,
}

/// Runs the scenario.
pub async fn run(target: &Target, args: StormArgs, fd_limit: u64) -> Result<Value> {
    if args.connections == 0 || args.connections > 1_000_000 || args.rate <= 0.0 || args.rate > 100_000.0 {
        bail!("connect is bounded to 1,000,000 connections at up to 100,000 per second");
    }
    // A churn holds only the connections in flight.
    let held = if args.churn { args.connections.min(args.rate.ceil() as usize) } else { args.connections };
    ensure_descriptors(held, 1, "connections", fd_limit)?;
    let (dialect, churn) = (args.dialect, args.churn);
    let window = procstat::Window::start(target.server_pid);
    let endpoint = args.path.clone().unwrap_or_else(|| dialect.path().to_owned());
    let (stop, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<Duration, String>>(args.connections);
    let bar = ProgressBar::new(args.connections as u64).with_message("connecting");
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        ticker.tick().await;
        let (target, done, mut stop) = (target.clone(), done_tx.clone(), stop.subscribe());
        let path = Entry::user(&target, dialect, &endpoint, &format!("storm-{i}"));
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let mut conn = match connect(&target, i, &path).await {
                Ok(conn) => conn,
                Err(e) => {
                    // Failures are counted by cause, without the source address.
                    let cause = e.downcast_ref::<ConnectError>().map_or_else(|| format!("{e:#}"), ToString::to_string);
                    return drop(done.send(Err(cause)).await);
                }
            };
            let acked = match dialect {
                DialectArg::Orbnet => match tokio::time::timeout(Duration::from_secs(30), conn.next()).await {
                    Ok(Incoming::Text(t))
                        if matches!(dialect.kind().classify(t.as_bytes()), Some(ServerMessage::Welcome { .. })) =>
                    {
                        Ok(t0.elapsed())
                    }
                    Ok(Incoming::Closed(code)) => Err(format!("closed: {code}")),
                    Ok(other) => Err(format!("unexpected message: {other:?}")),
                    Err(_) => Err("no ack in 30 s".to_string()),
                },
                DialectArg::Basic | DialectArg::Ocvr | DialectArg::Brl | DialectArg::Veriops => {
                    match tokio::time::timeout(Duration::from_secs(30), conn.send_confirmed(dialect.kind(), &[])).await
                    {
                        Ok(Ok(_)) => Ok(t0.elapsed()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no pong in 30 s".to_string()),
                    }
                }
            };
            let hold = acked.is_ok() && !churn;
            let _ = done.send(acked).await;
            if hold {
                let _ = stop.recv().await;
            }
            conn.close().await;
        }));
    }
    drop(done_tx);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..args.connections {
        let Some(r) = done_rx.recv().await else { break };
        match r {
            Ok(took) => {
                let _ = hist.record(took.as_micros().max(1) as u64);
            }
            Err(cause) => *failures.entry(cause).or_default() += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    for t in tasks {
        let _ = t.await;
    }
    // Server CPU over the whole run, the closes included.
    let (_, cpu) = window.finish();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "scenario": "connect",
        "dialect": args.dialect.name(),
        "connections_ok": hist.len(),
        "connections_failed": failures.values().sum::<usize>(),
        "failures": failures,
        "seconds": seconds,
        "connects_per_second": hist.len() as f64 / seconds,
        "connect_ms_p50": ms(0.5),
        "connect_ms_p99": ms(0.99),
        "connect_ms_p999": ms(0.999),
        "connect_ms_max": hist.max() as f64 / 1000.0,
        "churn": churn,
        "server_cpu_seconds": cpu,
        "server_cpu_ms_per_connection": cpu.map(|c| c * 1000.0 / hist.len().max(1) as f64),
    }))
}
