//! The ocvr API across a cluster: two real `switchboard edge` processes sharing a real Redis.
//! A ticket issued by one edge opens a connection on the other, presence and typing cross
//! edges, a crashed edge's users go offline within the presence lease, and a revocation sent to
//! one edge closes connections on the other.

mod common;

use serde_json::{json, Value};
use switchboard_testkit::process::{http_post, http_request, NodeProcess};
use switchboard_testkit::redis::{RedisCluster, RedisServer};
use switchboard_testkit::{connect_ws, token_with, WsClient, ADMIN};

use common::node_with;

fn edge(redis: &RedisServer) -> NodeProcess {
    node_with("edge", &redis.url(), false, &[("SWITCHBOARD_PRESENCE_LEASE", "3s")])
}

fn ticket(edge: &NodeProcess, user: &str, name: Option<&str>) -> String {
    let mut claims = serde_json::Map::new();
    if let Some(name) = name {
        claims.insert("name".into(), json!(name));
    }
    let (status, body) = http_post(&edge.addr, "/v1/auth/ws-ticket", &token_with(user, claims), "");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    body["data"]["ticket"].as_str().expect("a ticket").to_owned()
}

async fn connect_with(edge: &NodeProcess, ticket: &str) -> WsClient {
    let mut c = connect_ws(&format!("ws://{}/v1/ws?ticket={ticket}", edge.addr), &[]).await.expect("connect");
    c.barrier().await;
    c
}

fn admin(edge: &NodeProcess, method: &str, path: &str) {
    let (status, body) = http_request(&edge.addr, method, path, ADMIN, "");
    assert_eq!(status, 204, "{method} {path}: {body}");
}

async fn subscribe(client: &mut WsClient, channel: &str) {
    client.send_json(json!({"type": "subscribe", "data": {"channel_id": channel}})).await;
    client.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_issued_by_one_edge_opens_one_connection_on_another() {
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis), edge(&redis));
    let t = ticket(&a, "12345", None);
    let mut client = connect_with(&b, &t).await;
    client.send_json(json!({"type": "heartbeat"})).await;
    assert_eq!(client.json().await["type"], "heartbeat_ack");
    for edge in [&a, &b] {
        let mut again = connect_ws(&format!("ws://{}/v1/ws?ticket={t}", edge.addr), &[]).await.expect("upgraded");
        assert_eq!(again.json().await["data"]["code"], "INVALID_TICKET");
        assert_eq!(again.closed().await.0, 4001);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_typing_cross_edges_and_a_crashed_edges_users_go_offline_within_the_lease() {
    let redis = RedisServer::start();
    let (a, mut b) = (edge(&redis), edge(&redis));
    admin(&a, "PUT", "/v1/channels/ch_abc123");
    for user in ["777", "12345"] {
        admin(&a, "PUT", &format!("/v1/channels/ch_abc123/members/{user}"));
    }
    let mut peer = connect_with(&a, &ticket(&a, "777", None)).await;
    subscribe(&mut peer, "ch_abc123").await;
    let mut friend = connect_with(&b, &ticket(&a, "12345", Some("Typer"))).await;
    assert_eq!(peer.json().await, json!({"type": "presence_update", "data": {"user_id": 12345, "presence": "online"}}));
    subscribe(&mut friend, "ch_abc123").await;
    friend.send_json(json!({"type": "typing", "data": {"channel_id": "ch_abc123"}})).await;
    assert_eq!(
        peer.json().await,
        json!({"type": "typing_start", "data": {"channel_id": "ch_abc123", "user_id": 12345, "display_name": "Typer"}})
    );
    let (status, body) = http_request(&b.addr, "GET", "/v1/presence/ch_abc123", ADMIN, "");
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).expect("JSON")["online"].clone()),
        (200, json!(["12345", "777"]))
    );

    // kill -9: nobody tells the cluster; the lease runs out and edge A's sweep reports it.
    b.kill();
    assert_eq!(
        peer.json().await,
        json!({"type": "presence_update", "data": {"user_id": 12345, "presence": "offline"}})
    );
    let (_, body) = http_request(&a.addr, "GET", "/v1/presence/ch_abc123", ADMIN, "");
    assert_eq!(serde_json::from_str::<Value>(&body).expect("JSON")["online"], json!(["777"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_sent_to_one_edge_closes_the_users_connections_on_another() {
    let redis = RedisServer::start();
    let (a, b) = (edge(&redis), edge(&redis));
    let mut client = connect_with(&b, &ticket(&b, "12345", None)).await;
    let (status, body) = http_post(&a.addr, "/v1/sessions/revoke", ADMIN, r#"{"user":"12345","reason":"logout_all"}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(client.json().await, json!({"type": "session_revoked", "data": {"reason": "logout_all"}}));
    assert_eq!(client.closed().await.0, 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_channels_and_presence_work_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let edge = || node_with("edge", &cluster.urls(), true, &[("SWITCHBOARD_PRESENCE_LEASE", "3s")]);
    let (a, b) = (edge(), edge());
    admin(&a, "PUT", "/v1/channels/ch_x");
    for user in ["777", "12345"] {
        admin(&b, "PUT", &format!("/v1/channels/ch_x/members/{user}"));
    }
    let mut peer = connect_with(&b, &ticket(&a, "777", None)).await;
    subscribe(&mut peer, "ch_x").await;
    let friend = connect_with(&a, &ticket(&b, "12345", None)).await;
    assert_eq!(peer.json().await, json!({"type": "presence_update", "data": {"user_id": 12345, "presence": "online"}}));
    friend.close().await;
    assert_eq!(
        peer.json().await,
        json!({"type": "presence_update", "data": {"user_id": 12345, "presence": "offline"}})
    );
}
