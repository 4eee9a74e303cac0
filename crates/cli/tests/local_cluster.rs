//! `scripts/cluster.sh`, the local cluster without Docker, as an operator uses it: `up` starts
//! Redis, two edges, a worker and nginx in front (deploy/nginx.conf); clients connect through
//! the load balancer; one edge is drained (SIGTERM) while a back end keeps publishing; its
//! clients (the client crate: backoff, resume, deduplication) reconnect through the load
//! balancer to the other edge and get every event exactly once, in order; `down` stops it all.
//! `up --tls` runs the same with native TLS on the edges and a self-signed certificate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use switchboard_client::{Client, ClientConfig, ClientEvent, Dialect};
use switchboard_protocol::token::{mint_hs256, DEV_ADMIN_KEY, DEV_JWT_SECRET};
use switchboard_testkit::process::{http_post, http_request};
use switchboard_testkit::WAIT;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// A running local cluster, stopped with `down` when dropped.
struct LocalCluster {
    dir: PathBuf,
    addresses: HashMap<String, String>,
}

fn script() -> String {
    format!("{}/../../scripts/cluster.sh", env!("CARGO_MANIFEST_DIR"))
}

impl LocalCluster {
    fn up(drain_window: &str) -> LocalCluster {
        Self::start(drain_window, &[])
    }

    fn start(drain_window: &str, flags: &[&str]) -> LocalCluster {
        let name = format!("switchboard-local-cluster-{}{}", std::process::id(), flags.concat());
        let dir = std::env::temp_dir().join(name);
        let out = Command::new(script())
            .arg("up")
            .args(flags)
            .env("SWITCHBOARD_CLUSTER_DIR", &dir)
            .env("SWITCHBOARD_CLUSTER_BIN", BIN)
            .env("SWITCHBOARD_CLUSTER_PORT", "0")
            .env("SWITCHBOARD_DRAIN_WINDOW", drain_window)
            .output()
            .expect("run scripts/cluster.sh up");
        let mut cluster = LocalCluster { dir: dir.clone(), addresses: HashMap::new() };
        assert!(
            out.status.success(),
            "cluster.sh up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.contains("load balancer (nginx)") && printed.contains("playground"), "{printed}");
        let env = std::fs::read_to_string(dir.join("addresses.env")).expect("addresses.env");
        cluster.addresses = env.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        cluster
    }

    fn addr(&self, name: &str) -> &str {
        &self.addresses[name]
    }

    fn pid(&self, component: &str) -> i32 {
        let text = std::fs::read_to_string(self.dir.join(format!("{component}.pid"))).expect("a PID file");
        text.trim().parse().expect("a PID")
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").env("SWITCHBOARD_CLUSTER_DIR", &self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alive(pid: i32) -> bool {
    Command::new("kill").args(["-0", &pid.to_string()]).status().is_ok_and(|s| s.success())
}

fn connections(addr: &str) -> f64 {
    let (_, metrics) = http_request(addr, "GET", "/metrics", "", "");
    switchboard_testkit::metric_value(&metrics, "switchboard_connections{endpoint=\"/ws/notifications\"}")
}

async fn next(client: &mut Client) -> ClientEvent {
    tokio::time::timeout(WAIT, client.next()).await.expect("client event in time").expect("client running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_edges_clients_reconnect_through_the_load_balancer_and_miss_nothing() {
    const USERS: usize = 8;
    const EVENTS: u64 = 10;
    let cluster = LocalCluster::up("2s");
    let lb = cluster.addr("LB").to_owned();
    let url = format!("ws://{lb}/ws/notifications");
    let mut clients = Vec::new();
    for i in 0..USERS {
        let token = mint_hs256(DEV_JWT_SECRET, &format!("lc-{i}"), 600, Default::default()).expect("token");
        let config = ClientConfig::new(Dialect::Orbnet, vec![url.clone()], token)
            .subscribe_to(&["notification"])
            .backoff(Duration::from_millis(50), Duration::from_millis(500));
        let mut client = Client::start(config);
        assert_eq!(next(&mut client).await, ClientEvent::Connected(url.clone()));
        loop {
            if let ClientEvent::Control(v) = next(&mut client).await {
                if v["type"] == "replay_complete" {
                    break;
                }
            }
        }
        clients.push(client);
    }
    // nginx spread them over both edges.
    let on_first = connections(cluster.addr("EDGE_1"));
    assert!(on_first >= 1.0 && connections(cluster.addr("EDGE_2")) >= 1.0, "{on_first} on edge 1");

    let publish = |n: u64| {
        for i in 0..USERS {
            let body = json!({"user": format!("lc-{i}"), "type": "notification", "payload": {"n": n}}).to_string();
            let (status, answer) = http_post(&lb, "/v1/publish", DEV_ADMIN_KEY, &body);
            assert_eq!(status, 200, "publish through the load balancer: {answer}");
        }
    };
    for n in 0..3 {
        publish(n);
    }
    // Drain edge 1 while the back end keeps publishing through the load balancer.
    let edge_1 = cluster.pid("edge-1");
    assert!(Command::new("kill").args(["-TERM", &edge_1.to_string()]).status().expect("kill").success());
    for n in 3..EVENTS {
        publish(n);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    let mut moved = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        let mut drained = false;
        while got.len() < EVENTS as usize {
            match next(client).await {
                ClientEvent::Event(v) => got.push(v["payload"]["n"].as_u64().expect("n")),
                ClientEvent::Disconnected(code) => {
                    assert_eq!(code, 1001, "user {i}: a drain closes with 1001");
                    drained = true;
                }
                ClientEvent::Connected(u) => assert!(drained && u == url, "user {i}: reconnected through {u}"),
                ClientEvent::Control(_) | ClientEvent::ConnectFailed { .. } => {}
            }
        }
        assert_eq!(got, (0..EVENTS).collect::<Vec<_>>(), "user {i}: every event once, in order");
        moved += usize::from(drained);
    }
    assert_eq!(moved as f64, on_first, "the drained edge's clients, and only they, moved");
    let deadline = std::time::Instant::now() + WAIT;
    while alive(edge_1) {
        assert!(std::time::Instant::now() < deadline, "the drained edge did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connections(cluster.addr("EDGE_2")), USERS as f64, "everyone is on the other edge now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_clients_connect_over_wss_through_the_load_balancer() {
    let cluster = LocalCluster::start("5s", &["--tls"]);
    let pem = std::fs::read(cluster.dir.join("tls").join("tls.crt")).expect("the generated certificate");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.expect("a PEM certificate")).expect("a usable certificate");
    }
    let options = switchboard_client::ConnectOptions {
        tls: Some(std::sync::Arc::new(switchboard_client::stream::client_config(roots))),
        ..Default::default()
    };
    let token = mint_hs256(DEV_JWT_SECRET, "alice", 3600, serde_json::Map::new()).expect("token");
    for via in ["LB", "EDGE_1"] {
        let url = format!("wss://{}/ws/notifications?token={token}", cluster.addr(via));
        let mut conn = switchboard_client::Connection::open(&url, &options).await.expect("wss through the cluster");
        match tokio::time::timeout(WAIT, conn.next()).await.expect("a message in time") {
            switchboard_client::Incoming::Text(t) => assert!(t.contains("connection_ack"), "{via}: {t}"),
            other => panic!("{via}: unexpected {other:?}"),
        }
    }
}
