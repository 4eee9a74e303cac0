//! Cluster mode with the real binary: two `switchboard edge` processes sharing nothing but a
//! real Redis (single server or a local 3-master Redis Cluster), driven by real WebSocket
//! clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
mod common;

use common::{edge, node_with, wait_until, worker, BIN};
use switchboard_testkit::process::{http_post, http_request, NodeProcess};
use switchboard_testkit::redis::{RedisCluster, RedisServer};
use switchboard_testkit::{connect_ws, token_with, Received, WsClient, ADMIN, SECRET, WAIT};

async fn basic_client(edge: &NodeProcess, user: &str, channels: &[&str]) -> WsClient {
    let token = token_with(user, Default::default());
    let mut c = connect_ws(&format!("ws://{}/ws?token={token}", edge.addr), &[]).await.expect("connect");
    for ch in channels {
        c.send_json(json!({"type": "subscribe", "data": {"channel": ch}})).await;
    }
    // Answered only after every subscribe above was confirmed by Redis.
    c.barrier().await;
    c
}

fn publish(edge: &NodeProcess, body: serde_json::Value) -> (u16, String) {
    http_post(&edge.addr, "/v1/publish", ADMIN, &body.to_string())
}

fn publish_ok(edge: &NodeProcess, body: serde_json::Value) {
    let (status, answer) = publish(edge, body);
    assert_eq!(status, 200, "publish failed: {answer}");
}

fn numsub(redis: &RedisServer, topic: &str) -> u64 {
    let out = redis.cli(&["PUBSUB", "NUMSUB", topic]);
    let count = out.lines().nth(1).and_then(|l| l.trim().parse().ok());
    count.unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {out:?}"))
}

