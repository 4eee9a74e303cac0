//! `failover`: a reconnect storm after an edge dies. N orbnet notification clients — the client
//! crate's reconnecting [`Client`]: backoff with jitter, resume with `last_event_id`,
//! deduplication — connect to the first `--server` while a back end publishes persisted
//! notifications through the second. The first server is killed with SIGKILL; its clients move
//! to the second and replay what they missed while publishing goes on. Reports how long until
//! every client was back and caught up, every failed connect attempt and why, and events lost
//! or delivered twice; `--plot` draws clients back and delivery lag over time.
//!
//! Event `n` goes to user `n mod N` and carries `n` and the time its request was due, so every
//! delivery is checked against what was published, and a client is caught up once it has every
//! event published to it before it was back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use switchboard_client::{Client, ClientConfig, ClientEvent, Dialect};
use tokio::sync::watch;

use crate::client::{now_micros, token};
use crate::dialect::DialectArg;
use crate::pace::{publish, Schedule};
use crate::plot::{render_failover, Failover};
use crate::split::ensure_descriptors;
use crate::Target;

/// Arguments of `failover`.
#[derive(Args)]
pub struct FailoverArgs {
    /// Clients, one user each; all connect to the first `--server` first.
    #[arg(long, default_value_t = 15_000)]
    pub clients: usize,
    /// PID of the first server, killed with SIGKILL once publishing runs.
    #[arg(long)]
    pub kill_pid: u32,
    /// Persisted events per second, published through the second server.
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Events per publish request.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Seconds of publishing before the kill.
    #[arg(long, default_value_t = 5)]
    pub before_secs: u64,
    /// Seconds of publishing after the kill.
    #[arg(long, default_value_t = 15)]
    pub after_secs: u64,
    /// Clients started per second at the beginning.
    #[arg(long, default_value_t = 2_000.0)]
    pub connect_rate: f64,
    /// The clients' first reconnect delay (ms), doubling per failed attempt up to 30 s, with
    /// jitter (the client crate's default is 1,000).
    #[arg(long, default_value_t = 1_000)]
    pub min_backoff_ms: u64,
    /// Draw clients back and delivery lag over time into this file (`.svg` or `.png`).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// What one client saw, times in µs since the epoch.
#[derive(Default)]
struct ClientLog {
    /// When each connection opened.
    connected: Vec<u64>,
    /// Each event delivered: its `n` and when.
    events: Vec<(u64, u64)>,
    /// Failed connect attempts: to the survivor or not, and the HTTP status if refused.
    failed: Vec<(bool, Option<u16>)>,
    /// Close codes of the connections that ended.
    closed: Vec<u16>,
}

/// Live counts the run waits on.
#[derive(Default)]
struct Progress {
    connected: AtomicUsize,
    delivered: AtomicU64,
}

/// Runs the scenario.
pub async fn run(target: &Target, args: FailoverArgs, fd_limit: u64) -> Result<Value> {
    if target.server.len() != 2 {
        bail!("failover wants two servers: --server FIRST,SURVIVOR (the first is killed)");
    }
    if args.clients == 0 || args.clients > 100_000 || args.rate <= 0.0 || args.rate > 100_000.0 {
        bail!("failover is bounded to 1..=100,000 clients and up to 100,000 events/s");
    }
    if args.batch == 0 || args.batch > 1000 || args.before_secs + args.after_secs > 600 {
        bail!("failover is bounded to batches of 1..=1000 and 600 s of publishing");
    }
    ensure_descriptors(args.clients + 64, 1, "clients", fd_limit)?;
    let (path, subscriptions) = DialectArg::Orbnet.user_stream()?;
    let urls: Vec<String> = target.server.iter().map(|s| format!("{}://{s}{path}", crate::tls::ws())).collect();
    let survivor = urls[1].clone();
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop) = watch::channel(false);

