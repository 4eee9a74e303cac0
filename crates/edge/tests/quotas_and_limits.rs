//! Connection quotas and message rate limits on one node (the cluster-wide behaviour on Redis
//! is tested with two edge processes in the CLI crate).

use serde_json::json;
use switchboard_testkit::{Received, TestNode, WsClient, WAIT};

async fn acked(node: &TestNode, path: &str, user: &str) -> WsClient {
    let mut c = node.connect_user(path, user).await;
    if path == "/ws/notifications" {
        c.welcomed().await;
    } else {
        assert_eq!(c.json().await["type"], "connection_ack");
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_notifications_connection_is_closed_with_4008_and_the_others_keep_receiving() {
    let node = TestNode::default().await;
    let mut five = Vec::new();
    for _ in 0..5 {
        let mut c = acked(&node, "/ws/notifications", "alice").await;
        c.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
        c.barrier().await;
        five.push(c);
    }
    let mut sixth = node.connect_user("/ws/notifications", "alice").await;
    assert_eq!(sixth.closed().await, (4008, "Connection Limit Reached".to_string()));
    // Another user is not affected.
    acked(&node, "/ws/notifications", "bob").await;

    node.publish(json!({"user": "alice", "type": "notification", "payload": {"n": 1}})).await;
    for c in &mut five {
        assert_eq!(c.json().await["payload"]["n"], 1);
    }
    // Closing one frees its slot without waiting for any lease to expire.
    five.pop().expect("one").close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut c = node.connect_user("/ws/notifications", "alice").await;
        match c.next().await {
            Received::Json(v) if v["type"] == "connection_ack" => break,
            Received::Closed(4008, _) => assert!(tokio::time::Instant::now() < deadline, "slot never freed"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_connections_per_user_across_endpoints_and_two_per_api_key() {
    let node = TestNode::default().await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(acked(&node, "/ws/notifications", "carol").await);
    }
    for _ in 0..3 {
        held.push(acked(&node, "/ws/chat", "carol").await);
    }
    for _ in 0..2 {
        let mut c = node.connect_user("/ws", "carol").await;
        c.barrier().await;
        held.push(c);
    }
    let mut eleventh = node.connect_user("/ws", "carol").await;
    assert_eq!(eleventh.closed().await.0, 4008, "the account-wide limit is 10");

    let key = node.api_key("team", 2).await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let mut c = node.connect(&format!("/ws/threats?api_key={key}"), &[]).await.unwrap();
        assert_eq!(c.json().await["type"], "connection_ack");
        keys.push(c);
    }
    let mut third = node.connect(&format!("/ws/threats?api_key={key}"), &[]).await.unwrap();
    assert_eq!(third.closed().await.0, 4008, "an API key allows its max_connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flood_is_closed_with_4029_and_the_wait_in_the_reason() {
    let node = TestNode::default().await;
    let mut c = acked(&node, "/ws/notifications", "alice").await;
    for _ in 0..200 {
        c.send_json(json!({"type": "ping"})).await;
    }
    let (code, reason) = c.closed().await;
    assert_eq!(code, 4029);
    assert_eq!(reason, "Rate limited: retry in 1 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_closes_with_its_own_codes_where_it_maps_them() {
    let node = TestNode::start(switchboard_testkit::test_config(|c| {
        let e = c.endpoint_mut("/ws/chat").expect("the chat endpoint");
        e.close_codes.insert(switchboard_protocol::CloseReason::RateLimited, 4429);
        e.close_codes.insert(switchboard_protocol::CloseReason::ConnectionLimit, 4409);
    }))
    .await;
    let mut c = acked(&node, "/ws/chat", "alice").await;
    for _ in 0..200 {
        c.send_json(json!({"type": "ping"})).await;
    }
    assert_eq!(c.closed().await, (4429, "Rate limited: retry in 1 s".to_owned()), "the endpoint's code, same reason");
    let series = "switchboard_disconnects_total{by=\"server\",code=\"4429\",endpoint=\"/ws/chat\"}";
    node.await_metric(series, 1.0).await;
    // Another reason, another endpoint: chat allows 3 per user; the fourth gets the mapped code,
    // while /ws/notifications keeps its own 4008.
    let mut chat = Vec::new();
    for _ in 0..3 {
        chat.push(acked(&node, "/ws/chat", "bob").await);
    }
    let mut fourth = node.connect_user("/ws/chat", "bob").await;
    assert_eq!(fourth.closed().await.0, 4409);
    let mut notifications = Vec::new();
    for _ in 0..5 {
        notifications.push(acked(&node, "/ws/notifications", "carol").await);
    }
    let mut sixth = node.connect_user("/ws/notifications", "carol").await;
    assert_eq!(sixth.closed().await.0, 4008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_throttled_and_client_publish_is_rate_limited_per_user() {
    let node = TestNode::start(switchboard_testkit::test_config(|c| {
        for e in c.endpoints.iter_mut().filter(|e| e.path == "/ws/chat") {
            e.publish.rate_per_user = 2;
            e.publish.typing_interval = std::time::Duration::from_secs(60);
        }
    }))
    .await;
    node.add_member("conversation:t1", "alice").await;
    node.add_member("conversation:t1", "bob").await;
    let mut alice = acked(&node, "/ws/chat", "alice").await;
    let mut bob = acked(&node, "/ws/chat", "bob").await;
    bob.send_json(json!({"type": "subscribe", "channels": ["message", "typing"]})).await;
    bob.barrier().await;

    for _ in 0..3 {
        alice.send_json(json!({"type": "typing", "payload": {"conversationId": "t1"}})).await;
    }
    alice.barrier().await;
    let window_start = std::time::Instant::now();
    alice.send_json(json!({"type": "message", "payload": {"conversationId": "t1", "text": "after typing"}})).await;
    assert_eq!(bob.json().await["type"], "typing");
    assert_eq!(bob.json().await["payload"]["text"], "after typing", "only one typing indicator per interval");

    let mut limited = 0;
    // 10 back-to-back messages: over the 2/s per-user limit, under the per-connection burst.
    for i in 0..10 {
        alice.send_json(json!({"type": "message", "payload": {"conversationId": "t1", "n": i}})).await;
    }
    alice
        .barrier_allowing_messages(|m| {
            assert_eq!(m["code"], "rate_limited", "{m}");
            limited += 1;
        })
        .await;
    // The limit counts in windows of one second from the first message ("after typing"); a
    // slow machine may have opened more windows meanwhile, each allowing two.
    let windows = window_start.elapsed().as_secs() + 1;
    let delivered = 10 - limited;
    if windows == 1 {
        assert_eq!(delivered, 1, "the second message of the second is the last one allowed");
    }
    assert!(delivered < 2 * windows, "{delivered} delivered in {windows} windows");
    // Each message either reached bob or was refused to alice: none lost, none doubled.
    for _ in 0..delivered {
        assert!(bob.json().await["payload"]["n"].is_u64());
    }
    bob.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_unsubscribed_connections_are_closed_after_their_timeouts() {
    let node = TestNode::start(switchboard_testkit::test_config(|c| {
        for e in &mut c.endpoints {
            if e.path == "/ws/notifications" {
                e.limits.unsubscribed_timeout = std::time::Duration::from_millis(500);
            }
            if e.path == "/ws" {
                e.limits.idle_timeout = std::time::Duration::from_millis(500);
            }
        }
    }))
    .await;
    let mut never_subscribes = acked(&node, "/ws/notifications", "alice").await;
    let mut subscribes = acked(&node, "/ws/notifications", "bob").await;
    subscribes.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
    subscribes.barrier().await;
    let mut silent = node.connect_user("/ws", "carol").await;
    assert_eq!(never_subscribes.closed().await, (1008, "No subscription".to_string()));
    assert_eq!(silent.closed().await, (1008, "Idle timeout".to_string()));
    subscribes.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_slots_are_renewed_in_rounds_that_the_metrics_time() {
    // A 3 s lease: a renewal round every second.
    let node =
        TestNode::start(switchboard_testkit::test_config(|c| c.quota_lease = std::time::Duration::from_secs(3))).await;
    let _held = acked(&node, "/ws/notifications", "dora").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = node.metrics().await;
        let rounds = metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_quota_renewal_seconds_count "))
            .map(|n| n.trim().parse::<u64>().expect("a count"))
            .expect("the renewal histogram is exported from the start");
        if rounds > 0 {
            let failed =
                metrics.lines().find_map(|l| l.strip_prefix(r#"switchboard_broker_errors_total{op="quota_renew"} "#));
            assert!(failed.is_none_or(|n| n.trim() == "0"), "no renewal failed: {metrics}");
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no renewal round within {WAIT:?}: {metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
