//! The fault matrix's harness (`crates/cli/tests/faults.rs`): the nodes of a scenario, live
//! traffic on them, readiness followed through a fault, and the check of the history against
//! what the scenario promises, written to `target/tmp/fault-matrix/<id>.json`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_testkit::process::{http_request, NodeProcess};
use switchboard_testkit::redis::Flavor;
use switchboard_testkit::sentinel::{SentinelGroup, SENTINEL_MASTER};
use switchboard_testkit::traffic::Traffic;

use super::node_logged;

/// Users (one connection and one publisher each) in every scenario.
pub const USERS: usize = 20;
/// Events per second per user: 400 per second in all.
pub const PER_USER_RATE: f64 = 20.0;
/// How long delivery may take to finish after the last fault.
pub const SETTLE: Duration = Duration::from_secs(30);
/// How long the readiness of a node may take to follow a fault or its end.
pub const READINESS_BOUND: Duration = Duration::from_secs(30);

/// The scenario's id in the report: with the server's flavor when it is not Redis.
pub fn scenario(id: &str) -> String {
    match Flavor::current() {
        Flavor::Redis => id.to_owned(),
        other => format!("{id}-{}", other.name()),
    }
}

/// `/readyz`'s status code.
pub fn ready(node: &NodeProcess) -> u16 {
    http_request(&node.addr, "GET", "/readyz", "", "").0
}

/// Waits until `/readyz` answers `ready` (true: 200) and returns how long that took.
pub async fn readiness_becomes(node: &NodeProcess, want_ready: bool, what: &str) -> Duration {
    let started = Instant::now();
    while (ready(node) == 200) != want_ready {
        assert!(started.elapsed() < READINESS_BOUND, "{what}: /readyz did not follow within {READINESS_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

pub fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Where the scenarios' findings and the nodes' logs go: `target/tmp/fault-matrix`.
fn report_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fault-matrix");
    std::fs::create_dir_all(&dir).expect("create the report directory");
    dir
}

/// Writes one scenario's findings for the matrix report.
pub fn report(id: &str, findings: Value) {
    let dir = report_dir();
    let text = serde_json::to_string_pretty(&findings).expect("JSON");
    std::fs::write(dir.join(format!("{id}.json")), text).expect("write the report");
}

/// What a scenario promises about acknowledged events.
pub enum Promise {
    /// None is lost.
    NoLoss,
    /// Only (some of) these may be lost; `at_least` of them must be (the fault really takes
    /// them: the check would see a loss).
    LossOnlyOf { allowed: HashSet<String>, at_least: usize },
}

/// Stops the traffic, waits for delivery to finish, checks the history against `promise` and
/// reports it; fails the test when the promise did not hold.
pub async fn finish(id: &str, fault: &str, mut traffic: Traffic, promise: Promise, extra: Value) -> Value {
    traffic.stop_publishing().await;
    let started = Instant::now();
    let allowed = match &promise {
        Promise::NoLoss => HashSet::new(),
        Promise::LossOnlyOf { allowed, .. } => allowed.clone(),
    };
    let missing = traffic.await_delivered_except(&allowed, SETTLE).await;
    let checked = traffic.history.check();
    let mut findings = json!({
        "id": id,
        "server": Flavor::current().name(),
        "fault": fault,
        "history": checked.to_json(),
        "closed_connections": traffic.closed_connections(),
        "refusals": traffic.refusals(),
        "drain_ms": ms(started.elapsed()),
    });
    if let (Some(f), Some(e)) = (findings.as_object_mut(), extra.as_object()) {
        f.extend(e.clone());
    }
    report(id, findings.clone());
    assert_eq!(missing, 0, "{id}: acknowledged events never reached open connections: {findings:#}");
    assert!(checked.unexpected.is_empty() && checked.reordered.is_empty(), "{id}: {findings:#}");
    match promise {
        Promise::NoLoss => assert!(checked.lost.is_empty(), "{id}: {findings:#}"),
        Promise::LossOnlyOf { allowed, at_least } => {
            assert!(
                checked.lost.iter().all(|(_, event)| allowed.contains(event)),
                "{id}: other events lost: {findings:#}"
            );
            let lost: HashSet<&str> = checked.lost.iter().map(|(_, event)| event.as_str()).collect();
            assert!(
                lost.len() >= at_least,
                "{id}: the fault took nothing back, the check proves nothing: {findings:#}"
            );
        }
    }
    assert_eq!(traffic.closed_connections(), 0, "{id}: connections were closed: {findings:#}");
    assert!(checked.acked > 0, "{id}: nothing was acknowledged: {findings:#}");
    findings
}

/// Scenario `id`'s worker and edge with `env` over the tests' defaults, their logs (at
/// `debug` for the broker and the worker) in `target/tmp/fault-matrix/<id>-<role>.log`.
pub fn nodes(id: &str, redis_url: &str, cluster: bool, env: &[(String, String)]) -> (NodeProcess, NodeProcess) {
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("SWITCHBOARD_LOG", "info,switchboard_broker=debug,switchboard_worker=debug"));
    let log = |role: &str| report_dir().join(format!("{id}-{role}.log"));
    (
        node_logged("worker", redis_url, cluster, &env, Some(&log("worker"))),
        node_logged("edge", redis_url, cluster, &env, Some(&log("edge"))),
    )
}

/// The settings of nodes on `group` through its sentinels, acknowledging persistent events
/// once `replicas_ack` replicas have them.
pub fn sentinel_env(group: &SentinelGroup, replicas_ack: u32) -> Vec<(String, String)> {
    [
        ("SWITCHBOARD_REDIS_URL", String::new()),
        ("SWITCHBOARD_REDIS_SENTINELS", group.sentinel_addrs()),
        ("SWITCHBOARD_REDIS_SENTINEL_MASTER", SENTINEL_MASTER.to_owned()),
        ("SWITCHBOARD_PERSISTENCE__REPLICAS_ACK", replicas_ack.to_string()),
        // A loopback replica answers in well under a millisecond; a slow CI machine needs more.
        ("SWITCHBOARD_PERSISTENCE__ACK_TIMEOUT", "250ms".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Traffic against one edge.
pub async fn traffic_on(id: &str, edge: &NodeProcess) -> Traffic {
    let edges = std::slice::from_ref(&edge.addr);
    let traffic = Traffic::start(id, USERS, edges, edges, PER_USER_RATE).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    traffic
}
