//! The veriops endpoint (`/realtime`) over real sockets: every request acknowledged with its
//! `request_id`, events in the document's envelope, field filters per subscription, client
//! publish stamped with the sender, the presence channel, JSON pings, and the document's close
//! codes (4001 authentication, 4002 the 51st subscription, 4008 rate limited, 4009 too large).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_testkit::{test_config, TestNode, WsClient};

const PATH: &str = "/realtime";

async fn connect(node: &TestNode, user: &str) -> WsClient {
    let mut c = node.connect_user(PATH, user).await;
    c.barrier().await;
    c
}

async fn request(c: &mut WsClient, kind: &str, request_id: &str, payload: Value) {
    c.send_json(json!({"type": kind, "request_id": request_id, "sent_at": "2026-03-19T14:30:00Z", "payload": payload}))
        .await;
}

/// The next message, which must be the `ack` of `request_id`; returns its payload.
async fn ack(c: &mut WsClient, request_id: &str) -> Value {
    let mut m = c.json().await;
    assert_eq!(m["type"], "ack", "{m}");
    assert_eq!(m["request_id"], request_id, "{m}");
    let sent_at = m["sent_at"].as_str().unwrap_or_else(|| panic!("an ISO 8601 sent_at: {m}"));
    assert!(sent_at.ends_with('Z') && sent_at.len() == 24, "{sent_at}");
    m["payload"].take()
}

async fn ok(c: &mut WsClient, request_id: &str) {
    let payload = ack(c, request_id).await;
    assert_eq!(payload, json!({"status": "ok"}));
}

/// The error code of the next message, a failed `ack` of `request_id` (`None`: no id).
async fn failed(c: &mut WsClient, request_id: Option<&str>) -> String {
    let m = c.json().await;
    assert_eq!(m["type"], "ack", "{m}");
    assert_eq!(m.get("request_id").and_then(Value::as_str), request_id, "{m}");
    assert_eq!(m["payload"]["status"], "error", "{m}");
    assert!(m["payload"]["error"]["message"].as_str().is_some_and(|s| !s.is_empty()), "{m}");
    m["payload"]["error"]["code"].as_str().expect("a code").to_owned()
}

async fn subscribe(c: &mut WsClient, request_id: &str, channel: &str, filters: Option<Value>) {
    let mut payload = json!({"channel": channel});
    if let Some(f) = filters {
        payload["filters"] = f;
    }
    request(c, "subscribe", request_id, payload).await;
    ok(c, request_id).await;
}

/// A `ping` request answered by its ack (with the server time): everything the server sent
/// before it has arrived.
async fn round_trip(c: &mut WsClient, request_id: &str) {
    c.send_json(json!({"type": "ping", "request_id": request_id})).await;
    let payload = ack(c, request_id).await;
    assert_eq!(payload["status"], "ok");
    assert!(payload["server_time"].as_str().is_some_and(|t| t.ends_with('Z')), "{payload}");
}

async fn publish(node: &TestNode, channel: &str, data: Value) -> String {
    node.publish(json!({"channel": channel, "type": channel, "payload": data})).await
}

