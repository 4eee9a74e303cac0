//! `many`: N connections, each on its own user stream (user `many-<i>`; orbnet's
//! `/ws/notifications` or basic's `/ws`), and a publisher sending persisted notifications to
//! random users at R events/s through the batch publish API. Measures publish→deliver latency
//! through the persistence worker, from the time each batch was due (see [`crate::pace`]).
//! The batch size bounds the latency from below: a batch's events reach their sockets one
//! after another.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::client::{now_micros, Entry};
use crate::crowd::{merge, Crowd, Recipe};
use crate::dialect::DialectArg;
use crate::pace::{publish, Schedule};
use crate::split::{ensure_descriptors, SplitArgs};
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
    /// Dialect the connections speak.
    #[arg(long, value_enum, default_value_t = DialectArg::Orbnet)]
    pub dialect: DialectArg,
    /// Concurrent handshakes.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    #[command(flatten)]
    pub split: SplitArgs,
}

/// Runs the scenario.
pub async fn run(target: &Target, args: ManyArgs, fd_limit: u64) -> Result<Value> {
    if args.duration_secs > 600 || args.rate <= 0.0 || args.rate > 1_000_000.0 || args.batch == 0 || args.batch > 1000 {
        bail!("many is bounded to 600 s, 1,000,000 events/s and batches of 1..=1000");
    }
    if args.connections == 0 {
        bail!("many needs at least one connection");
    }
    ensure_descriptors(args.connections, args.split.processes, "connections", fd_limit)?;
    let (path, subscriptions) = args.dialect.user_stream()?;
    let plan = |i| (Entry::user(target, args.dialect, path, &format!("many-{i}")), subscriptions.clone());
    let recipe = Recipe {
        n: args.connections,
        concurrency: args.concurrency,
        plan,
        scenario: "many",
        count_flag: "--connections",
        dialect: args.dialect,
        extra: Vec::new(),
        split: &args.split,
    };
    let Some(crowd) = Crowd::assemble(target, recipe).await? else { return Ok(Value::Null) };
    let connected = crowd.connected;

    let total = (args.rate * args.duration_secs as f64).round() as u64;
    let schedule = Schedule {
        url: format!("{}://{}/v1/publish/batch", crate::tls::http(), target.server[0]),
        admin_key: target.admin_key.clone(),
        period: Duration::from_secs_f64(args.batch as f64 / args.rate),
        requests: total.div_ceil(args.batch as u64),
    };
    let (batch, users) = (args.batch, args.connections as u64);
    let mut seed = now_micros() | 1;
    let window = procstat::Window::start(target.server_pid);
    let run = publish(schedule, move |due| {
        let events: Vec<Value> = (0..batch)
            .map(|_| {
                // xorshift: a cheap spread of target users.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                json!({"user": format!("many-{}", seed % users), "type": "notification", "payload": {"t": due}})
            })
            .collect();
        json!({ "events": events })
    })
    .await?;
    let (published, errors) = (run.ok * batch as u64, run.failed());
    crowd.wait_for(published, Duration::from_secs(15)).await;
    let (elapsed, server_cpu) = window.finish();
    let got = crowd.delivered.load(Ordering::Relaxed);
    let latency =
        crowd.finish(target, Some(&format!("many: {} connections, {} events/s offered", connected, args.rate))).await?;
    Ok(merge(
        json!({
            "scenario": "many",
            "dialect": args.dialect.name(),
            "connections": connected,
            "processes": args.split.processes,
            "events_published": published,
            "failed_batches": errors,
            "deliveries": got,
            "drops": published.saturating_sub(got),
            "seconds": elapsed,
            "deliveries_per_second": got as f64 / elapsed,
            "server_cpu_seconds": server_cpu,
            "publisher_behind_ms_max": run.behind_max_micros as f64 / 1000.0,
            "publish_request_ms_max": run.slowest_send_micros as f64 / 1000.0,
        }),
        latency,
    ))
}
