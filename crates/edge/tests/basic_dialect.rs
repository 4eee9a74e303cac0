//! The generic JWT WebSocket service (`basic` dialect) at `/ws`: subscribe/unsubscribe, ping/pong, the
//! three event types, the four error codes.

use serde_json::json;
use switchboard_testkit::TestNode;

async fn connected(node: &TestNode, user: &str) -> switchboard_testkit::WsClient {
    node.connect_user("/ws", user).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_and_subscribed_channels_deliver_all_three_event_types() {
    let node = TestNode::default().await;
    node.add_member("conversation:conv-123", "alice").await;
    let mut alice = connected(&node, "alice").await;
    alice.send_json(json!({"type": "ping", "data": {}})).await;
    assert_eq!(alice.json().await, json!({"type": "pong", "data": {}}));

    alice.send_json(json!({"type": "subscribe", "data": {"channel": "conversation:conv-123"}})).await;
    alice.send_json(json!({"type": "subscribe", "data": {"channel": "status"}})).await;
    alice.barrier().await;
    let chat = json!({"conversation_id": "conv-123", "sender_id": "user-456", "content": "Hello there!"});
    node.publish(json!({"channel": "conversation:conv-123", "type": "chat_message", "payload": chat})).await;
    let status = json!({"entity_type": "task", "entity_id": "task-789", "status": "completed"});
    node.publish(json!({"channel": "status", "type": "status_update", "payload": status})).await;
    let note = json!({"message": "New comment on your post", "level": "info"});
    node.publish(json!({"user": "alice", "type": "notification", "payload": note})).await;

    let ev = alice.json().await;
    assert_eq!(
        (ev["type"].clone(), ev["data"].clone(), ev["channel"].clone()),
        (json!("chat_message"), chat, json!("conversation:conv-123"))
    );
    let ev = alice.json().await;
    assert_eq!((ev["type"].clone(), ev["data"].clone()), (json!("status_update"), status));
    let ev = alice.json().await;
    assert_eq!((ev["type"].clone(), ev["data"].clone()), (json!("notification"), note));
    assert!(ev["id"].as_str().unwrap().starts_with("evt_"));

    alice.send_json(json!({"type": "unsubscribe", "data": {"channel": "status"}})).await;
    alice.barrier().await;
    node.publish(json!({"channel": "status", "type": "status_update", "payload": {"n": 1}})).await;
    node.publish(json!({"channel": "conversation:conv-123", "type": "chat_message", "payload": {"n": 2}})).await;
    assert_eq!(alice.json().await["data"]["n"], 2, "unsubscribed channel must stop delivering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_invalid_request_and_the_connection_lives() {
    let node = TestNode::default().await;
    let mut c = connected(&node, "alice").await;
    for bad in [
        "not json",
        "{\"type\":\"subscribe\"}",
        "{\"type\":\"subscribe\",\"data\":{\"channel\":7}}",
        "{\"type\":\"fly\"}",
        "[]",
    ] {
        c.send_text(bad).await;
        let err = c.json().await;
        assert_eq!(err["type"], "error", "{bad}");
        assert_eq!(err["data"]["code"], "invalid_request", "{bad}");
        assert!(err["data"]["message"].as_str().is_some());
    }
    c.send_json(json!({"type": "ping", "data": {}})).await;
    assert_eq!(c.json().await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_channels_fail_and_member_only_channels_need_membership() {
    let node = TestNode::default().await;
    let mut c = connected(&node, "mallory").await;
    c.send_json(json!({"type": "subscribe", "data": {"channel": "secret-stuff"}})).await;
    assert_eq!(c.json().await["data"]["code"], "subscription_failed");
    c.send_json(json!({"type": "subscribe", "data": {"channel": "conversation:conv-123"}})).await;
    assert_eq!(c.json().await["data"]["code"], "unauthorized");
    node.publish(json!({"channel": "conversation:conv-123", "type": "chat_message", "payload": {"leak": true}})).await;
    c.send_json(json!({"type": "ping", "data": {}})).await;
    assert_eq!(c.json().await["type"], "pong", "nothing from a refused subscription may arrive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_are_capped() {
    let node = TestNode::start(switchboard_testkit::test_config(|c| {
        c.endpoints.iter_mut().filter(|e| e.path == "/ws").for_each(|e| e.limits.max_subscriptions = 2);
    }))
    .await;
    let mut c = connected(&node, "alice").await;
    for ch in ["status:a", "status:b", "status:c"] {
        c.send_json(json!({"type": "subscribe", "data": {"channel": ch}})).await;
    }
    assert_eq!(c.json().await["data"]["code"], "subscription_failed");
    c.barrier().await;
}
