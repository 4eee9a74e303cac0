//! A soak over real processes and a durable Redis: an edge and a worker under connect and
//! disconnect churn, broadcasts, replays on every reconnect and a Redis crash and restart in the
//! middle. At the end every acknowledged persistent event has reached its user, the edge holds
//! no more connections or file descriptors than after its warm-up, and its memory is back
//! within a bound of the warm-up figure.
//!
//! The test command runs it for 20 s; `SWITCHBOARD_SOAK_SECS=1200 cargo test -p switchboard
//! --test soak` is the 20-minute run recorded in BENCHMARKS.md.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::node_with;
use serde_json::json;
use switchboard_testkit::process::{http_post, http_request};
use switchboard_testkit::redis::RedisServer;
use switchboard_testkit::{connect_ws, token_with, Received, ADMIN, WAIT};

const USERS: usize = 16;

fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a field")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn connections(addr: &str) -> f64 {
    let (_, metrics) = http_request(addr, "GET", "/metrics", "", "");
    switchboard_testkit::metric_value(&metrics, "switchboard_connections{endpoint=\"/ws/notifications\"}")
}

/// One user's client, connecting and disconnecting until `stop`: each visit resumes from the
/// last event it saw (a replay of what it missed), stays a moment, and leaves. Returns every
/// persistent event number it received.
async fn churn(addr: String, user: usize, stop: Arc<AtomicBool>) -> BTreeSet<u64> {
    let token = token_with(&format!("soak-{user}"), Default::default());
    let mut seen = BTreeSet::new();
    let mut last_id: Option<String> = None;
    let mut visit = 0u64;
    while !stop.load(Ordering::SeqCst) {
        visit += 1;
        let resume = last_id.as_ref().map(|id| format!("&last_event_id={id}")).unwrap_or_default();
        let url = format!("ws://{addr}/ws/notifications?token={token}{resume}");
        // Redis may be down for a moment: the edge refuses or closes, the client comes back.
        let Ok(mut c) = connect_ws(&url, &[]).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let stay = Duration::from_millis(100 + (visit * 37 + user as u64 * 53) % 400);
        let until = Instant::now() + stay;
        let mut received = Vec::new();
        while let Ok(Received::Json(m)) =
            tokio::time::timeout(until.saturating_duration_since(Instant::now()), c.next()).await
        {
            received.push(m);
        }
        // What the edge wrote before it saw the close counts as delivered (its cursor moves
        // past it), so the client reads it too, as any client finishing the closing handshake.
        received.extend(c.close_and_drain().await);
        for m in received {
            if let (Some(n), Some(id)) = (m["payload"]["n"].as_u64(), m["id"].as_str()) {
                seen.insert(n);
                last_id = Some(id.to_owned());
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_broadcasts_replays_and_a_redis_restart_leave_nothing_behind() {
    let secs: u64 = std::env::var("SWITCHBOARD_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut redis = RedisServer::start_durable();
    let replay_all = [("SWITCHBOARD_PERSISTENCE__REPLAY_LIMIT", "10000")];
    let edge = node_with("edge", &redis.url(), false, &replay_all);
    let _worker = node_with("worker", &redis.url(), false, &replay_all);
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..USERS).map(|u| tokio::spawn(churn(edge.addr.clone(), u, stop.clone()))).collect();

    // A back end: persistent events to the users in turn, a broadcast now and then.
    let acknowledged: Arc<Mutex<HashMap<usize, Vec<u64>>>> = Arc::default();
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (addr, acknowledged, publishing) = (edge.addr.clone(), acknowledged.clone(), publishing.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while publishing.load(Ordering::SeqCst) {
                n += 1;
                let user = (n as usize) % USERS;
                let body = json!({"user": format!("soak-{user}"), "type": "notification", "payload": {"n": n}});
                if http_post(&addr, "/v1/publish", ADMIN, &body.to_string()).0 == 200 {
                    acknowledged.lock().expect("lock").entry(user).or_default().push(n);
                }
                if n.is_multiple_of(10) {
                    let broadcast = json!({"channel": "notifications", "type": "server_alert", "payload": {"b": n}});
                    let _ = http_post(&addr, "/v1/publish", ADMIN, &broadcast.to_string());
                }
                std::thread::sleep(Duration::from_millis(4));
            }
        })
    };

    let started = Instant::now();
    let run = Duration::from_secs(secs);
    tokio::time::sleep(Duration::from_secs(5).min(run / 4)).await;
    let (rss_warm, fds_warm) = (proc_status(edge.pid(), "VmRSS:"), open_fds(edge.pid()));
    // Redis crashes in the middle of the run and comes back with its append-only file.
    tokio::time::sleep((run / 2).saturating_sub(started.elapsed())).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    tokio::time::sleep(run.saturating_sub(started.elapsed())).await;
    publishing.store(false, Ordering::SeqCst);
    publisher.join().expect("publisher");
    // The clients keep churning a little longer so they catch up, then stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen: Vec<BTreeSet<u64>> = Vec::new();
    for c in clients {
        seen.push(c.await.expect("client task"));
    }

    // Every acknowledged persistent event reached its user (repeats across reconnects are
    // allowed; gaps are not), or is still waiting in the user's log: one last visit replays it.
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let total: usize = acknowledged.values().map(Vec::len).sum();
    assert!(total > 100, "only {total} events acknowledged");
    for (user, expected) in &acknowledged {
        let mut got = seen[*user].clone();
        if expected.iter().any(|n| !got.contains(n)) {
            let token = token_with(&format!("soak-{user}"), Default::default());
            let mut c =
                connect_ws(&format!("ws://{}/ws/notifications?token={token}", edge.addr), &[]).await.expect("connect");
            loop {
                let m = c.json().await;
                if m["type"] == "replay_complete" {
                    break;
                }
                if let Some(n) = m["payload"]["n"].as_u64() {
                    got.insert(n);
                }
            }
            c.close().await;
        }
        let missing: Vec<&u64> = expected.iter().filter(|n| !got.contains(n)).collect();
        assert!(missing.is_empty(), "user {user}: acknowledged, never delivered: {missing:?}");
    }

    // Nothing left behind: no connection, no descriptor beyond the warm-up's, memory bounded.
    let deadline = Instant::now() + WAIT;
    while connections(&edge.addr) != 0.0 || open_fds(edge.pid()) > fds_warm + 4 {
        assert!(
            Instant::now() < deadline,
            "still {} connections, {} descriptors (warm: {fds_warm})",
            connections(&edge.addr),
            open_fds(edge.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_end = proc_status(edge.pid(), "VmRSS:");
    println!(
        "soak {secs} s: {total} persistent events, edge RSS {rss_warm} kB warm -> {rss_end} kB, fds {fds_warm} -> {}",
        open_fds(edge.pid())
    );
    assert!(rss_end <= rss_warm + rss_warm / 4 + 8 * 1024, "edge memory grew: {rss_warm} kB -> {rss_end} kB");
}
