//! The veriops API across a cluster: two real `switchboard edge` processes sharing a real Redis
//! (single server, and a Redis Cluster). Events published through one edge reach filtered
//! subscribers on the other, presence crosses edges on the `presence` channel, and a client's
//! publish on one edge reaches a subscriber on the other stamped with its sender.

mod common;

use serde_json::{json, Value};
use switchboard_testkit::process::{http_post, NodeProcess};
use switchboard_testkit::redis::{RedisCluster, RedisServer};
use switchboard_testkit::{connect_ws, token_with, WsClient, ADMIN};

use common::edge;

async fn connect(edge: &NodeProcess, user: &str) -> WsClient {
    let token = token_with(user, serde_json::Map::new());
    let mut c = connect_ws(&format!("ws://{}/realtime?token={token}", edge.addr), &[]).await.expect("connect");
    c.barrier().await;
    c
}

/// Sends a request and expects its ack with status ok.
async fn request(c: &mut WsClient, kind: &str, id: &str, payload: Value) {
    c.send_json(json!({"type": kind, "request_id": id, "payload": payload})).await;
    let ack = c.json().await;
    assert_eq!((ack["type"].as_str(), ack["request_id"].as_str()), (Some("ack"), Some(id)), "{ack}");
    assert_eq!(ack["payload"]["status"], "ok", "{ack}");
}

async fn event(c: &mut WsClient) -> Value {
    let m = c.json().await;
    assert_eq!(m["type"], "event", "{m}");
    m["payload"].clone()
}

async fn across_two_edges(a: &NodeProcess, b: &NodeProcess) {
    let mut alice = connect(a, "alice").await;
    request(&mut alice, "subscribe", "s1", json!({"channel": "project.updated", "filters": {"project_id": "prj_a"}}))
        .await;
    let mut bob = connect(b, "bob").await;
    request(&mut bob, "subscribe", "s2", json!({"channel": "presence"})).await;

    for project in ["prj_b", "prj_a"] {
        let body = json!({"channel": "project.updated", "type": "project.updated", "payload": {"project_id": project}});
        let (status, answer) = http_post(&b.addr, "/v1/publish", ADMIN, &body.to_string());
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(event(&mut alice).await["data"], json!({"project_id": "prj_a"}), "only the matching one");

    let mut carol = connect(a, "carol").await;
    assert_eq!(event(&mut bob).await["data"], json!({"user_id": "carol", "status": "online"}));
    request(&mut carol, "publish", "p1", json!({"channel": "presence", "data": {"status": "away"}})).await;
    let got = event(&mut bob).await;
    assert_eq!((got["sender_id"].clone(), got["data"].clone()), (json!("carol"), json!({"status": "away"})));
    carol.close().await;
    assert_eq!(event(&mut bob).await["data"], json!({"user_id": "carol", "status": "offline"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_presence_and_client_publish_cross_edges_on_redis() {
    let redis = RedisServer::start();
    across_two_edges(&edge(&redis.url(), false), &edge(&redis.url(), false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_presence_and_client_publish_cross_edges_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    across_two_edges(&edge(&cluster.urls(), true), &edge(&cluster.urls(), true)).await;
}
