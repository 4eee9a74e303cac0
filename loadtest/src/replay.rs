//! `replay`: a replay storm. N clients connect once (so the server knows where they are),
//! leave, miss M persisted events each, then all reconnect at once. Reports the time until
//! every client has its missed events and `replay_complete`, and the per-client replay time.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use switchboard_client::{ClientDialect, Dialect, Incoming};

use crate::client::{connect, Entry};
use crate::crowd::{Crowd, Recipe};
use crate::dialect::DialectArg;
use crate::split::{ensure_descriptors, SplitArgs};
use crate::Target;

/// Arguments of `replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// Clients (one user each).
    #[arg(long, default_value_t = 1_000)]
    pub clients: usize,
    /// Events each client misses.
    #[arg(long, default_value_t = 100)]
    pub missed: usize,
    /// Node whose `/metrics` counts persisted events (the worker; default: the server).
    #[arg(long)]
    pub worker: Option<std::net::SocketAddr>,
}

async fn persisted(http: &reqwest::Client, worker: std::net::SocketAddr) -> u64 {
    let Ok(resp) = http.get(format!("http://{worker}/metrics")).send().await else { return 0 };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("switchboard_persisted_total "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Runs the scenario.
pub async fn run(target: &Target, args: ReplayArgs, fd_limit: u64) -> Result<Value> {
    if args.clients == 0 || args.clients > 100_000 || args.missed > 10_000 {
        bail!("replay is bounded to 100,000 clients and 10,000 missed events each");
    }
    ensure_descriptors(args.clients, 1, "clients", fd_limit)?;
    let run_id = crate::client::now_micros();
    let user = move |i: usize| format!("replay-{run_id}-{i}");
    let path = |i: usize| Entry::user(target, DialectArg::Orbnet, "/ws/notifications", &user(i));
    // First visit: the server records where each client is.
    let here = SplitArgs { processes: 1, first: 0, child: false };
    let plan = |i| (path(i), Dialect::Orbnet.subscriptions(&["notification"]));
    let recipe = Recipe {
        n: args.clients,
        concurrency: 256,
        plan,
        scenario: "replay",
        count_flag: "--clients",
        dialect: DialectArg::Orbnet,
        extra: Vec::new(),
        split: &here,
    };
    let Some(first) = Crowd::assemble(target, recipe).await? else { return Ok(Value::Null) };
    first.finish(target, None).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let http = crate::tls::http_client();
    let worker = args.worker.unwrap_or(target.server[0]);
    let before = persisted(&http, worker).await;
    let all: Vec<Value> = (0..args.clients)
        .flat_map(|i| {
            (0..args.missed).map(move |n| json!({"user": user(i), "type": "notification", "payload": {"n": n}}))
        })
        .collect();
    let bar = ProgressBar::new(all.len() as u64).with_message("publishing missed events");
    for chunk in all.chunks(500) {
        let resp = http
            .post(format!("{}://{}/v1/publish/batch", crate::tls::http(), target.server[0]))
            .bearer_auth(&target.admin_key)
            .json(&json!({"events": chunk}))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("publish failed: {}", resp.text().await.unwrap_or_default());
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let want = before + all.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while persisted(&http, worker).await < want {
        if Instant::now() > deadline {
            bail!("the worker did not persist the {} events within 300 s", all.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The storm: everybody reconnects at once.
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let (target, path) = (target.clone(), path(i));
            tokio::spawn(async move {
                let t0 = Instant::now();
                let mut conn = connect(&target, i, &path).await.ok()?;
                let mut replayed = 0usize;
                loop {
                    match tokio::time::timeout(Duration::from_secs(60), conn.next()).await {
                        Ok(Incoming::Text(t)) => {
                            let v: Value = serde_json::from_str(&t).ok()?;
                            if v["type"] == "replay_complete" {
                                conn.close().await;
                                return Some((t0.elapsed(), replayed, v["truncated"] == true));
                            }
                            replayed += usize::from(v["replayed"] == true);
                        }
                        Ok(Incoming::Binary(_) | Incoming::Pong(_)) => {}
                        _ => return None,
                    }
                }
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut complete, mut events, mut truncated) = (0usize, 0usize, 0usize);
    for t in tasks {
        if let Ok(Some((took, n, cut))) = t.await {
            complete += 1;
            events += n;
            truncated += usize::from(cut);
            let _ = hist.record(took.as_micros().max(1) as u64);
        }
    }
    let total = started.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "scenario": "replay",
        "clients": args.clients,
        "clients_replayed": complete,
        "events_replayed": events,
        "events_expected": args.clients * args.missed.min(100),
        "clients_truncated": truncated,
        "seconds_until_all_replayed": total,
        "client_replay_ms_p50": ms(0.5),
        "client_replay_ms_p99": ms(0.99),
        "client_replay_ms_max": hist.max() as f64 / 1000.0,
    }))
}
