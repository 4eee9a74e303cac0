//! `sb-load idle --processes N` against a real node: the connections are split over child
//! processes, all of them are held at once, and the parent adds the children's reports up.

use std::process::Command;

use switchboard_testkit::{TestNode, ADMIN, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_splits_its_connections_over_child_processes() {
    let node = TestNode::default().await;
    let (addr, pid) = (node.addr.to_string(), std::process::id().to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_sb-load"))
            .args(["--server", &addr, "--secret", SECRET, "--admin-key", ADMIN, "--json"])
            // The node runs in this test process: its memory is what the parent reads.
            .args(["--server-pid", &pid])
            .args(["idle", "--connections", "60", "--processes", "3", "--hold-secs", "0"])
            .output()
            .expect("run sb-load")
    })
    .await
    .expect("sb-load finished");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
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