    // Every client on the first server.
    let bar = ProgressBar::new(args.clients as u64).with_message("connecting");
    let mut tasks = Vec::with_capacity(args.clients);
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / args.connect_rate.max(1.0)));
    for i in 0..args.clients {
        pace.tick().await;
        // Spread over the source addresses: the kernel's search for a free port grows with
        // the connections one address already has to the same server.
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % target.sources.max(1) as usize) as u8);
        let mut config = ClientConfig::new(Dialect::Orbnet, urls.clone(), token(target, &user(i)))
            .backoff(Duration::from_millis(args.min_backoff_ms), Duration::from_secs(30))
            .source(source.into());
        config.subscriptions = subscriptions.clone();
        if let Some(tls) = crate::tls::client_config() {
            config = config.tls(tls);
        }
        tasks.push(tokio::spawn(follow(Client::start(config), survivor.clone(), progress.clone(), stop.clone())));
    }
    let all_in = wait_until(Duration::from_secs(120), || {
        let connected = progress.connected.load(Ordering::Relaxed);
        bar.set_position(connected as u64);
        connected >= args.clients
    })
    .await;
    bar.finish_and_clear();
    if !all_in {
        bail!("only {} of {} clients connected within 120 s", progress.connected.load(Ordering::Relaxed), args.clients);
    }

    // Publishing through the survivor; the first server dies part-way.
    let requests = ((args.before_secs + args.after_secs) as f64 * args.rate / args.batch as f64).ceil() as u64;
    let schedule = Schedule {
        url: format!("{}://{}/v1/publish/batch", crate::tls::http(), target.server[1]),
        admin_key: target.admin_key.clone(),
        period: Duration::from_secs_f64(args.batch as f64 / args.rate),
        requests,
    };
    let due_at = Arc::new(Mutex::new(Vec::with_capacity(requests as usize)));
    let (batch, clients, dues) = (args.batch as u64, args.clients as u64, due_at.clone());
    let publishing = tokio::spawn(publish(schedule, move |due| {
        let mut dues = dues.lock().unwrap_or_else(|e| e.into_inner());
        let first = dues.len() as u64 * batch;
        dues.push(due);
        let events: Vec<Value> = (first..first + batch)
            .map(|n| json!({"user": user((n % clients) as usize), "type": "notification", "payload": {"n": n, "t": due}}))
            .collect();
        json!({ "events": events })
    }));
    tokio::time::sleep(Duration::from_secs(args.before_secs)).await;
    // SAFETY: kill(2) with a PID and a signal number has no memory-safety preconditions.
    if unsafe { libc::kill(args.kill_pid as libc::pid_t, libc::SIGKILL) } != 0 {
        bail!("could not kill process {}: {}", args.kill_pid, std::io::Error::last_os_error());
    }
    let killed_at = now_micros();
    let published = publishing.await??;

    // Until every accepted event is delivered, or 30 s at most.
    let accepted: Vec<bool> = {
        let failed: std::collections::HashSet<u64> = published.failed_requests.iter().copied().collect();
        (0..requests * batch).map(|n| !failed.contains(&(n / batch))).collect()
    };
    let expected = accepted.iter().filter(|a| **a).count() as u64;
    wait_until(Duration::from_secs(30), || progress.delivered.load(Ordering::Relaxed) >= expected).await;
    let _ = stop_tx.send(true);
    let mut logs = Vec::with_capacity(tasks.len());
    for t in tasks {
        logs.push(t.await?);
    }
    let dues = due_at.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let report = Outcome::of(&logs, &dues, &accepted, batch, killed_at);
    if let Some(path) = &args.plot {
        let title = format!("failover: {} clients, {} events/s, first server killed at 0 s", args.clients, args.rate);
        let run = Failover { title: &title, clients: args.clients, reconnected: &report.back_secs, lags: &report.lags };
        render_failover(path, &run)?;
    }
    Ok(json!({
        "scenario": "failover",
        "clients": args.clients,
        "events_published": expected,
        "publish_requests_failed": published.failed(),
        "clients_back": report.back_secs.len(),
        "all_back_after_ms": report.all_back_ms,
        "back_ms_p50": report.back_ms.0,
        "back_ms_p99": report.back_ms.1,
        "all_caught_up_after_ms": report.all_caught_up_ms,
        "caught_up_ms_p50": report.caught_up_ms.0,
        "caught_up_ms_p99": report.caught_up_ms.1,
        "events_replayed_after_reconnect": report.replayed,
        "events_lost": report.lost,
        "events_delivered_twice": report.twice,
        "failed_attempts_to_the_killed_server": report.failed_to_killed,
        "failed_attempts_to_the_survivor": report.failed_to_survivor,
        "close_codes": report.closes,
        "lag_ms_p99_after_kill": report.lag_after_kill.0,
        "lag_ms_max_after_kill": report.lag_after_kill.1,
    }))
}

/// The user of client `i`.
fn user(i: usize) -> String {
    format!("failover-{i}")
}