/// The next message, which must be an event; returns it whole.
async fn event(c: &mut WsClient) -> Value {
    let m = c.json().await;
    assert_eq!(m["type"], "event", "{m}");
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_acknowledged_and_events_arrive_in_the_documents_envelope() {
    let node = TestNode::default().await;
    let mut c = connect(&node, "alice").await;
    // Step 2 of the document's quick start, as written.
    subscribe(&mut c, "req_001", "project.updated", Some(json!({"project_id": "prj_abc123"}))).await;
    subscribe(&mut c, "req_002", "task.completed", None).await;

    publish(&node, "project.updated", json!({"project_id": "prj_other", "status": "active"})).await;
    let id = publish(&node, "project.updated", json!({"project_id": "prj_abc123", "status": "active"})).await;
    let m = event(&mut c).await;
    assert_eq!(m["id"], id.as_str());
    assert_eq!(
        m["payload"],
        json!({"event_type": "project.updated", "channel": "project.updated",
               "data": {"project_id": "prj_abc123", "status": "active"}})
    );
    let sent_at = m["sent_at"].as_str().expect("sent_at");
    assert!(sent_at.starts_with("20") && sent_at.ends_with('Z'), "{sent_at}");
    publish(&node, "task.completed", json!({"project_id": "prj_x", "task_id": "t1"})).await;
    assert_eq!(event(&mut c).await["payload"]["data"]["task_id"], "t1");
    round_trip(&mut c, "req_003").await;

    // Unsubscribed: nothing more from that channel.
    request(&mut c, "unsubscribe", "req_004", json!({"channel": "task.completed"})).await;
    ok(&mut c, "req_004").await;
    publish(&node, "task.completed", json!({"task_id": "t2"})).await;
    publish(&node, "project.created", json!({"project_id": "prj_new"})).await;
    round_trip(&mut c, "req_005").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_subscriptions_to_one_channel_with_different_filters_are_two_subscriptions() {
    let node = TestNode::default().await;
    let mut c = connect(&node, "alice").await;
    subscribe(&mut c, "a", "project.updated", Some(json!({"project_id": "prj_a"}))).await;
    subscribe(&mut c, "b", "project.updated", Some(json!({"project_id": "prj_b"}))).await;
    for p in ["prj_a", "prj_c", "prj_b"] {
        publish(&node, "project.updated", json!({"project_id": p})).await;
    }
    assert_eq!(event(&mut c).await["payload"]["data"]["project_id"], "prj_a");
    assert_eq!(event(&mut c).await["payload"]["data"]["project_id"], "prj_b");
    round_trip(&mut c, "r1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_requests_get_an_error_ack_with_their_request_id_and_the_connection_lives_on() {
    let node = TestNode::default().await;
    let mut c = connect(&node, "alice").await;
    request(&mut c, "subscribe", "r1", json!({"channel": "payroll.updated"})).await;
    assert_eq!(failed(&mut c, Some("r1")).await, "channel_not_found");
    request(&mut c, "subscribe", "r2", json!({"filters": {}})).await;
    assert_eq!(failed(&mut c, Some("r2")).await, "invalid_request", "no channel");
    request(&mut c, "subscribe", "r3", json!({"channel": "project.updated", "filters": {"a": {"b": 1}}})).await;
    assert_eq!(failed(&mut c, Some("r3")).await, "invalid_request", "a nested filter value");
    request(&mut c, "publish", "r4", json!({"channel": "project.updated", "data": {"status": "hacked"}})).await;
    assert_eq!(failed(&mut c, Some("r4")).await, "forbidden", "clients publish on presence only");
    request(&mut c, "launch", "r5", json!({})).await;
    assert_eq!(failed(&mut c, Some("r5")).await, "unknown_type");
    c.send_text("{not json").await;
    assert_eq!(failed(&mut c, None).await, "invalid_request");
    round_trip(&mut c, "r6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_client_publish_reach_others_stamped_with_the_sender() {
    let node = TestNode::default().await;
    let mut bob = connect(&node, "bob").await;
    subscribe(&mut bob, "s1", "presence", None).await;

    let mut alice = connect(&node, "alice").await;
    let m = event(&mut bob).await;
    assert_eq!(m["payload"]["event_type"], "presence");
    assert_eq!(m["payload"]["channel"], "presence");
    assert_eq!(m["payload"]["data"], json!({"user_id": "alice", "status": "online"}));

    subscribe(&mut alice, "s2", "presence", None).await;
    let data = json!({"status": "away", "user_id": "mallory"});
    request(&mut alice, "publish", "p1", json!({"channel": "presence", "data": data})).await;
    ok(&mut alice, "p1").await;
    let m = event(&mut bob).await;
    assert_eq!(m["payload"]["event_type"], "presence");
    assert_eq!(m["payload"]["sender_id"], "alice", "stamped by the server: {m}");
    assert_eq!(m["payload"]["data"], data, "the data as sent");
    // The sender gets the ack, not its own message back.
    round_trip(&mut alice, "r").await;

    alice.close().await;
    let m = event(&mut bob).await;
    assert_eq!(m["payload"]["data"], json!({"user_id": "alice", "status": "offline"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_51st_subscription_closes_4002_and_a_message_over_64_kb_closes_4009() {
    let node = TestNode::default().await;
    let mut c = connect(&node, "alice").await;
    for i in 0..50 {
        subscribe(&mut c, &format!("s{i}"), "project.updated", Some(json!({"project_id": format!("p{i}")}))).await;
    }
    request(&mut c, "subscribe", "s50", json!({"channel": "task.completed"})).await;
    assert_eq!(failed(&mut c, Some("s50")).await, "subscription_limit");
    assert_eq!(c.closed().await.0, 4002);

    let mut c = connect(&node, "bob").await;
    c.send_text(&format!(r#"{{"type":"ping","request_id":"{}"}}"#, "x".repeat(64 * 1024))).await;
    assert_eq!(c.closed().await.0, 4009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_past_the_rate_closes_4008() {
    let node = TestNode::default().await;
    let mut c = connect(&node, "alice").await;
    for i in 0..15 {
        request(&mut c, "publish", &format!("p{i}"), json!({"channel": "presence", "data": {"n": i}})).await;
    }
    let mut acked = 0;
    loop {
        let m = c.next().await;
        match m {
            switchboard_testkit::Received::Json(m) if m["payload"]["status"] == "ok" => acked += 1,
            switchboard_testkit::Received::Json(m) => {
                assert_eq!(m["payload"]["error"]["code"], "rate_limited", "{m}");
                break;
            }
            other => panic!("an ack before the close: {other:?}"),
        }
    }
    assert_eq!(acked, 10, "10 publishes per second per user pass");
    assert_eq!(c.closed().await.0, 4008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_close_4001_and_an_api_key_is_a_token_too() {
    let node = TestNode::default().await;
    for query in ["", "?token=nope", "?token=a.b.c"] {
        let mut c = node.connect(&format!("{PATH}{query}"), &[]).await.expect("upgraded, then closed");
        assert_eq!(c.closed().await.0, 4001, "{query}");
    }
    let body = json!({"name": "dashboard", "endpoints": [PATH], "max_connections": 2});
    let resp = node.admin(Method::POST, "/v1/api-keys").json(&body).send().await.expect("create key");
    assert_eq!(resp.status(), 201);
    let key = resp.json::<Value>().await.expect("JSON")["key"].as_str().expect("key").to_owned();
    let mut c = node.connect(&format!("{PATH}?token={key}"), &[]).await.expect("connect");
    subscribe(&mut c, "r1", "project.created", None).await;
    let id = publish(&node, "project.created", json!({"project_id": "prj_new"})).await;
    assert_eq!(event(&mut c).await["id"], id.as_str());
    request(&mut c, "publish", "r2", json!({"channel": "presence", "data": {}})).await;
    assert_eq!(failed(&mut c, Some("r2")).await, "forbidden", "a key is no user to stamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_with_a_request_id_and_closes_a_client_that_does_not_answer() {
    let node = TestNode::start(test_config(|c| {
        let e = c.endpoint_mut(PATH).expect("veriops endpoint");
        e.heartbeat.interval = Duration::from_millis(200);
        e.heartbeat.timeout = Duration::from_millis(200);
    }))
    .await;
    // Answering as the document's client does keeps the connection.
    let mut answering = connect(&node, "alice").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let ping = answering.json().await;
        assert_eq!(ping["type"], "ping", "{ping}");
        let id = ping["request_id"].as_str().expect("a request_id").to_owned();
        answering.send_json(json!({"type": "pong", "request_id": id})).await;
        ids.push(id);
    }
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 4, "every ping has its own request_id: {ids:?}");
    // Not answering closes it.
    let mut silent = connect(&node, "bob").await;
    assert_eq!(silent.json().await["type"], "ping");
    assert_eq!(silent.closed().await.0, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let node = TestNode::start(test_config(|c| {
        let e = c.endpoint_mut(PATH).expect("veriops endpoint");
        e.heartbeat.interval = Duration::from_secs(3600);
        e.limits.idle_timeout = Duration::from_millis(300);
    }))
    .await;
    let mut c = connect(&node, "alice").await;
    assert_eq!(c.closed().await.0, 1008);
}
