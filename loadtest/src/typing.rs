//! `typing`: typing indicators in one big ocvr channel. Creates the channel with N members
//! (numeric user ids, through the admin API), connects them all to `/v1/ws` with tickets,
//! subscribed to it, then has T of them type every `--interval` for `--duration-secs`. Every
//! other member should see each indicator as `typing_start`; a receiver knows when that typer
//! last typed (a typer types once per interval, above the server's throttle), so the latency
//! is from the typer's send to the receiver's read. Reports indicators sent, deliveries
//! expected and seen, latency percentiles and, with `--server-pid`, the server's CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use futures_util::{stream, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use switchboard_client::{ClientDialect, Dialect, Incoming};
use tokio::sync::{broadcast, watch, Semaphore};

use crate::client::{connect, http, now_micros, Entry};
use crate::dialect::DialectArg;
use crate::procstat;
use crate::split::ensure_descriptors;
use crate::Target;

/// User ids are this plus the member's index: numbers, as in the document.
const BASE_USER: u64 = 7_000_000;

/// Arguments of `typing`.
#[derive(Args)]
pub struct TypingArgs {
    /// Members of the channel, all connected and subscribed.
    #[arg(long, default_value_t = 1_000)]
    pub members: usize,
    /// Members who type.
    #[arg(long, default_value_t = 20)]
    pub typers: usize,
    /// How long they type.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// Seconds between one typer's indicators (keep it above the endpoint's
    /// `publish.typing_interval`, 2 s, or the server drops the extra ones).
    #[arg(long, default_value_t = 2.5)]
    pub interval: f64,
    /// The channel.
    #[arg(long, default_value = "ch_typing_load")]
    pub channel: String,
    /// Concurrent handshakes.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// The typer of a `typing_start` frame (`"user_id":<number>`), read without parsing it all.
fn typer_of(text: &str) -> Option<u64> {
    if !text.contains("\"typing_start\"") {
        return None;
    }
    let start = text.find("\"user_id\":")? + "\"user_id\":".len();
    let digits = &text[start..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// What one member's loop does next.
enum Step {
    Stop,
    Type,
    Read(Incoming),
}

/// Creates the channel and lists every member.
async fn create_channel(target: &Target, args: &TypingArgs) -> Result<()> {
    let server = target.server[0];
    let admin = |path: String| {
        http().put(format!("{}://{server}{path}", crate::tls::http())).bearer_auth(&target.admin_key).send()
    };
    let resp = admin(format!("/v1/channels/{}", args.channel)).await?;
    if !resp.status().is_success() {
        bail!("creating the channel failed: HTTP {}", resp.status());
    }
    let failed = stream::iter(0..args.members)
        .map(|i| admin(format!("/v1/channels/{}/members/{}", args.channel, BASE_USER + i as u64)))
        .buffer_unordered(32)
        .filter(|r| std::future::ready(!r.as_ref().is_ok_and(|r| r.status().is_success())))
        .count()
        .await;
    if failed > 0 {
        bail!("{failed} members could not be added");
    }
    Ok(())
}

/// Runs the scenario.
pub async fn run(target: &Target, args: TypingArgs, fd_limit: u64) -> Result<Value> {
    if args.members < 2 || args.members > 20_000 || args.typers == 0 || args.typers > args.members {
        bail!("typing needs 2 to 20,000 members and 1 to `members` typers");
    }
    if args.duration_secs == 0 || args.duration_secs > 600 || !(0.1..=60.0).contains(&args.interval) {
        bail!("typing is bounded to 600 s, with an interval of 0.1 to 60 s");
    }
    ensure_descriptors(args.members, 1, "members", fd_limit)?;
    create_channel(target, &args).await?;

    let subscriptions = Dialect::Ocvr.subscriptions(&[&args.channel]);
    let typing = json!({"type": "typing", "data": {"channel_id": args.channel}}).to_string();
    let last_typed: Arc<Vec<AtomicU64>> = Arc::new((0..args.typers).map(|_| AtomicU64::new(0)).collect());
    let (sent, delivered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(args.members);
    let (go, _) = watch::channel(false);
    let (stop_typing, _) = watch::channel(false);
    let (stop, _) = broadcast::channel::<()>(1);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let interval = Duration::from_secs_f64(args.interval);
    let mut tasks = Vec::with_capacity(args.members);
    for i in 0..args.members {
        let entry = Entry::user(target, DialectArg::Ocvr, "/v1/ws", &(BASE_USER + i as u64).to_string());
        let (target, gate, ready, subscriptions) =
            (target.clone(), gate.clone(), ready_tx.clone(), subscriptions.clone());
        let (mut go, mut stop_typing, mut stop) = (go.subscribe(), stop_typing.subscribe(), stop.subscribe());
        let (last_typed, sent, delivered, typing) =
            (last_typed.clone(), sent.clone(), delivered.clone(), typing.clone());
        let typers = args.typers;
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let permit = gate.acquire_owned().await;
            let mut conn = match connect(&target, i, &entry).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready.send(Err(format!("{e:#}"))).await;
                    return latencies;
                }
            };
            let subscribed = conn.send_confirmed(Dialect::Ocvr, &subscriptions).await;
            drop(permit);
            let ok = subscribed.is_ok();
            let _ = ready.send(subscribed.map(drop).map_err(|e| format!("{e:#}"))).await;
            if !ok || go.wait_for(|go| *go).await.is_err() {
                return latencies;
            }
            // Typers start spread over one interval.
            let first = tokio::time::Instant::now() + interval.mul_f64(i as f64 / typers as f64);
            let mut ticker = tokio::time::interval_at(first, interval);
            let mut typing_on = i < typers;
            loop {
                let step = tokio::select! {
                    _ = stop.recv() => Step::Stop,
                    _ = stop_typing.changed(), if typing_on => { typing_on = false; continue; }
                    _ = ticker.tick(), if typing_on => Step::Type,
                    m = conn.next() => Step::Read(m),
                };
                match step {
                    Step::Stop | Step::Read(Incoming::Closed(_)) => break,
                    Step::Type => {
                        last_typed[i].store(now_micros(), Ordering::Relaxed);
                        if conn.send_text(typing.clone()).await.is_err() {
                            break;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Step::Read(Incoming::Text(t)) => {
                        let Some(typer) = typer_of(&t).and_then(|u| u.checked_sub(BASE_USER)) else { continue };
                        let Some(at) = last_typed.get(typer as usize) else { continue };
                        let latency = now_micros().saturating_sub(at.load(Ordering::Relaxed));
                        latencies.push(latency.min(u64::from(u32::MAX)) as u32);
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Step::Read(_) => {}
                }
            }
            conn.close().await;
            latencies
        }));
    }
    drop(ready_tx);
    let (mut connected, mut first_error) = (0usize, None);
    for _ in 0..args.members {
        let Some(r) = ready_rx.recv().await else { break };
        match r {
            Ok(()) => connected += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if connected < args.members {
        let _ = stop.send(());
        bail!("only {connected} of {} members connected: {}", args.members, first_error.unwrap_or_default());
    }

    let window = procstat::Window::start(target.server_pid);
    let _ = go.send(true);
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    let _ = stop_typing.send(true);
    // Let the last indicators arrive.
    let expected = |sent: u64| sent * (args.members as u64 - 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < expected(sent.load(Ordering::Relaxed))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (seconds, cpu) = window.finish();
    let _ = stop.send(());
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for t in tasks {
        for l in t.await.unwrap_or_default() {
            let _ = hist.record(u64::from(l).max(1));
        }
    }
    let (sent, seen) = (sent.load(Ordering::Relaxed), hist.len());
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "scenario": "typing",
        "members": args.members,
        "typers": args.typers,
        "indicators_sent": sent,
        "deliveries_expected": expected(sent),
        "deliveries_seen": seen,
        "deliveries_per_second": seen as f64 / seconds,
        "latency_ms_p50": ms(0.5),
        "latency_ms_p99": ms(0.99),
        "latency_ms_p999": ms(0.999),
        "latency_ms_max": hist.max() as f64 / 1000.0,
        "server_cpu_seconds": cpu,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typer_is_read_from_a_typing_start_frame() {
        let frame = r#"{"type":"typing_start","data":{"channel_id":"c","user_id":7000012,"display_name":"x"}}"#;
        assert_eq!(typer_of(frame), Some(7_000_012));
        assert_eq!(typer_of(r#"{"type":"presence_update","data":{"user_id":7000012}}"#), None);
    }
}
