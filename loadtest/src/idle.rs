//! `idle`: hold N subscribed connections and report the server's memory per connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect, token};
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
    if args.connections as u64 + 64 > fd_limit {
        bail!("{} connections need more descriptors than RLIMIT_NOFILE allows here ({fd_limit}); split over several processes", args.connections);
    }
    let pid = target.server_pid;
    let rss_before = pid.and_then(procstat::rss_bytes);
    let bar = ProgressBar::new(args.connections as u64).with_message("connecting");
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<()>>(args.connections);
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    for i in 0..args.connections {
        let target = target.clone();
        let gate = gate.clone();
        let done = done_tx.clone();
        let mut stop = stop_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let path = format!("/ws/notifications?token={}", token(&target, &format!("idle-{i}")));
            let mut ws = match connect(&target, i, &path).await {
                Ok(ws) => ws,
                Err(e) => return drop(done.send(Err(e)).await),
            };
            let sub = json!({"type": "subscribe", "channels": ["notification"]}).to_string();
            let ok =
                ws.send(Message::text(sub)).await.is_ok() && ws.send(Message::Ping(b"s".to_vec().into())).await.is_ok();
            // The pong answers after the subscribe was processed.
            let mut subscribed = false;
            while ok && !subscribed {
                match ws.next().await {
                    Some(Ok(Message::Pong(_))) => subscribed = true,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            drop(permit);
            let _ = done.send(if subscribed { Ok(()) } else { Err(anyhow::anyhow!("not subscribed")) }).await;
            // Hold the connection, answering pings, until told to stop.
            loop {
                tokio::select! {
                    _ = stop.recv() => break,
                    m = ws.next() => if m.is_none() { break },
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    drop(done_tx);
    let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None);
    for _ in 0..args.connections {
        let Some(r) = done_rx.recv().await else { break };
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = pid.and_then(procstat::rss_bytes);
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let _ = stop_tx.send(());
    for t in tasks {
        let _ = t.await;
    }
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
