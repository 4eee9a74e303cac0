//! `fanout`: N subscribers on one broadcast stream (a channel of the `basic` endpoint, or the
//! orbnet notifications endpoint's broadcast channel), one publisher at R events/s through
//! the publish API. Every payload carries the time it was due to be published (see
//! [`crate::pace`]), so each delivery yields a publish→deliver latency that includes any time
//! the publisher spent held up by the server.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};

use crate::client::Entry;
use crate::crowd::{merge, Crowd, Recipe};
use crate::dialect::{Broadcast, DialectArg};
use crate::pace::{publish, Schedule};
use crate::split::{ensure_descriptors, SplitArgs};
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
    /// Dialect the subscribers speak.
    #[arg(long, value_enum, default_value_t = DialectArg::Basic)]
    pub dialect: DialectArg,
    /// Channel to publish to (default: `status:load` for basic, `notifications` for orbnet).
    #[arg(long)]
    pub channel: Option<String>,
    /// A server-side filter expression on every subscription (brl), e.g. `t >= 0`; the
    /// published payload is `{"t": <due micros>, "pad": "x..."}`, so a filter on `t` matches.
    #[arg(long)]
    pub filter: Option<String>,
    /// Concurrent handshakes.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Publish through this node instead of `--server` (cross-node fan-out in a cluster).
    #[arg(long)]
    pub publish_server: Option<std::net::SocketAddr>,
    /// Spread the subscribers over this many channels (`<channel>-<k>`, subscriber i on
    /// channel i mod N) and publish to them in turn, one event per request. With N equal to
    /// the subscribers every event has one recipient: the per-event cost of publishing
    /// (basic and brl, whose channels are open-ended).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Events per publish request: above 1 they go through `POST /v1/publish/batch`, to the
    /// channels in turn.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[command(flatten)]
    pub split: SplitArgs,
}

/// Runs the scenario.
pub async fn run(target: &Target, args: FanoutArgs, fd_limit: u64) -> Result<Value> {
    if args.duration_secs > 600 || args.rate <= 0.0 || args.rate > 100_000.0 || args.subscribers > 1_000_000 {
        bail!("fanout is bounded to 600 s, 100,000 events/s and 1,000,000 subscribers");
    }
    ensure_descriptors(args.subscribers, args.split.processes, "subscribers", fd_limit)?;
    let stream = args.dialect.broadcast(args.channel.as_deref()).filtered(args.filter.as_deref())?;
    let channels = args.channels.max(1);
    if channels > 1
        && (!matches!(args.dialect, DialectArg::Basic | DialectArg::Brl) || !args.subscribers.is_multiple_of(channels))
    {
        bail!("--channels needs the basic or brl dialect and a number of subscribers it divides");
    }
    let streams: Vec<Broadcast> = if channels == 1 {
        vec![stream.clone()]
    } else {
        (0..channels)
            .map(|k| {
                args.dialect.broadcast(Some(&format!("{}-{k}", stream.channel()))).filtered(args.filter.as_deref())
            })
            .collect::<Result<_>>()?
    };
    let plan = |i: usize| {
        let on = &streams[i % channels];
        (Entry::user(target, args.dialect, on.path, &format!("fan-{i}")), on.subscriptions.clone())
    };
    let recipe = Recipe {
        n: args.subscribers,
        concurrency: args.concurrency,
        plan,
        scenario: "fanout",
        count_flag: "--subscribers",
        dialect: args.dialect,
        extra: args
            .channel
            .iter()
            .flat_map(|c| ["--channel".to_string(), c.clone()])
            .chain(args.filter.iter().flat_map(|f| ["--filter".to_string(), f.clone()]))
            .chain(["--channels".to_string(), channels.to_string()])
            .collect(),
        split: &args.split,
    };
    let Some(crowd) = Crowd::assemble(target, recipe).await? else { return Ok(Value::Null) };
    let subscribed = crowd.connected;

    let publish_to = args.publish_server.unwrap_or(target.server[0]);
    if !publish_to.ip().is_loopback() {
        bail!("sb-load only targets loopback addresses (127.0.0.0/8)");
    }
    let batch = args.batch.clamp(1, 1000);
    let requests = ((args.rate * args.duration_secs as f64) / batch as f64).round() as u64;
    let total_events = requests * batch as u64;
    let route = if batch > 1 { "/v1/publish/batch" } else { "/v1/publish" };
    let schedule = Schedule {
        url: format!("{}://{publish_to}{route}", crate::tls::http()),
        admin_key: target.admin_key.clone(),
        period: Duration::from_secs_f64(batch as f64 / args.rate),
        requests,
    };
    let pad = "x".repeat(args.payload_bytes.saturating_sub(40));
    let window = procstat::Window::start(target.server_pid);
    let mut next = 0;
    let run = publish(schedule, move |due| {
        let mut events: Vec<serde_json::Value> = (0..batch)
            .map(|_| {
                let to = &streams[next % channels];
                next += 1;
                to.publish_body(json!({"t": due, "pad": pad}))
            })
            .collect();
        match events.pop() {
            Some(one) if batch == 1 => one,
            last => json!({"events": events.into_iter().chain(last).collect::<Vec<_>>()}),
        }
    })
    .await?;
    let publish_errors = run.failed() * batch as u64;
    let expected = (total_events - publish_errors) * (subscribed / channels) as u64;
    crowd.wait_for(expected, Duration::from_secs(10)).await;
    let (elapsed, server_cpu) = window.finish();
    let got = crowd.delivered.load(Ordering::Relaxed);
    let latency =
        crowd.finish(target, Some(&format!("fanout: {} subscribers, {} events/s", subscribed, args.rate))).await?;
    Ok(merge(
        json!({
            "scenario": "fanout",
            "dialect": args.dialect.name(),
            "processes": args.split.processes,
            "subscribers": subscribed,
            "events_published": total_events - publish_errors,
            "publish_errors": publish_errors,
            "deliveries_expected": expected,
            "deliveries": got,
            "drops": expected.saturating_sub(got),
            "seconds": elapsed,
            "deliveries_per_second": got as f64 / elapsed,
            "server_cpu_seconds": server_cpu,
            "publisher_behind_ms_max": run.behind_max_micros as f64 / 1000.0,
            "publish_request_ms_max": run.slowest_send_micros as f64 / 1000.0,
            "deliveries_per_server_cpu_second": server_cpu.map(|c| got as f64 / c.max(1e-9)),
        }),
        latency,
    ))
}
