//! The fault matrix (`../shared/design/ha.md` §4.3): each test runs the real binaries on real
//! Redis under live traffic (one sequential publisher and one open `/ws/notifications`
//! connection per user, [`Traffic`]), injects one fault, and checks the history: no
//! acknowledged event lost on an open connection, in order per user, nothing unexpected.
//! Each writes its findings to `target/tmp/fault-matrix/<id>.json`.
//!
//! They take minutes, so they are `#[ignore]`d in a plain `cargo test`; `scripts/test.sh` runs
//! them with `--ignored --test-threads 1`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_testkit::fault_proxy::{FaultProxy, Mode};
use switchboard_testkit::process::{http_request, NodeProcess};
use switchboard_testkit::redis::{RedisCluster, RedisServer};
use switchboard_testkit::traffic::Traffic;

mod common;

use common::node_with;

/// Users (one connection and one publisher each) in every scenario.
const USERS: usize = 20;
/// Events per second per user: 400 per second in all.
const PER_USER_RATE: f64 = 20.0;
/// How long delivery may take to finish after the last fault.
const SETTLE: Duration = Duration::from_secs(30);

/// How long the readiness of a node may take to follow a fault or its end.
const READINESS_BOUND: Duration = Duration::from_secs(30);

/// `/readyz`'s status code.
fn ready(node: &NodeProcess) -> u16 {
    http_request(&node.addr, "GET", "/readyz", "", "").0
}

/// Waits until `/readyz` answers `ready` (true: 200) and returns how long that took.
async fn readiness_becomes(node: &NodeProcess, want_ready: bool, what: &str) -> Duration {
    let started = Instant::now();
    while (ready(node) == 200) != want_ready {
        assert!(started.elapsed() < READINESS_BOUND, "{what}: /readyz did not follow within {READINESS_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Writes one scenario's findings for the matrix report.
fn report(id: &str, findings: Value) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-matrix");
    std::fs::create_dir_all(&dir).expect("create the report directory");
    let text = serde_json::to_string_pretty(&findings).expect("JSON");
    std::fs::write(dir.join(format!("{id}.json")), text).expect("write the report");
}

/// Stops the traffic, waits for delivery to finish, checks the history and reports it;
/// fails the test when the promise did not hold.
async fn finish(id: &str, fault: &str, mut traffic: Traffic, extra: Value) {
    traffic.stop_publishing().await;
    let started = Instant::now();
    let missing = traffic.await_delivered(SETTLE).await;
    let report_of = traffic.history.check();
    let mut findings = json!({
        "id": id,
        "fault": fault,
        "history": report_of.to_json(),
        "closed_connections": traffic.closed_connections(),
        "drain_ms": started.elapsed().as_millis() as u64,
    });
    if let (Some(f), Some(e)) = (findings.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    report(id, findings.clone());
    assert_eq!(missing, 0, "{id}: acknowledged events never reached open connections: {findings:#}");
    assert!(report_of.holds(), "{id}: {findings:#}");
    assert_eq!(traffic.closed_connections(), 0, "{id}: connections were closed: {findings:#}");
    assert!(report_of.acked > 0, "{id}: nothing was acknowledged: {findings:#}");
}

/// F8: every pub/sub connection killed on every master five times, 2 s apart, under live
/// persistent traffic: open connections get everything from the users' logs.
async fn subscriptions_killed_under_load(id: &str, redis_url: &str, cluster: bool, masters: &[&RedisServer]) {
    let extra = [("SWITCHBOARD_PERSISTENCE__REPLAY_LIMIT", "100")];
    let worker = node_with("worker", redis_url, cluster, &extra);
    let edge = node_with("edge", redis_url, cluster, &extra);
    let edges = std::slice::from_ref(&edge.addr);
    let traffic = Traffic::start(id, USERS, edges, edges, PER_USER_RATE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut killed = 0;
    for _ in 0..5 {
        for master in masters {
            killed += master.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).trim().parse::<u64>().unwrap_or(0);
        }
        // The fault's rhythm, not a wait for an outcome.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let gap_fills = edge.metric("switchboard_gap_fill_reads_total");
    let extra = json!({
        "pubsub_connections_killed": killed,
        "gap_fill_reads": gap_fills,
        "gap_filled_events": edge.metric("switchboard_gap_filled_events_total"),
        "gap_unrecoverable": edge.metric("switchboard_gap_unrecoverable_total"),
        "subscription_losses": edge.metric("switchboard_broker_subscription_losses_total"),
    });
    assert!(killed >= 5, "{id}: the fault did not bite: {extra}");
    finish(id, "CLIENT KILL TYPE pubsub on every master, 5 times, 2 s apart", traffic, extra.clone()).await;
    assert!(gap_fills > 0.0, "{id}: no connection was caught up after its node's subscriptions came back: {extra}");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f8_killed_subscriptions_lose_nothing_on_open_connections_single_redis() {
    let redis = RedisServer::start();
    subscriptions_killed_under_load("F8-single", &redis.url(), false, &[&redis]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f8_killed_subscriptions_lose_nothing_on_open_connections_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let masters: Vec<&RedisServer> = cluster.nodes.iter().collect();
    subscriptions_killed_under_load("F8-cluster", &cluster.urls(), true, &masters).await;
}

/// F9: the subscriber's socket goes silent (a proxy keeps it open and drops every byte; the
/// command connection keeps working): the node says it is not ready within the probe's
/// deadline, and once the route heals every persistent event published meanwhile reaches the
/// open connections from the users' logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f9_a_silent_subscriber_connection_is_noticed_and_loses_nothing() {
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port).into());
    let _worker = node_with("worker", &redis.url(), false, &[]);
    let edge = node_with("edge", &proxy.url(), false, &[]);
    let edges = std::slice::from_ref(&edge.addr);
    let traffic = Traffic::start("F9", USERS, edges, edges, PER_USER_RATE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set(Mode::BlackholeSubscribers);
    let noticed = readiness_becomes(&edge, false, "F9 blackhole").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.heal();
    let recovered = readiness_becomes(&edge, true, "F9 healed").await;
    let extra = json!({
        "not_ready_after_ms": noticed.as_millis() as u64,
        "ready_after_heal_ms": recovered.as_millis() as u64,
        "gap_filled_events": edge.metric("switchboard_gap_filled_events_total"),
        "subscription_losses": edge.metric("switchboard_broker_subscription_losses_total"),
    });
    assert!(noticed < Duration::from_secs(7), "F9: the silent subscriber went unnoticed too long: {extra}");
    finish("F9", "the subscriber's socket blackholed (open, silent) for ~6 s, then healed", traffic, extra).await;
}
