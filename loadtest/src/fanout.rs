//! `fanout`: N subscribers on one channel of the `basic` endpoint, one publisher at R
//! events/s through the publish API. Every payload carries its publish time, so each delivery
//! yields a publish→deliver latency.

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

/// Arguments of `fanout`.
#[derive(Args)]
pub struct FanoutArgs {
    /// Subscribers.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Events per second published.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Seconds of publishing (at most 600).
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Payload size in bytes (at least 48: it carries the timestamp).
    #[arg(long, default_value_t = 64)]
    pub payload_bytes: usize,
    /// Channel to use.
    #[arg(long, default_value = "status:load")]
    pub channel: String,
    /// Concurrent handshakes.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Publish through this node instead of `--server` (cross-node fan-out in a cluster).
    #[arg(long)]
    pub publish_server: Option<std::net::SocketAddr>,
}

/// Extracts the `"t":<micros>` publish time from a delivered frame without parsing it all.
pub fn publish_micros(text: &str) -> Option<u64> {
    let start = text.find("\"t\":")? + 4;
    let digits: &str = &text[start..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Runs the scenario.
pub async fn run(target: &Target, args: FanoutArgs, fd_limit: u64) -> Result<Value> {
    if args.duration_secs > 600 || args.rate <= 0.0 || args.rate > 100_000.0 || args.subscribers > 1_000_000 {
        bail!("fanout is bounded to 600 s, 100,000 events/s and 1,000,000 subscribers");
    }
    if args.subscribers as u64 + 64 > fd_limit {
        bail!("{} subscribers need more descriptors than RLIMIT_NOFILE allows here ({fd_limit})", args.subscribers);
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(args.subscribers);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let bar = ProgressBar::new(args.subscribers as u64).with_message("subscribing");
    let mut tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let (target, gate, ready, delivered) = (target.clone(), gate.clone(), ready_tx.clone(), delivered.clone());
        let mut stop = stop_tx.subscribe();
        let channel = args.channel.clone();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let path = format!("/ws?token={}", token(&target, &format!("fan-{i}")));
            let Ok(mut ws) = connect(&target, i, &path).await else {
                let _ = ready.send(false).await;
                return Vec::new();
            };
            let sub = json!({"type": "subscribe", "data": {"channel": channel}}).to_string();
            let sent =
                ws.send(Message::text(sub)).await.is_ok() && ws.send(Message::Ping(b"s".to_vec().into())).await.is_ok();
            let mut subscribed = false;
            while sent && !subscribed {
                match ws.next().await {
                    Some(Ok(Message::Pong(_))) => subscribed = true,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            drop(permit);
            let _ = ready.send(subscribed).await;
            let mut latencies: Vec<u32> = Vec::new();
            loop {
                tokio::select! {
                    _ = stop.recv() => break,
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if let Some(sent_at) = publish_micros(&t) {
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
    let mut subscribed = 0usize;
    for _ in 0..args.subscribers {
        let Some(ok) = ready_rx.recv().await else {
            break;
        };
        subscribed += usize::from(ok);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let http = reqwest::Client::new();
    let publish_to = args.publish_server.unwrap_or(target.server[0]);
    if !publish_to.ip().is_loopback() {
        bail!("sb-load only targets loopback addresses (127.0.0.0/8)");
    }
    let url = format!("http://{publish_to}/v1/publish");
    let pad = "x".repeat(args.payload_bytes.saturating_sub(40));
    let total_events = (args.rate * args.duration_secs as f64).round() as u64;
    let pid = target.server_pid;
    let cpu_before = pid.and_then(procstat::cpu_seconds);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    let mut publish_errors = 0u64;
    let bar = ProgressBar::new(total_events).with_message("publishing");
    for _ in 0..total_events {
        ticker.tick().await;
        let body =
            json!({"channel": args.channel, "type": "status_update", "payload": {"t": now_micros(), "pad": pad}});
        match http.post(&url).bearer_auth(&target.admin_key).json(&body).send().await {
            Ok(r) if r.status().is_success() => {}
            _ => publish_errors += 1,
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let expected = (total_events - publish_errors) * subscribed as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
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
        "scenario": "fanout",
        "subscribers": subscribed,
        "events_published": total_events - publish_errors,
        "publish_errors": publish_errors,
        "deliveries_expected": expected,
        "deliveries": got,
        "drops": expected.saturating_sub(got),
        "seconds": elapsed,
        "deliveries_per_second": got as f64 / elapsed,
        "server_cpu_seconds": server_cpu,
        "deliveries_per_server_cpu_second": server_cpu.map(|c| got as f64 / c.max(1e-9)),
        "latency_ms_p50": ms(0.5),
        "latency_ms_p99": ms(0.99),
        "latency_ms_p999": ms(0.999),
        "latency_ms_max": hist.max() as f64 / 1000.0,
    }))
}