/// Runs `switchboard edge` with `redis_url` (and `cluster`) and waits for it to give up:
/// its exit status and what it printed on stderr.
fn edge_refusing(redis_url: &str, cluster: bool) -> (std::process::ExitStatus, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(BIN)
        .args(["edge", "--listen", "127.0.0.1:0"])
        .env_remove("SWITCHBOARD_CONFIG")
        .env("SWITCHBOARD_REDIS_URL", redis_url)
        .env("SWITCHBOARD_REDIS_CLUSTER", cluster.to_string())
        .env("SWITCHBOARD_JWT_SECRET", SECRET)
        .env("SWITCHBOARD_ADMIN_KEY", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the edge");
    let deadline = Instant::now() + WAIT * 2;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the edge") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the edge started instead of refusing {redis_url} (cluster: {cluster})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    (status, stderr)
}

#[test]
fn a_redis_cluster_given_as_a_single_server_is_refused_at_the_start_naming_the_setting() {
    // One URL of a cluster node: every command for a slot that node does not own would fail.
    let node = RedisServer::start_cluster_node();
    let (status, stderr) = edge_refusing(&node.url(), false);
    assert!(!status.success());
    assert!(stderr.contains("cluster_enabled:1") && stderr.contains("SWITCHBOARD_REDIS_CLUSTER=true"), "{stderr}");
    // Several seed URLs without cluster mode: refused before anything is dialled.
    let (status, stderr) = edge_refusing(&format!("{},{}", node.url(), node.url()), false);
    assert!(!status.success());
    assert!(stderr.contains("redis_url: 2 URLs") && stderr.contains("SWITCHBOARD_REDIS_CLUSTER=true"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_edge_receives_what_is_published_through_another() {
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis.url(), false), edge(&redis.url(), false));
    let _worker = worker(&redis.url(), false);
    let mut alice = basic_client(&a, "alice", &["status:build"]).await;
    let mut bob = basic_client(&a, "bob", &[]).await;
    publish_ok(&b, json!({"channel": "status:build", "type": "status_update", "payload": {"n": 1}}));
    publish_ok(&b, json!({"user": "alice", "type": "notification", "payload": {"n": 2}}));
    publish_ok(&b, json!({"user": "bob", "type": "notification", "payload": {"n": 3}}));
    publish_ok(&a, json!({"channel": "status:build", "type": "status_update", "payload": {"n": 4}}));
    // The notification is persisted first (through the worker), so it may come after n = 4.
    let mut got: Vec<u64> = Vec::new();
    for _ in 0..3 {
        got.push(alice.json().await["data"]["n"].as_u64().expect("n"));
    }
    got.sort();
    assert_eq!(got, [1, 2, 4]);
    // Bob's event is handed to every connection it is for in one dispatch on edge A: once bob
    // has it, a copy wrongly meant for alice would be queued before her barrier's pong.
    assert_eq!(bob.json().await["data"]["n"], 3);
    alice.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_on_another_edge_is_not_delivered_twice() {
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis.url(), false), edge(&redis.url(), false));
    let _worker = worker(&redis.url(), false);
    let mut alice = basic_client(&a, "alice", &[]).await;
    let event =
        |n: u64| json!({"id": format!("evt-{n}"), "user": "alice", "type": "notification", "payload": {"n": n}});
    let (status, first) = publish(&a, event(1));
    assert_eq!(status, 200, "{first}");
    let (status, again) = publish(&b, event(1));
    assert_eq!(status, 200, "{again}");
    let (first, again): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&first).expect("JSON"), serde_json::from_str(&again).expect("JSON"));
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["stream_ids"], first["stream_ids"]);
    // Two retries racing on both edges: one publishes; the other gets the first answer or is
    // told to retry (409), never a second delivery.
    let racers: Vec<_> = [a.addr.clone(), b.addr.clone()]
        .into_iter()
        .map(|addr| std::thread::spawn(move || http_post(&addr, "/v1/publish", ADMIN, &event(2).to_string())))
        .collect();
    let statuses: Vec<u16> = racers.into_iter().map(|r| r.join().expect("racer").0).collect();
    assert!(statuses.contains(&200) && statuses.iter().all(|s| [200, 409].contains(s)), "{statuses:?}");
    publish_ok(&a, json!({"user": "alice", "type": "notification", "payload": {"n": 3}}));
    for n in 1..=3 {
        assert_eq!(alice.json().await["data"]["n"], n, "each event once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_edge_tells_the_connections_of_the_whole_cluster_and_of_one_user() {
    let redis = RedisServer::start();
    let a = edge(&redis.url(), false);
    let mut b = node_with("edge", &redis.url(), false, &[("SWITCHBOARD_DRAIN_WINDOW", "1s")]);
    let _on_a = basic_client(&a, "alice", &[]).await;
    let _on_b = basic_client(&b, "alice", &[]).await;
    let _bob = basic_client(&b, "bob", &[]).await;
    let get = |path: &str| {
        let (status, body) = http_request(&a.addr, "GET", path, ADMIN, "");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")
    };
    wait_until("both edges' census", || get("/v1/connections")["connections"] == 3).await;
    let all = get("/v1/connections");
    assert_eq!(all["nodes"].as_array().expect("nodes").len(), 2, "{all}");
    let alice = get("/v1/connections?user=alice");
    let nodes: std::collections::BTreeSet<&str> =
        alice["connections"].as_array().expect("list").iter().map(|c| c["node"].as_str().expect("node")).collect();
    assert_eq!(nodes.len(), 2, "one connection on each edge: {alice}");
    // An edge that stops withdraws its census at once (a crashed one's expires).
    b.signal("TERM");
    assert!(b.wait_exit(WAIT * 2).is_some_and(|s| s.success()), "edge B stops");
    let all = get("/v1/connections");
    assert_eq!((all["connections"].clone(), all["nodes"].as_array().expect("nodes").len()), (json!(1), 1), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_reaches_a_worker_blocked_in_another_process_at_once() {
    let redis = RedisServer::start();
    let a = edge(&redis.url(), false);
    // Looking round and lease renewals an hour apart: a blocking read then waits its longest
    // (30 s, three times the client's patience), so only the append itself can end it.
    let slow = [("SWITCHBOARD_PERSISTENCE__IDLE_POLL", "1h"), ("SWITCHBOARD_PERSISTENCE__WORKER_LEASE", "3h")];
    let _worker = node_with("worker", &redis.url(), false, &slow);
    let blocked_reads =
        || redis.cli(&["CLIENT", "LIST"]).lines().filter(|l| l.contains("cmd=xread") && l.contains("flags=b")).count();
    wait_until("the worker to block on its shards", || blocked_reads() == 1).await;
    let mut alice = basic_client(&a, "alice", &[]).await;
    for n in 1..=3 {
        publish_ok(&a, json!({"user": "alice", "type": "notification", "payload": {"n": n}}));
        assert_eq!(alice.json().await["data"]["n"], n, "persisted and delivered without waiting for a poll");
    }
    // The worker is done with those entries: the ingest log keeps nothing it stored.
    let ingest_len = || {
        (0..4)
            .map(|s| {
                redis.cli(&["XLEN", &format!("ingest:{{s{s}}}")]).trim().parse::<u64>().expect("XLEN answers a number")
            })
            .sum::<u64>()
    };
    wait_until("the ingest log to be trimmed", || ingest_len() == 0).await;
    assert_eq!(redis.cli(&["XLEN", "events:alice"]).trim(), "3", "while the user's log keeps them for replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_subscription_is_released_when_the_last_local_subscriber_leaves() {
    let redis = RedisServer::start();
    let a = edge(&redis.url(), false);
    let first = basic_client(&a, "alice", &["status:shared"]).await;
    let mut second = basic_client(&a, "bob", &["status:shared"]).await;
    assert_eq!(numsub(&redis, "c:status:shared"), 1, "one Redis subscription per topic per node");
    first.close().await;
    // The edge has finished with the first connection (its topics released) once the gauge
    // drops; a wrong release would be on its way to Redis by then. A publish delivered to the
    // second client after that, and the subscription still counted, show it was kept.
    wait_until("the first connection to end", || a.metric("switchboard_connections{endpoint=\"/ws\"}") == 1.0).await;
    publish_ok(&a, json!({"channel": "status:shared", "type": "status_update", "payload": {"n": 1}}));
    assert_eq!(second.json().await["data"]["n"], 1);
    assert_eq!(numsub(&redis, "c:status:shared"), 1, "still needed by the second client");
    second.close().await;
    wait_until("release of the Redis subscription", || numsub(&redis, "c:status:shared") == 0).await;
    wait_until("release of the user topics", || numsub(&redis, "u:alice") == 0 && numsub(&redis, "u:bob") == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_survive_a_redis_restart_and_receive_again() {
    let mut redis = RedisServer::start();
    let (a, b) = (edge(&redis.url(), false), edge(&redis.url(), false));
    let mut alice = basic_client(&a, "alice", &["status:outage"]).await;
    publish_ok(&b, json!({"channel": "status:outage", "type": "status_update", "payload": {"n": 0}}));
    assert_eq!(alice.json().await["data"]["n"], 0);

    redis.kill();
    let ready = |edge: &NodeProcess| {
        let mut s = std::net::TcpStream::connect(&edge.addr).expect("connect");
        std::io::Write::write_all(&mut s, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut r = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut r);
        r.starts_with("HTTP/1.1 200")
    };
    wait_until("/readyz reporting not ready", || !ready(&a)).await;
    // A newcomer cannot be admitted without the cluster-wide quota: an internal error (1011),
    // not a connection that silently gets nothing.
    let token = token_with("newcomer", Default::default());
    let mut newcomer =
        connect_ws(&format!("ws://{}/ws/notifications?token={token}", a.addr), &[]).await.expect("upgraded");
    assert_eq!(newcomer.closed().await, (1011, "Internal server error".to_owned()));
    let (status, answer) =
        publish(&b, json!({"channel": "status:outage", "type": "status_update", "payload": {"n": -1}}));
    assert_eq!(status, 503, "a publish during the outage must be refused, not dropped: {answer}");

    redis.restart();
    wait_until("/readyz reporting ready again", || ready(&a)).await;
    // Publish until the resubscribed edge delivers; the same WebSocket must still be open.
    let deadline = Instant::now() + WAIT * 3;
    let mut n = 0;
    loop {
        n += 1;
        let (status, _) =
            publish(&b, json!({"channel": "status:outage", "type": "status_update", "payload": {"n": n}}));
        if status == 200 {
            if let Ok(msg) = tokio::time::timeout(Duration::from_millis(300), alice.next()).await {
                match msg {
                    Received::Json(v) => {
                        assert!(v["data"]["n"].as_i64().unwrap() > 0);
                        break;
                    }
                    other => panic!("the client connection did not survive the outage: {other:?}"),
                }
            }
        }
        assert!(Instant::now() < deadline, "no delivery after Redis came back");
    }
}

fn readyz(edge: &NodeProcess) -> (u16, serde_json::Value) {
    let (status, body) = http_request(&edge.addr, "GET", "/readyz", "", "");
    (status, serde_json::from_str(&body).unwrap_or_else(|_| panic!("/readyz answers JSON: {body}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_not_ready_while_the_subscriptions_are_lost_and_ready_once_delivery_resumes() {
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis.url(), false), edge(&redis.url(), false));
    let mut alice = basic_client(&a, "alice", &["status:build"]).await;
    assert_eq!(readyz(&a).0, 200);
    let (up, losses) = ("switchboard_broker_subscriptions_up", "switchboard_broker_subscription_losses_total");
    assert_eq!((a.metric(up), a.metric(losses)), (1.0, 0.0));
    // Redis 7 drops the subscriber connections of a user no longer allowed their channels;
    // the command connection (PING, keys) keeps working, so only the subscriptions tell.
    redis.cli(&["ACL", "SETUSER", "default", "resetchannels"]);
    wait_until("/readyz to report the lost subscriptions", || readyz(&a).0 == 503).await;
    assert_eq!(readyz(&a).1["status"], "subscriptions_lost");
    assert_eq!((a.metric(up), a.metric(losses)), (0.0, 1.0));
    // Reconnecting cannot restore them while the ACL refuses: the node stays not ready.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(readyz(&a).0, 503, "ready again though no subscription can be made");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.cli(&["ACL", "SETUSER", "default", "allchannels"]);
    wait_until("/readyz to report ready again", || readyz(&a).0 == 200).await;
    // Ready means delivering: the first event after it reaches the open connection.
    publish_ok(&b, json!({"channel": "status:build", "type": "status_update", "payload": {"n": 1}}));
    assert_eq!(alice.json().await["data"]["n"], 1);
    assert_eq!((a.metric(up), a.metric(losses)), (1.0, 1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_not_ready_on_a_replica_that_answers_ping_and_ready_once_it_is_a_master() {
    let master = RedisServer::start();
    let replica = RedisServer::start();
    replica.cli(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    // A replica answers PING and takes subscriptions, but refuses every write.
    let a = edge(&replica.url(), false);
    wait_until("/readyz to say the server is read-only", || {
        readyz(&a) == (503, json!({"status": "broker_read_only", "broker": "redis"}))
    })
    .await;
    let check = |name: &str| a.metric(&format!("switchboard_readiness_check{{check=\"{name}\"}}"));
    assert_eq!((check("writable"), check("broker"), check("subscriptions")), (0.0, 1.0, 1.0));
    // Promoted (as a failover would), it is ready.
    replica.cli(&["REPLICAOF", "NO", "ONE"]);
    wait_until("/readyz to report ready", || readyz(&a).0 == 200).await;
    assert_eq!(check("writable"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_killed_subscriber_connections_are_counted_and_restored_before_ready() {
    let cluster = RedisCluster::start(3);
    let (a, b) = (edge(&cluster.urls(), true), edge(&cluster.urls(), true));
    let channels: Vec<String> = (0..12).map(|i| format!("status:shard-{i}")).collect();
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut alice = basic_client(&a, "alice", &refs).await;
    let losses = "switchboard_broker_subscription_losses_total";
    assert_eq!(a.metric(losses), 0.0);
    let killed: u64 = (0..cluster.nodes.len()).map(|node| cluster.kill_pubsub_clients(node)).sum();
    assert!(killed >= 3, "both edges subscribe on every master: {killed} connections killed");
    wait_until("the loss to be counted", || a.metric(losses) >= 1.0).await;
    wait_until("/readyz to report ready again", || readyz(&a).0 == 200).await;
    // Ready means every shard's subscriptions are back.
    for (i, ch) in channels.iter().enumerate() {
        publish_ok(&b, json!({"channel": ch, "type": "status_update", "payload": {"n": i}}));
    }
    let mut got: Vec<i64> = Vec::new();
    for _ in 0..channels.len() {
        got.push(alice.json().await["data"]["n"].as_i64().expect("n"));
    }
    got.sort();
    assert_eq!(got, (0..12).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_delivery_works_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let (a, b) = (edge(&cluster.urls(), true), edge(&cluster.urls(), true));
    let _worker = worker(&cluster.urls(), true);
    let channels: Vec<String> = (0..12).map(|i| format!("status:shard-{i}")).collect();
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut alice = basic_client(&a, "alice", &refs).await;
    for (i, ch) in channels.iter().enumerate() {
        publish_ok(&b, json!({"channel": ch, "type": "status_update", "payload": {"n": i}}));
    }
    publish_ok(&b, json!({"user": "alice", "type": "notification", "payload": {"n": 99}}));
    let mut got: Vec<i64> = Vec::new();
    for _ in 0..13 {
        got.push(alice.json().await["data"]["n"].as_i64().unwrap());
    }
    got.sort();
    let mut want: Vec<i64> = (0..12).collect();
    want.push(99);
    assert_eq!(got, want);
}

/// Connects `count` clients to `path_and_query` at once, alternating between the edges;
/// returns the admitted ones.
async fn storm(edges: [&NodeProcess; 2], path_and_query: &str, count: usize) -> Vec<WsClient> {
    let attempts: Vec<_> = (0..count)
        .map(|i| {
            let url = format!("ws://{}{path_and_query}", edges[i % 2].addr);
            tokio::spawn(async move { connect_ws(&url, &[]).await.expect("connect").admitted().await })
        })
        .collect();
    let mut admitted = Vec::new();
    for attempt in attempts {
        admitted.extend(attempt.await.expect("attempt"));
    }
    admitted
}

/// Per-user, account-wide and per-key quotas hold across two edges under concurrent connects,
/// the admitted connections work, and a closed one frees its slot at once (not after the lease).
async fn quotas_hold_across_edges(redis_url: &str, cluster: bool) {
    let (a, b) = (edge(redis_url, cluster), edge(redis_url, cluster));
    let _worker = worker(redis_url, cluster);
    let edges = [&a, &b];
    for round in 0..3 {
        let token = token_with(&format!("storm-{round}"), Default::default());
        let admitted = storm(edges, &format!("/ws/notifications?token={token}"), 14).await;
        assert_eq!(admitted.len(), 5, "round {round}: exactly the per-user endpoint limit is admitted");
    }

    let user = "quota-user";
    let token = token_with(user, Default::default());
    let notifications = format!("/ws/notifications?token={token}");
    let mut admitted = storm(edges, &notifications, 14).await;
    assert_eq!(admitted.len(), 5);
    // Every admitted connection receives (greetings were skipped by the admission check).
    publish_ok(&b, json!({"user": user, "type": "notification", "payload": {"n": 1}}));
    for c in &mut admitted {
        loop {
            let m = c.json().await;
            if m["type"] == "notification" {
                assert_eq!(m["payload"]["n"], 1);
                break;
            }
            assert!(m["type"] == "replay_complete", "{m}");
        }
    }
    // Closing one frees its slot at once: well within the 30 s lease a new one is admitted on
    // the other edge (the close is processed asynchronously, hence the retries).
    admitted.pop().expect("one").close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let url = format!("ws://{}{notifications}", b.addr);
        if let Some(c) = admitted_one(&url).await {
            admitted.push(c);
            break;
        }
        assert!(Instant::now() < deadline, "the closed connection's slot was not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(storm(edges, &notifications, 2).await.is_empty(), "five again: no room");

    // Account-wide: 10 connections per user over every endpoint; five are taken.
    let basic = storm(edges, &format!("/ws?token={token}"), 8).await;
    assert_eq!(basic.len(), 5, "the account-wide limit of 10 holds across endpoints and edges");

    // Per API key: its own max_connections.
    let body = json!({"name": "quota-team", "endpoints": ["/ws/threats"], "max_connections": 3}).to_string();
    let (status, answer) = http_post(&a.addr, "/v1/api-keys", ADMIN, &body);
    assert_eq!(status, 201, "{answer}");
    let key: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    let key = key["key"].as_str().expect("the key");
    let threats = storm(edges, &format!("/ws/threats?api_key={key}"), 8).await;
    assert_eq!(threats.len(), 3, "an API key's connection limit holds across edges");

    // Per token (brl): 8 connections of one token, whichever edge they reach.
    let token = token_with("brl-user", Default::default());
    let brl = storm(edges, &format!("/api/v2/realtime?token={token}"), 12).await;
    assert_eq!(brl.len(), 8, "a token's connection limit holds across edges");
}

async fn admitted_one(url: &str) -> Option<WsClient> {
    connect_ws(url, &[]).await.expect("connect").admitted().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_across_two_edges_under_concurrent_connects() {
    let redis = RedisServer::start();
    quotas_hold_across_edges(&redis.url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_across_two_edges_under_concurrent_connects_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    quotas_hold_across_edges(&cluster.urls(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_edges_slots_come_back_within_the_lease_time() {
    let redis = RedisServer::start();
    let env = |url: &str| {
        vec![
            ("SWITCHBOARD_REDIS_URL".to_string(), url.to_string()),
            ("SWITCHBOARD_JWT_SECRET".to_string(), SECRET.to_string()),
            ("SWITCHBOARD_ADMIN_KEY".to_string(), ADMIN.to_string()),
            ("SWITCHBOARD_QUOTA_LEASE".to_string(), "2s".to_string()),
        ]
    };
    let vars = env(&redis.url());
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut a = NodeProcess::start(BIN, &["edge"], &vars);
    let b = NodeProcess::start(BIN, &["edge"], &vars);
    let token = token_with("dana", Default::default());
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut c = connect_ws(&format!("ws://{}/ws/notifications?token={token}", a.addr), &[]).await.unwrap();
        assert_eq!(c.json().await["type"], "connection_ack");
        held.push(c);
    }
    // Renewals keep the slots for longer than one lease while the edge lives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut refused = connect_ws(&format!("ws://{}/ws/notifications?token={token}", b.addr), &[]).await.unwrap();
    assert_eq!(refused.closed().await.0, 4008, "slots held by a live edge stay taken");

    a.kill();
    let killed_at = Instant::now();
    loop {
        let mut c = connect_ws(&format!("ws://{}/ws/notifications?token={token}", b.addr), &[]).await.unwrap();
        match c.next().await {
            Received::Json(v) if v["type"] == "connection_ack" => break,
            Received::Closed(4008, _) => {
                assert!(killed_at.elapsed() < Duration::from_secs(8), "slots of the crashed edge never came back");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // The bound is the 2 s lease; the slack covers a loaded CI machine, not the mechanism.
    assert!(killed_at.elapsed() <= Duration::from_secs(8), "freed within the lease bound");
}

async fn notifications_client(edge: &NodeProcess, user: &str) -> (WsClient, Vec<serde_json::Value>) {
    notifications_client_from(edge, user, None).await
}

async fn notifications_client_from(
    edge: &NodeProcess,
    user: &str,
    last_event_id: Option<&str>,
) -> (WsClient, Vec<serde_json::Value>) {
    let token = token_with(user, Default::default());
    let resume = last_event_id.map(|id| format!("&last_event_id={id}")).unwrap_or_default();
    let url = format!("ws://{}/ws/notifications?token={token}{resume}", edge.addr);
    let mut c = connect_ws(&url, &[]).await.expect("connect");
    assert_eq!(c.json().await["type"], "connection_ack");
    let mut replayed = Vec::new();
    loop {
        let m = c.json().await;
        let done = m["type"] == "replay_complete";
        replayed.push(m);
        if done {
            break;
        }
    }
    c.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
    // Live events may already flow (every type does until the first subscribe).
    c.barrier_allowing_messages(|m| replayed.push(m.clone())).await;
    (c, replayed)
}

fn notify(edge: &NodeProcess, user: &str, n: u64) {
    publish_ok(edge, json!({"user": user, "type": "notification", "payload": {"n": n}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_on_the_other_edge_gets_exactly_what_it_missed() {
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis.url(), false), edge(&redis.url(), false));
    let _worker = worker(&redis.url(), false);
    let (mut first, _) = notifications_client(&a, "erin").await;
    notify(&b, "erin", 0);
    assert_eq!(first.json().await["payload"]["n"], 0);
    first.close().await;
    wait_until("edge A to drop erin's subscription", || numsub(&redis, "u:erin") == 0).await;
    for n in 1..6 {
        notify(&b, "erin", n);
    }
    wait_until("the worker to store the five events", || redis.cli(&["XLEN", "events:erin"]).trim() == "6").await;
    let (mut second, replayed) = notifications_client(&b, "erin").await;
    let got: Vec<u64> = replayed.iter().filter_map(|m| m["payload"]["n"].as_u64()).collect();
    assert_eq!(got, [1, 2, 3, 4, 5], "exactly the missed events, in order: {replayed:?}");
    assert!(replayed[..5].iter().all(|m| m["replayed"] == true));
    assert_eq!(replayed[5], json!({"type": "replay_complete", "count": 5, "truncated": false}));
    notify(&a, "erin", 6);
    assert_eq!(second.json().await["payload"]["n"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_in_the_middle_of_a_backlog_loses_nothing_and_delivers_in_order() {
    /// Users the backlog is spread over; `kim` (the user watched) gets every tenth event.
    const USERS: usize = 40;
    const BACKLOG: usize = 4000;
    let redis = RedisServer::start();
    let a = edge(&redis.url(), false);
    let lease = [("SWITCHBOARD_PERSISTENCE__WORKER_LEASE", "1s")];
    let mut first_worker = node_with("worker", &redis.url(), false, &lease);
    wait_until("the worker to own every shard", || first_worker.metric("switchboard_worker_shards_owned") == 4.0).await;
    let (mut client, _) = notifications_client(&a, "kim").await;
    // kim's events are numbered in the order they are acknowledged.
    let mut expected = Vec::new();
    let mut backlog = std::collections::HashSet::new();
    first_worker.signal("STOP");
    for round in 0..BACKLOG / 1000 {
        let events: Vec<serde_json::Value> = (0..1000)
            .map(|i| {
                let (user, k) =
                    if i % 10 == 0 { ("kim".to_owned(), round * 100 + i / 10) } else { (format!("u{}", i % USERS), 0) };
                json!({"user": user, "type": "notification", "payload": {"k": k}})
            })
            .collect();
        let (status, answer) = http_post(&a.addr, "/v1/publish/batch", ADMIN, &json!({"events": events}).to_string());
        assert_eq!(status, 200, "{answer}");
        let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        let ids = v["stream_ids"].as_array().expect("positions per event").iter();
        backlog.extend(ids.map(|p| p[0].as_str().expect("a persisted event").to_owned()));
        expected.extend((0..100).map(|i| (round * 100 + i) as u64));
    }
    // Publishing goes on across the kill, one acknowledged event at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let first_trickle = expected.len() as u64;
    let publisher = {
        let (addr, stop) = (a.addr.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut k = first_trickle;
            while !stop.load(Ordering::SeqCst) {
                let body = json!({"user": "kim", "type": "notification", "payload": {"k": k}}).to_string();
                let (status, answer) = http_post(&addr, "/v1/publish", ADMIN, &body);
                assert_eq!(status, 200, "{answer}");
                k += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            k
        })
    };
    first_worker.signal("CONT");
    // Killed while the backlog flows: some of it stored, not all.
    let persisted = "switchboard_persisted_total";
    wait_until("the worker to work through the backlog", || first_worker.metric(persisted) > 0.0).await;
    first_worker.kill();
    // The ingest log keeps only what no commit has covered yet.
    let pending = (0..4)
        .flat_map(|shard| {
            redis
                .cli(&["XRANGE", &format!("ingest:{{s{shard}}}"), "-", "+"])
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| backlog.contains(line.trim()))
        .count();
    assert!(pending > 0, "the worker was killed with part of the backlog still to store");
    let _second_worker = node_with("worker", &redis.url(), false, &lease);
    // Let the trickle run past the takeover, then end it with a marker.
    wait_until("the second worker to take over", || _second_worker.metric("switchboard_worker_shards_owned") == 4.0)
        .await;
    stop.store(true, Ordering::SeqCst);
    let next_k = publisher.join().expect("publisher");
    expected.extend(first_trickle..next_k);
    notify(&a, "kim", u64::MAX);
    let mut got = Vec::new();
    loop {
        let m = client.json().await;
        if m["payload"]["n"] == u64::MAX {
            break;
        }
        got.push(m["payload"]["k"].as_u64().unwrap_or_else(|| panic!("an event of kim's: {m}")));
    }
    assert_eq!(got.len(), expected.len(), "every acknowledged event once (missing or doubled)");
    assert_eq!(got, expected, "every acknowledged event once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnecting_over_and_over_across_edges_sees_every_event_in_order() {
    const TOTAL: u64 = 300;
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis.url(), false), edge(&redis.url(), false));
    let _worker = worker(&redis.url(), false);
    // Publish numbered events continuously, alternating edges; each is acknowledged before the
    // next is sent, so their order is the order of the numbers.
    let (addr_a, addr_b) = (a.addr.clone(), b.addr.clone());
    let publisher = std::thread::spawn(move || {
        for n in 0..TOTAL {
            let addr = if n % 2 == 0 { &addr_a } else { &addr_b };
            let body = json!({"user": "rita", "type": "notification", "payload": {"n": n}}).to_string();
            let (status, answer) = http_post(addr, "/v1/publish", ADMIN, &body);
            assert_eq!(status, 200, "{answer}");
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    let mut seen = std::collections::BTreeSet::new();
    // A new client resumes from the start of its log: events published before its first
    // connection count as missed too.
    let mut last_id: Option<String> = Some("0-0".to_owned());
    let deadline = Instant::now() + Duration::from_secs(90);
    for round in 0.. {
        let edge = if round % 2 == 0 { &a } else { &b };
        let (mut c, replayed) = notifications_client_from(edge, "rita", last_id.as_deref()).await;
        let mut previous: Option<u64> = None;
        let mut take = |m: &serde_json::Value, last_id: &mut Option<String>| {
            if let Some(n) = m["payload"]["n"].as_u64() {
                assert!(previous.is_none_or(|p| n > p), "round {round}: {n} after {previous:?}");
                previous = Some(n);
                seen.insert(n);
                *last_id = Some(m["id"].as_str().expect("id").to_owned());
            }
        };
        for m in &replayed {
            take(m, &mut last_id);
        }
        // Stay a short while, then leave (the client resumes from the last id it saw).
        let until = tokio::time::Instant::now() + Duration::from_millis(40);
        while let Ok(Received::Json(m)) = tokio::time::timeout_at(until, c.next()).await {
            take(&m, &mut last_id);
        }
        drop(c);
        if publisher.is_finished() && seen.len() as u64 == TOTAL {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {round} reconnects only {} of {TOTAL} events were seen; missing: {:?}",
            seen.len(),
            (0..TOTAL).filter(|n| !seen.contains(n)).collect::<Vec<_>>()
        );
    }
    publisher.join().expect("publisher");
    assert_eq!(seen, (0..TOTAL).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_own_a_shard_at_once_and_a_dead_ones_shards_are_taken_over() {
    let redis = RedisServer::start();
    let mut first = worker(&redis.url(), false);
    let _second = worker(&redis.url(), false);
    let holders = |shard: u32| -> Vec<String> {
        redis.cli(&["ZRANGE", &format!("worker-lease:{shard}"), "0", "-1"]).lines().map(str::to_owned).collect()
    };
    wait_until("every shard to be owned", || (0..4).all(|s| holders(s).len() == 1)).await;
    let sample_until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < sample_until {
        for s in 0..4 {
            assert!(holders(s).len() <= 1, "shard {s} has several owners: {:?}", holders(s));
        }
    }
    first.kill();
    let killed_at = Instant::now();
    // Whatever the first worker owned passes to the second within the 2 s lease (plus slack).
    wait_until("the survivor to own every shard", || {
        let owners: std::collections::HashSet<String> = (0..4).flat_map(holders).collect();
        owners.len() == 1 && (0..4).all(|s| holders(s).len() == 1)
    })
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(8), "takeover took {:?}", killed_at.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_through_one_edge_stops_receiving_on_another() {
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis.url(), false), edge(&redis.url(), false));
    let member = |method: &str| {
        let (status, body) = http_request(&a.addr, method, "/v1/channels/conversation:c1/members/alice", ADMIN, "");
        assert_eq!(status, 204, "{method} member: {body}");
    };
    member("PUT");
    let mut alice = basic_client(&b, "alice", &["conversation:c1", "status:marker"]).await;
    let say =
        |n: u64| publish_ok(&a, json!({"channel": "conversation:c1", "type": "chat_message", "payload": {"n": n}}));
    say(1);
    assert_eq!(alice.json().await["data"]["n"], 1);
    member("DELETE");
    // The removal and the next message travel through Redis in this order; a marker on another
    // channel shows that nothing of the conversation came first.
    say(2);
    publish_ok(&a, json!({"channel": "status:marker", "type": "status_update", "payload": {"n": 3}}));
    let next = alice.json().await;
    assert_eq!((next["channel"].clone(), next["data"]["n"].clone()), (json!("status:marker"), json!(3)), "{next}");
    // As a member again, the client may subscribe again.
    member("PUT");
    alice.send_json(json!({"type": "subscribe", "data": {"channel": "conversation:c1"}})).await;
    alice.barrier().await;
    say(4);
    assert_eq!(alice.json().await["data"]["n"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_through_one_edge_is_closed_on_another_and_cannot_come_back() {
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis.url(), false), edge(&redis.url(), false));
    let token = |sid: &str| {
        let mut claims = serde_json::Map::new();
        claims.insert("sid".into(), json!(sid));
        token_with("alice", claims)
    };
    let (revoked, kept) = (token("s1"), token("s2"));
    let mut first = connect_ws(&format!("ws://{}/ws?token={revoked}", b.addr), &[]).await.expect("connect");
    let mut second = connect_ws(&format!("ws://{}/ws?token={kept}", b.addr), &[]).await.expect("connect");
    first.barrier().await;
    second.barrier().await;
    let (status, body) = http_post(&a.addr, "/v1/sessions/revoke", ADMIN, r#"{"session":"s1","reason":"logout_all"}"#);
    assert_eq!(status, 200, "{body}");
    let (code, reason) = first.closed().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("logout_all"), "{reason}");
    second.barrier().await;
    let again = connect_ws(&format!("ws://{}/ws?token={revoked}", a.addr), &[]).await;
    assert!(again.err().is_some_and(|e| e.to_string().contains("401")), "a revoked session stays out");
    let (status, _) = http_post(&a.addr, "/v1/sessions/revoke", ADMIN, r#"{"user":"alice"}"#);
    assert_eq!(status, 200);
    assert_eq!(second.closed().await.0, 4001, "revoking the user closes every session");
}

/// Watches every command Redis runs (`MONITOR`, which includes the commands scripts run) until
/// told to stop; returns every write that moved a shard cursor back.
fn watch_cursors(redis: &RedisServer, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::BufRead;
    let mut monitor = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "MONITOR"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli MONITOR");
    let lines = std::io::BufReader::new(monitor.stdout.take().expect("stdout")).lines();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|l| drop(tx.send(l))));
    std::thread::spawn(move || {
        let mut last: std::collections::HashMap<String, (u64, u64)> = Default::default();
        let mut backwards = Vec::new();
        let mut check = |line: &str| {
            // ... "SET" "ingest-cursor:{s2}" "1770552000000-3"
            let Some(at) = line.find("\"SET\" \"ingest-cursor:") else { return };
            let parts: Vec<&str> = line[at..].split('"').collect();
            let (key, value) = (parts[3].to_owned(), parts[5]);
            let Some((ms, seq)) = value.split_once('-') else { return };
            let (Ok(ms), Ok(seq)) = (ms.parse::<u64>(), seq.parse::<u64>()) else { return };
            if let Some(prev) = last.get(&key).filter(|prev| (ms, seq) < **prev) {
                backwards.push(format!("{key}: {prev:?} -> {ms}-{seq}"));
            }
            let seen = last.entry(key).or_default();
            *seen = (*seen).max((ms, seq));
        };
        while !stop.load(Ordering::SeqCst) {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
                check(&line);
            }
        }
        // What Redis ran before the stop may still be in the pipe; Redis keeps running
        // commands (polls, renewals), so drain for a bounded time.
        let until = Instant::now() + Duration::from_secs(1);
        while let Ok(line) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            check(&line);
        }
        let _ = monitor.kill();
        let _ = monitor.wait();
        backwards
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stalls_past_its_lease_stands_down_and_nothing_is_lost_or_reordered() {
    /// Users the batches go to.
    const USERS: usize = 60;
    let redis = RedisServer::start();
    let a = edge(&redis.url(), false);
    // Each user's log must keep every event the test sends it, so that all can be compared: the
    // five users of the steady publisher get one event per round trip for the whole test (a few
    // thousand on a fast machine), more than the usual 1,000 a log keeps.
    let lease = [("SWITCHBOARD_PERSISTENCE__WORKER_LEASE", "1s"), ("SWITCHBOARD_PERSISTENCE__REPLAY_LIMIT", "10000")];
    let first = node_with("worker", &redis.url(), false, &lease);
    let owned = "switchboard_worker_shards_owned";
    wait_until("the first worker to own every shard", || first.metric(owned) == 4.0).await;
    let second = node_with("worker", &redis.url(), false, &lease);

    // Events keep arriving for a few users; every acknowledged position is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let publisher = {
        let (addr, stop, acknowledged) = (a.addr.clone(), stop.clone(), acknowledged.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let user = format!("u{}", n % 5);
                let body = json!({"user": user, "type": "notification", "payload": {"n": n}}).to_string();
                let (status, answer) = http_post(&addr, "/v1/publish", ADMIN, &body);
                assert_eq!(status, 200, "{answer}");
                let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
                let position = v["stream_ids"][0].as_str().expect("a persisted event").to_owned();
                acknowledged.lock().expect("lock").push((user, position));
                n += 1;
            }
        })
    };
    let cursors = watch_cursors(&redis, stop.clone());
    wait_until("events to flow", || acknowledged.lock().expect("lock").len() > 200).await;
    // Three stalls, the workers taking turns: each time a backlog keeps the owner busy, so
    // that it stalls in the middle of a batch, and the other takes its shards over.
    let workers = [&first, &second];
    for stall in 0..3 {
        let (owner, other) = (workers[stall % 2], workers[(stall + 1) % 2]);
        wait_until("one worker to own every shard", || owner.metric(owned) == 4.0).await;
        for _ in 0..4 {
            let events: Vec<serde_json::Value> = (0..1000)
                .map(|i| json!({"user": format!("u{}", i % USERS), "type": "notification", "payload": {"i": i}}))
                .collect();
            let body = json!({"events": events}).to_string();
            let (status, answer) = http_post(&a.addr, "/v1/publish/batch", ADMIN, &body);
            assert_eq!(status, 200, "{answer}");
            let v: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
            let mut acknowledged = acknowledged.lock().expect("lock");
            for (i, positions) in v["stream_ids"].as_array().expect("positions per event").iter().enumerate() {
                let position = positions[0].as_str().expect("one position").to_owned();
                acknowledged.push((format!("u{}", i % USERS), position));
            }
        }
        owner.signal("STOP");
        wait_until("the other worker to take every shard over", || other.metric(owned) == 4.0).await;
        let seen = acknowledged.lock().expect("lock").len();
        wait_until("more events to flow", || acknowledged.lock().expect("lock").len() > seen + 100).await;
        owner.signal("CONT");
        wait_until("the stalled worker to stand down", || owner.metric(owned) == 0.0).await;
    }
    stop.store(true, Ordering::SeqCst);
    publisher.join().expect("publisher");
    let backwards = cursors.join().expect("cursor watcher");

    let acknowledged = acknowledged.lock().expect("lock").clone();
    for user in (0..USERS).map(|u| format!("u{u}")) {
        let mut expected: Vec<&str> =
            acknowledged.iter().filter(|(u, _)| *u == user).map(|(_, p)| p.as_str()).collect();
        let order = |p: &&str| p.split_once('-').map(|(ms, seq)| (ms.parse::<u64>().ok(), seq.parse::<u64>().ok()));
        expected.sort_by_key(order);
        let stored = || {
            redis
                .cli(&["XRANGE", &format!("events:{user}"), "-", "+"])
                .lines()
                .filter(|l| l.contains('-') && l.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .map(str::to_owned)
                .collect::<Vec<String>>()
        };
        wait_until("every acknowledged event to be stored", || stored().len() >= expected.len()).await;
        assert_eq!(stored(), expected, "{user}: every acknowledged event, once, in order");
    }
    assert!(backwards.is_empty(), "a shard cursor moved back: {backwards:?}");
    assert_eq!((first.metric(owned), second.metric(owned)), (0.0, 4.0), "the second worker took over last");
}
