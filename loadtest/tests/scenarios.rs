//! `sb-load` against a real node: the scenarios' reports add up to what the node did.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use switchboard_edge::server::Role;
use switchboard_testkit::redis::RedisServer;
use switchboard_testkit::{test_config, TestNode, ADMIN, SECRET};

/// Runs `sb-load --json SCENARIO...` (`scenario`, then `more` arguments) against `node`; the
/// node runs in this test process, so its memory and CPU are what sb-load reads.
async fn sb_load(node: &TestNode, scenario: &[&str], more: &[&str]) -> Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sb-load"));
    command
        .args(["--server", &node.addr.to_string(), "--secret", SECRET, "--admin-key", ADMIN, "--json"])
        .args(["--server-pid", &std::process::id().to_string()])
        .args(scenario)
        .args(more);
    let output =
        tokio::task::spawn_blocking(move || command.output().expect("run sb-load")).await.expect("sb-load finished");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_splits_its_connections_over_child_processes() {
    let node = TestNode::default().await;
    let report = sb_load(&node, &["idle", "--connections", "60", "--hold-secs", "0"], &["--processes", "3"]).await;
    assert_eq!(report["processes"], 3);
    assert_eq!(report["connections_ok"], 60, "{report}");
    assert_eq!(report["connections_failed"], 0);
    assert!(report["server_rss_after_bytes"].as_u64().is_some_and(|b| b > 0), "{report}");
    // Every child connected its own share of distinct users: the node accepted all 60.
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(r#"switchboard_connects_total{endpoint="/ws/notifications",result="accepted"} 60"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_event_to_every_subscriber_in_both_dialects_split_or_not() {
    let node = TestNode::default().await;
    for (dialect, processes) in [("basic", "1"), ("orbnet", "2")] {
        let report = sb_load(
            &node,
            &["fanout", "--dialect", dialect, "--subscribers", "20", "--rate", "20", "--duration-secs", "1"],
            &["--processes", processes],
        )
        .await;
        assert_eq!((report["dialect"].as_str(), report["processes"].to_string()), (Some(dialect), processes.into()));
        assert_eq!(report["subscribers"], 20, "{report}");
        assert_eq!(report["events_published"], 20, "{report}");
        assert_eq!((report["deliveries"].clone(), report["drops"].clone()), (400.into(), 0.into()), "{report}");
        assert!(report["latency_ms_max"].as_f64().is_some_and(|ms| ms > 0.0), "{report}");
    }
    let metrics = node.metrics().await;
    for endpoint in ["/ws", "/ws/notifications"] {
        let accepted = format!(r#"switchboard_connects_total{{endpoint="{endpoint}",result="accepted"}} 20"#);
        assert!(metrics.contains(&accepted), "{endpoint}: {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_split_over_processes_gets_every_persisted_event_and_plots_them_all() {
    let node = TestNode::default().await;
    let plot = std::env::temp_dir().join(format!("sb-load-many-{}.svg", std::process::id()));
    let report = sb_load(
        &node,
        &["many", "--connections", "30", "--rate", "300", "--batch", "30", "--duration-secs", "1"],
        &["--processes", "3", "--plot", plot.to_str().expect("UTF-8 path")],
    )
    .await;
    assert_eq!((report["connections"].clone(), report["processes"].clone()), (30.into(), 3.into()), "{report}");
    assert_eq!((report["events_published"].clone(), report["deliveries"].clone()), (300.into(), 300.into()));
    assert_eq!(report["drops"], 0, "{report}");
    let svg = std::fs::read_to_string(&plot).expect("the plot was drawn");
    let _ = std::fs::remove_file(&plot);
    assert!(svg.contains("<svg") && svg.contains("300 deliveries"), "{}", &svg[..svg.len().min(2000)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_speaks_basic_where_user_events_arrive_unasked() {
    let node = TestNode::default().await;
    let report = sb_load(
        &node,
        &["many", "--dialect", "basic", "--connections", "10", "--rate", "100", "--batch", "10"],
        &["--duration-secs", "1"],
    )
    .await;
    assert_eq!(report["dialect"], "basic");
    assert_eq!((report["deliveries"].clone(), report["drops"].clone()), (100.into(), 0.into()), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_speaks_basic_with_a_channel_per_connection() {
    let node = TestNode::default().await;
    let report = sb_load(&node, &["idle", "--dialect", "basic", "--connections", "30", "--hold-secs", "0"], &[]).await;
    assert_eq!((report["dialect"].clone(), report["connections_ok"].clone()), ("basic".into(), 30.into()), "{report}");
    let metrics = node.metrics().await;
    assert!(metrics.contains(r#"switchboard_connects_total{endpoint="/ws",result="accepted"} 30"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_storm_in_either_dialect_counts_every_session_it_opened() {
    let node = TestNode::default().await;
    for dialect in ["orbnet", "basic"] {
        let report =
            sb_load(&node, &["connect", "--dialect", dialect, "--connections", "40", "--rate", "400"], &[]).await;
        assert_eq!(
            (report["dialect"].as_str(), report["connections_ok"].as_u64()),
            (Some(dialect), Some(40)),
            "{report}"
        );
        assert_eq!(report["connections_failed"], 0, "{report}");
    }
    let metrics = node.metrics().await;
    for endpoint in ["/ws", "/ws/notifications"] {
        let accepted = format!(r#"switchboard_connects_total{{endpoint="{endpoint}",result="accepted"}} 40"#);
        assert!(metrics.contains(&accepted), "{endpoint}: {metrics}");
    }
}

/// Environment variable that turns [`edge_process`] into the edge `failover` kills.
const EDGE_PROCESS_REDIS: &str = "SB_LOAD_TEST_EDGE_REDIS";

/// Not a test on its own: [`failover_brings_every_client_back_on_the_survivor_with_every_event`]
/// runs this test binary again with [`EDGE_PROCESS_REDIS`] set, so that this edge is a process
/// of its own that `sb-load failover` can kill with SIGKILL. Prints its address, then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the edge process of the failover test, started by that test"]
async fn edge_process() {
    let Ok(redis_url) = std::env::var(EDGE_PROCESS_REDIS) else { return };
    let node = TestNode::start_in_role(test_config(|c| c.redis_url = redis_url), Role::Edge).await;
    println!("edge listening on {}", node.addr);
    std::future::pending::<()>().await;
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_brings_every_client_back_on_the_survivor_with_every_event() {
    let redis = RedisServer::start();
    let survivor = TestNode::start_in_role(test_config(|c| c.redis_url = redis.url()), Role::All).await;
    let mut victim = KillOnDrop(
        Command::new(std::env::current_exe().expect("this test binary"))
            .args(["edge_process", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(EDGE_PROCESS_REDIS, redis.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the edge process"),
    );
    let stdout = BufReader::new(victim.0.stdout.take().expect("its stdout"));
    let victim_addr = tokio::task::spawn_blocking(move || {
        // The harness prints `test edge_process ... ` ahead of the line.
        stdout.lines().map_while(Result::ok).find_map(|l| l.split("edge listening on ").nth(1).map(str::to_owned))
    });
    let victim_addr = tokio::time::timeout(Duration::from_secs(60), victim_addr)
        .await
        .expect("the edge process started in time")
        .expect("reader")
        .expect("the edge process printed its address");

    let mut command = Command::new(env!("CARGO_BIN_EXE_sb-load"));
    command
        .args(["--server", &format!("{victim_addr},{}", survivor.addr), "--secret", SECRET, "--admin-key", ADMIN])
        .args(["--json", "failover", "--kill-pid", &victim.0.id().to_string(), "--clients", "60"])
        .args(["--rate", "60", "--batch", "3", "--before-secs", "1", "--after-secs", "3", "--min-backoff-ms", "200"]);
    let output = tokio::task::spawn_blocking(move || command.output().expect("run sb-load")).await.expect("sb-load");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let status = victim.0.wait().expect("the edge process ended");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "killed by sb-load: {report}");

    assert_eq!(report["clients_back"], 60, "{report}");
    assert_eq!(report["events_published"], 240, "{report}");
    assert_eq!(report["events_lost"], 0, "{report}");
    assert_eq!(report["events_delivered_twice"], 0, "{report}");
    assert_eq!(report["failed_attempts_to_the_survivor"], serde_json::json!({}), "{report}");
    assert_eq!(report["close_codes"], serde_json::json!({"1006": 60}), "every client lost its connection: {report}");
    assert!(report["all_caught_up_after_ms"].as_f64().is_some(), "every client caught up: {report}");
    // The survivor took every client back.
    survivor.await_metric(r#"switchboard_connects_total{endpoint="/ws/notifications",result="accepted"}"#, 60.0).await;
}