/// Waits until `done` says so (true) or `limit` passes (false), asking every 50 ms.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Records what one client sees until told to stop.
async fn follow(
    mut client: Client,
    survivor: String,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> ClientLog {
    let mut log = ClientLog::default();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            event = client.next() => event,
        };
        match event {
            None => break,
            Some(ClientEvent::Connected(_)) => {
                log.connected.push(now_micros());
                progress.connected.fetch_add(1, Ordering::Relaxed);
            }
            Some(ClientEvent::Event(v)) => {
                if let Some(n) = v["payload"]["n"].as_u64() {
                    log.events.push((n, now_micros()));
                    progress.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(ClientEvent::Disconnected(code)) => {
                log.closed.push(code);
                progress.connected.fetch_sub(1, Ordering::Relaxed);
            }
            Some(ClientEvent::ConnectFailed { url, status, .. }) => log.failed.push((url == survivor, status)),
            Some(ClientEvent::Control(_)) => {}
        }
    }
    log
}

/// The run's numbers, from every client's log.
struct Outcome {
    /// When each client was back, seconds since the kill, in order.
    back_secs: Vec<f64>,
    all_back_ms: Option<f64>,
    back_ms: (f64, f64),
    all_caught_up_ms: Option<f64>,
    caught_up_ms: (f64, f64),
    replayed: u64,
    lost: u64,
    twice: u64,
    failed_to_killed: usize,
    failed_to_survivor: BTreeMap<String, usize>,
    closes: BTreeMap<u16, usize>,
    /// Every delivery: seconds since the kill, and its lag in ms.
    lags: Vec<(f64, f64)>,
    lag_after_kill: (f64, f64),
}

impl Outcome {
    fn of(logs: &[ClientLog], dues: &[u64], accepted: &[bool], batch: u64, killed_at: u64) -> Outcome {
        let published_at = |n: u64| dues.get((n / batch) as usize).copied().unwrap_or(u64::MAX);
        let since_kill = |t: u64| (t as f64 - killed_at as f64) / 1e6;
        let clients = logs.len() as u64;
        let mut deliveries = vec![0u8; accepted.len()];
        let (mut back, mut caught) = (histogram(), histogram());
        let (mut back_secs, mut all_caught_up, mut replayed) = (Vec::new(), Some(0u64), 0);
        let mut lags = Vec::new();
        let mut lag_after = histogram();
        let (mut failed_to_killed, mut failed_to_survivor, mut closes) = (0, BTreeMap::new(), BTreeMap::new());
        for (i, log) in logs.iter().enumerate() {
            for &(n, at) in &log.events {
                if let Some(d) = deliveries.get_mut(n as usize) {
                    *d = d.saturating_add(1);
                }
                let lag_us = at.saturating_sub(published_at(n));
                lags.push((since_kill(at), lag_us as f64 / 1000.0));
                if at >= killed_at {
                    let _ = lag_after.record(lag_us.max(1));
                }
            }
            for &(to_survivor, status) in &log.failed {
                if to_survivor {
                    let cause = status.map_or_else(|| "unreachable".to_owned(), |s| format!("HTTP {s}"));
                    *failed_to_survivor.entry(cause).or_insert(0) += 1;
                } else {
                    failed_to_killed += 1;
                }
            }
            for &code in &log.closed {
                *closes.entry(code).or_insert(0) += 1;
            }
            // Back: the first connection after the kill. Caught up: once every event published
            // to this user before then was delivered.
            let Some(&back_at) = log.connected.iter().find(|&&t| t >= killed_at) else {
                all_caught_up = None;
                continue;
            };
            back_secs.push(since_kill(back_at));
            let _ = back.record((back_at - killed_at).max(1));
            let mut caught_at = Some(back_at);
            let mine = (i as u64..accepted.len() as u64).step_by(clients as usize);
            for n in mine.filter(|&n| accepted[n as usize] && published_at(n) <= back_at) {
                let delivered = log.events.iter().find(|e| e.0 == n).map(|e| e.1);
                match delivered {
                    Some(at) if at > back_at => {
                        replayed += 1;
                        caught_at = caught_at.map(|c| c.max(at));
                    }
                    Some(_) => {}
                    None => caught_at = None,
                }
            }
            match caught_at {
                Some(at) => {
                    let _ = caught.record((at - killed_at).max(1));
                    all_caught_up = all_caught_up.map(|a| a.max(at - killed_at));
                }
                None => all_caught_up = None,
            }
        }
        back_secs.sort_unstable_by(f64::total_cmp);
        let lost = accepted.iter().zip(&deliveries).filter(|(a, d)| **a && **d == 0).count() as u64;
        let twice = deliveries.iter().map(|&d| u64::from(d.saturating_sub(1))).sum();
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let complete = back_secs.len() == logs.len();
        Outcome {
            all_back_ms: back_secs.last().filter(|_| complete).map(|s| s * 1000.0),
            back_ms: (ms(&back, 0.5), ms(&back, 0.99)),
            all_caught_up_ms: all_caught_up.filter(|_| complete).map(|us| us as f64 / 1000.0),
            caught_up_ms: (ms(&caught, 0.5), ms(&caught, 0.99)),
            back_secs,
            replayed,
            lost,
            twice,
            failed_to_killed,
            failed_to_survivor,
            closes,
            lags,
            lag_after_kill: (ms(&lag_after, 0.99), lag_after.max() as f64 / 1000.0),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}
