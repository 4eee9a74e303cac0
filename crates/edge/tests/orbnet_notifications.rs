//! OrbNET notifications (`orbnet` dialect): what the API document's clients do, over real sockets.

use serde_json::json;
use switchboard_testkit::tungstenite::protocol::frame::coding::CloseCode;
use switchboard_testkit::tungstenite::protocol::CloseFrame;
use switchboard_testkit::{Received, TestNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_ack_then_subscribed_notifications_arrive_in_the_documented_shape() {
    let node = TestNode::default().await;
    let mut alice = node.connect_user("/ws/notifications", "alice").await;
    let ack = alice.welcomed().await;
    assert!(ack["sessionId"].as_str().unwrap().starts_with("sess_"));
    assert!(ack["timestamp"].as_str().unwrap().ends_with('Z'));

    alice.send_json(json!({"type": "subscribe", "channels": ["notification", "device_status"]})).await;
    alice.barrier().await;
    let payload =
        json!({"title": "Subscription Renewed", "message": "Renewed for 12 months.", "metadata": {"amount": 99.99}});
    let id = node.publish(json!({"user": "alice", "type": "notification", "payload": payload})).await;
    let ev = alice.json().await;
    assert_eq!(ev["type"], "notification");
    assert_eq!(ev["id"], id);
    assert!(id.starts_with("evt_"));
    assert_eq!(ev["payload"], payload);
    let ts = ev["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-02-08T12:00:00.000Z".len(), "timestamp {ts} is not ISO 8601 with millis");
    assert_eq!(ev.as_object().unwrap().len(), 4, "exactly type, id, timestamp, payload: {ev}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_header_authenticates_like_the_go_and_node_examples() {
    let node = TestNode::default().await;
    let auth = format!("Bearer {}", node.token("alice"));
    let mut c = node.connect("/ws/notifications", &[("authorization", &auth)]).await.expect("connect");
    c.welcomed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_users_own_events_of_subscribed_types_arrive() {
    let node = TestNode::default().await;
    let mut alice = node.connect_user("/ws/notifications", "alice").await;
    alice.welcomed().await;
    alice.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
    alice.barrier().await;
    node.publish(json!({"user": "bob", "type": "notification", "payload": {"n": 1}})).await;
    node.publish(json!({"user": "alice", "type": "device_status", "payload": {"n": 2}})).await;
    node.publish(json!({"user": "alice", "type": "message", "payload": {"n": 3}})).await;
    node.publish(json!({"users": ["carol", "alice"], "type": "notification", "payload": {"n": 4}})).await;
    assert_eq!(alice.json().await["payload"]["n"], 4, "bob's event, unsubscribed and foreign types must not arrive");

    alice.send_json(json!({"type": "unsubscribe", "channels": ["notification"]})).await;
    alice.send_json(json!({"type": "subscribe", "channels": ["device_status"]})).await;
    alice.barrier().await;
    node.publish(json!({"user": "alice", "type": "notification", "payload": {"n": 5}})).await;
    node.publish(json!({"user": "alice", "type": "device_status", "payload": {"n": 6}})).await;
    assert_eq!(alice.json().await["payload"]["n"], 6, "an unsubscribed type must stop arriving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_alert_on_the_broadcast_channel_reaches_every_subscribed_client() {
    let node = TestNode::default().await;
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let mut c = node.connect_user("/ws/notifications", user).await;
        c.welcomed().await;
        let types = if user == "carol" { json!(["notification"]) } else { json!(["server_alert"]) };
        c.send_json(json!({"type": "subscribe", "channels": types})).await;
        c.barrier().await;
        clients.push(c);
    }
    node.publish(json!({"channel": "notifications", "type": "server_alert", "payload": {"severity": "high", "message": "maintenance"}})).await;
    node.publish(json!({"channel": "notifications", "type": "notification", "payload": {"marker": true}})).await;
    for c in &mut clients[..2] {
        let ev = c.json().await;
        assert_eq!((ev["type"].as_str(), ev["payload"]["severity"].as_str()), (Some("server_alert"), Some("high")));
    }
    assert_eq!(clients[2].json().await["payload"]["marker"], true, "carol did not subscribe to server_alert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_channels_and_malformed_frames_get_an_error_and_the_connection_lives() {
    let node = TestNode::default().await;
    let mut alice = node.connect_user("/ws/notifications", "alice").await;
    alice.welcomed().await;
    alice.send_json(json!({"type": "subscribe", "channels": ["threat_detected"]})).await;
    let err = alice.json().await;
    assert_eq!((err["type"].as_str(), err["code"].as_str()), (Some("error"), Some("unknown_channel")));
    alice.send_text("{not json").await;
    assert_eq!(alice.json().await["code"], "invalid_message");
    alice.send_json(json!({"type": "dance"})).await;
    assert_eq!(alice.json().await["code"], "unknown_type");
    alice.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
    alice.barrier().await;
    node.publish(json!({"user": "alice", "type": "notification", "payload": {}})).await;
    assert_eq!(alice.json().await["type"], "notification");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_and_frees_the_subscription() {
    let node = TestNode::default().await;
    let mut alice = node.connect_user("/ws/notifications", "alice").await;
    alice.welcomed().await;
    alice.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
    alice.barrier().await;
    assert!(node.node.has_local_subscribers("u:alice"));
    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    alice.ws.close(Some(bye)).await.expect("close");
    match alice.next().await {
        Received::Closed(1000, _) => {}
        other => panic!("the server must answer the close with its own close frame (1000), got {other:?}"),
    }
    let deadline = tokio::time::Instant::now() + switchboard_testkit::WAIT;
    while node.node.has_local_subscribers("u:alice") {
        assert!(tokio::time::Instant::now() < deadline, "subscription not released after close");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
