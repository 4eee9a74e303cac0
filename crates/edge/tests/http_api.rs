//! The HTTP side: plain GETs on WebSocket paths, token failures, the publish API's errors,
//! operations endpoints.

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_testkit::TestNode;

async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("every answer is JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_gets_and_bad_tokens_get_the_documented_401_json() {
    let node = TestNode::default().await;
    for path in ["/ws/notifications", "/ws/chat", "/ws"] {
        let (status, body) = answer(node.request(Method::GET, path).send().await.unwrap()).await;
        assert_eq!(
            (status, body.clone()),
            (401, json!({"error": "unauthorized", "code": "missing_token", "status": 401})),
            "{path}"
        );
        let (status, body) =
            answer(node.request(Method::GET, &format!("{path}?token=garbage")).send().await.unwrap()).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")));
        let (status, body) =
            answer(node.request(Method::GET, &format!("{path}?token={}", node.token("a"))).send().await.unwrap()).await;
        assert_eq!(status, 426, "{path}: {body}");
        assert!(body["documentation"].is_string());
    }
    let mut claims = serde_json::Map::new();
    claims.insert("exp".into(), json!(1_000_000_000));
    let expired = switchboard_testkit::token_with("a", claims);
    let (status, body) =
        answer(node.request(Method::GET, &format!("/ws/notifications?token={expired}")).send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("expired_token")));
    let err = node.connect(&format!("/ws?token={expired}"), &[]).await.err().expect("expired token must not connect");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_api_requires_the_admin_key_and_valid_events() {
    let node = TestNode::default().await;
    let event = json!({"user": "alice", "type": "notification", "payload": {}});
    let (status, body) = answer(node.request(Method::POST, "/v1/publish").json(&event).send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("missing_token")));
    let (status, _) =
        answer(node.request(Method::POST, "/v1/publish").bearer_auth("wrong").json(&event).send().await.unwrap()).await;
    assert_eq!(status, 401);
    for bad in [
        json!({"type": "x", "payload": {}}),
        json!({"user": "a", "channel": "b", "type": "x", "payload": {}}),
        json!({"user": "a", "type": "", "payload": {}}),
        json!({"user": "a", "type": "x"}),
        json!({"user": "a", "type": "x", "payload": {}, "surprise": 1}),
    ] {
        let (status, body) = answer(node.admin(Method::POST, "/v1/publish").json(&bad).send().await.unwrap()).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalid_request")), "{bad}");
    }
    let (status, body) = answer(node.admin(Method::POST, "/v1/publish").body("{nope").send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_u64()), (400, Some(400)));
    let (status, body) = answer(
        node.admin(Method::POST, "/v1/publish")
            .json(&json!({"id": "my-id-1", "channel": "c", "type": "t", "payload": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["id"].as_str()), (200, Some("my-id-1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_publish_delivers_every_event_in_order() {
    let node = TestNode::default().await;
    let mut c = node.connect_user("/ws", "alice").await;
    c.barrier().await;
    let events: Vec<Value> =
        (0..20).map(|i| json!({"user": "alice", "type": "notification", "payload": {"n": i}})).collect();
    let (status, body) =
        answer(node.admin(Method::POST, "/v1/publish/batch").json(&json!({"events": events})).send().await.unwrap())
            .await;
    assert_eq!(status, 200);
    assert_eq!(body["ids"].as_array().unwrap().len(), 20);
    for i in 0..20 {
        assert_eq!(c.json().await["data"]["n"], i);
    }
    let (status, body) = answer(
        node.admin(Method::POST, "/v1/publish/batch")
            .json(&json!({"events": [{"user": "a", "type": "t", "payload": {}}, {"type": "t", "payload": {}}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("events[1]"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer() {
    let node = TestNode::default().await;
    let (status, body) = answer(node.request(Method::GET, "/healthz").send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = answer(node.request(Method::GET, "/readyz").send().await.unwrap()).await;
    assert_eq!((status, body["broker"].as_str()), (200, Some("memory")));
    let (status, body) = answer(node.request(Method::GET, "/nope").send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let page = node.request(Method::GET, "/playground").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Switchboard playground"));
    let (_, eps) = answer(node.request(Method::GET, "/playground/endpoints").send().await.unwrap()).await;
    assert_eq!(eps["endpoints"].as_array().unwrap().len(), node.node.endpoint_paths().len());
    let mut c = node.connect_user("/ws/notifications", "alice").await;
    c.welcomed().await;
    let metrics = node.metrics().await;
    assert!(metrics.contains("switchboard_connections{endpoint=\"/ws/notifications\"} 1"), "{metrics}");
    assert!(metrics.contains("switchboard_connects_total{endpoint=\"/ws/notifications\",result=\"accepted\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_diagnostic_echo_endpoint_echoes_text_and_binary() {
    let node = TestNode::default().await;
    let mut c = node.connect("/diag/echo", &[]).await.expect("echo connect");
    c.send_text("{\"hello\":1}").await;
    assert_eq!(c.json().await, json!({"hello": 1}));
    futures_util::SinkExt::send(&mut c.ws, switchboard_testkit::tungstenite::Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert!(matches!(c.next().await, switchboard_testkit::Received::Binary(b) if b == [0, 1, 2, 255]));
}
