//! `many`: N connections, each on its own user stream (`/ws/notifications`, user `many-<i>`),
//! and a publisher sending persisted notifications to random users at R events/s through the
//! batch publish API. Measures publish→deliver latency through the persistence worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect, now_micros, token};
use crate::{procstat, Target};

/// Arguments of `many`.
#[derive(Args)]
pub struct ManyArgs {
    /// Connections, one user each.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Events per second in total.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seconds of publishing (at most 600).
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Events per publish request.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Concurrent handshakes.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// Runs the scenario.
pub async fn run(target: &Target, args: ManyArgs, fd_limit: u64) -> Result<Value> {
    if args.duration_secs > 600 || args.rate <= 0.0 || args.rate > 1_000_000.0 || args.batch == 0 || args.batch > 1000 {
        bail!("many is bounded to 600 s, 1,000,000 events/s and batches of 1..=1000");
    }
    if args.connections as u64 + 64 > fd_limit || args.connections == 0 {
        bail!("{} connections need more descriptors than RLIMIT_NOFILE allows here ({fd_limit})", args.connections);
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(args.connections);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let bar = ProgressBar::new(args.connections as u64).with_message("connecting");
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let (target, gate, ready, delivered) = (target.clone(), gate.clone(), ready_tx.clone(), delivered.clone());
        let mut stop = stop_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let path = format!("/ws/notifications?token={}", token(&target, &format!("many-{i}")));
            let Ok(mut ws) = connect(&target, i, &path).await else {
                let _ = ready.send(false).await;
                return Vec::new();
            };
            let sub = json!({"type": "subscribe", "channels": ["notification"]}).to_string();
            let sent =
                ws.send(Message::text(sub)).await.is_ok() && ws.send(Message::Ping(b"s".to_vec().into())).await.is_ok();
            let mut ok = false;
            while sent && !ok {
                match ws.next().await {
                    Some(Ok(Message::Pong(_))) => ok = true,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            drop(permit);
            let _ = ready.send(ok).await;
            let mut latencies: Vec<u32> = Vec::new();
            loop {
                tokio::select! {
                    _ = stop.recv() => break,
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(sent_at) = crate::fanout::publish_micros(&t) {
                                latencies.push(now_micros().saturating_sub(sent_at).min(u32::MAX as u64) as u32);
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
            latencies
        }));
    }
    drop(ready_tx);
    let mut connected = 0usize;
    for _ in 0..args.connections {
        let Some(ok) = ready_rx.recv().await else { break };
        connected += usize::from(ok);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/publish/batch", target.server[0]);
    let total = (args.rate * args.duration_secs as f64).round() as u64;
    let batches = total.div_ceil(args.batch as u64);
    let pid = target.server_pid;
    let cpu_before = pid.and_then(procstat::cpu_seconds);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(args.batch as f64 / args.rate));
    let (mut published, mut errors) = (0u64, 0u64);
    let mut seed = now_micros() | 1;
    let bar = ProgressBar::new(batches).with_message("publishing");
    for _ in 0..batches {
        ticker.tick().await;
        let events: Vec<Value> = (0..args.batch)
            .map(|_| {
                // xorshift: a cheap spread of target users.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let user = format!("many-{}", seed % args.connections as u64);
                json!({"user": user, "type": "notification", "payload": {"t": now_micros()}})
            })
            .collect();
        match http.post(&url).bearer_auth(&target.admin_key).json(&json!({"events": events})).send().await {
            Ok(r) if r.status().is_success() => published += args.batch as u64,
            _ => errors += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let deadline = Instant::now() + Duration::from_secs(15);
    while delivered.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = pid.and_then(procstat::cpu_seconds);
    let _ = stop_tx.send(());
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for t in tasks {
        for l in t.await.unwrap_or_default() {
            let _ = hist.record(u64::from(l).max(1));
        }
    }
    let got = delivered.load(Ordering::Relaxed);
    let server_cpu = cpu_after.zip(cpu_before).map(|(a, b)| a - b);
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "scenario": "many",
        "connections": connected,
        "events_published": published,
        "failed_batches": errors,
        "deliveries": got,
        "drops": published.saturating_sub(got),
        "seconds": elapsed,
        "deliveries_per_second": got as f64 / elapsed,
        "server_cpu_seconds": server_cpu,
        "latency_ms_p50": ms(0.5),
        "latency_ms_p99": ms(0.99),
        "latency_ms_p999": ms(0.999),
        "latency_ms_max": hist.max() as f64 / 1000.0,
    }))
}
