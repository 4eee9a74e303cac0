//! `sb-load` against a real node: the scenarios' reports add up to what the node did.

use std::process::Command;

use serde_json::Value;
use switchboard_testkit::{TestNode, ADMIN, SECRET};

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
