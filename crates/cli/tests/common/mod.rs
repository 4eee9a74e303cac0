//! What the tests that run the real binary share: starting nodes of a cluster with the tests'
//! credentials, and waiting on a condition.

#![allow(dead_code)] // each test file uses a different part

pub mod matrix;

use std::time::{Duration, Instant};

use switchboard_testkit::process::NodeProcess;
use switchboard_testkit::{ADMIN, SECRET, WAIT};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A node in `role` on `redis_url` with the tests' credentials.
pub fn node(role: &str, redis_url: &str, cluster: bool) -> NodeProcess {
    node_with(role, redis_url, cluster, &[])
}

/// A node with `extra` settings over the tests' defaults.
pub fn node_with(role: &str, redis_url: &str, cluster: bool, extra: &[(&str, &str)]) -> NodeProcess {
    node_logged(role, redis_url, cluster, extra, None)
}

/// [`node_with`], its log written to `log` when given.
pub fn node_logged(
    role: &str,
    redis_url: &str,
    cluster: bool,
    extra: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> NodeProcess {
    let cluster = if cluster { "true" } else { "false" };
    let mut env = vec![
        ("SWITCHBOARD_REDIS_URL", redis_url),
        ("SWITCHBOARD_REDIS_CLUSTER", cluster),
        ("SWITCHBOARD_JWT_SECRET", SECRET),
        ("SWITCHBOARD_ADMIN_KEY", ADMIN),
        ("SWITCHBOARD_PERSISTENCE__WORKER_LEASE", "2s"),
        // A client that lags a slow CI machine by more than 100 events must not see a
        // truncated replay in the reconnect race test.
        ("SWITCHBOARD_PERSISTENCE__REPLAY_LIMIT", "1000"),
    ];
    env.retain(|(k, _)| !extra.iter().any(|(x, _)| x == k));
    env.extend_from_slice(extra);
    NodeProcess::start_logged(BIN, &[role], &env, log)
}

/// An edge.
pub fn edge(redis_url: &str, cluster: bool) -> NodeProcess {
    node("edge", redis_url, cluster)
}

/// A persistence worker.
pub fn worker(redis_url: &str, cluster: bool) -> NodeProcess {
    node("worker", redis_url, cluster)
}

/// Waits until `f` holds, polling, failing the test after a generous bound.
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT * 3;
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
