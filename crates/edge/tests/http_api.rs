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
async fn a_refused_token_says_why_and_every_error_is_json_with_a_message() {
    let node = TestNode::default().await;
    let config = switchboard_testkit::test_config(|c| c.jwt.secret = "another-secret-another-secret-another".into());
    let foreign =
        switchboard_protocol::token::mint_hs256(config.jwt_secret(), "alice", 3600, Default::default()).expect("token");
    let resp = node.request(Method::GET, &format!("/ws?token={foreign}")).send().await.unwrap();
    let why = resp.headers()["www-authenticate"].to_str().expect("ASCII").to_owned();
    assert_eq!(
        why,
        "Bearer error=\"invalid_token\", error_description=\"Token is invalid: the signature does not match this \
         server's key or secret\""
    );
    let (status, body) = answer(resp).await;
    assert_eq!((status, body), (401, json!({"error": "unauthorized", "code": "invalid_token", "status": 401})));
    let resp = node.request(Method::GET, "/ws").send().await.unwrap();
    let why = resp.headers()["www-authenticate"].to_str().expect("ASCII").to_owned();
    assert!(why.contains("send the token as `?token=` or `Authorization: Bearer`"), "{why}");
    // The HTTP API: a wrong method and an unknown route answer JSON with a message too.
    let (status, body) = answer(node.admin(Method::PUT, "/v1/publish").send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (405, Some("method_not_allowed")));
    assert!(body["message"].is_string());
    let (status, body) = answer(node.admin(Method::GET, "/v1/nothing").send().await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    assert!(body["message"].is_string());
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
            .json(&json!({"id": "my-id-1", "channel": "c", "type": "t", "payload": {"n": 1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["id"].as_str()), (200, Some("my-id-1")));
    let (status, body) = post(&node, "/v1/publish", json!({"channel": "c", "type": "t", "payload": 1})).await;
    assert_eq!((status, body["code"].as_str()), (422, Some("unroutable")));
    assert_eq!(body["message"], "`payload` must be a JSON object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_endpoint_would_deliver_is_refused_with_what_is_allowed() {
    // The orbnet and basic endpoints only (the ocvr and brl ones take any channel and type).
    let node = TestNode::start(switchboard_testkit::test_config(|c| {
        c.endpoints.retain(|e| !["/v1/ws", "/api/v2/realtime"].contains(&e.path.as_str()))
    }))
    .await;
    let (status, body) =
        post(&node, "/v1/publish", json!({"channel": "billing", "type": "status_update", "payload": {}})).await;
    assert_eq!(
        (status, body["error"].as_str(), body["code"].as_str()),
        (422, Some("unprocessable"), Some("unroutable"))
    );
    let message = body["message"].as_str().expect("message");
    assert!(message.starts_with("no endpoint delivers `status_update` events on channel `billing`"), "{message}");
    assert!(message.contains("/ws: channels conversation:*, notifications, status:*, status;"), "{message}");
    assert!(message.contains("notifications (broadcast)"), "{message}");
    let (status, body) =
        post(&node, "/v1/publish", json!({"user": "alice", "type": "invoice_paid", "payload": {}})).await;
    assert_eq!(status, 422);
    let message = body["message"].as_str().expect("message");
    assert!(message.starts_with("no endpoint delivers `invoice_paid` events to users"), "{message}");
    assert!(message.contains("/ws/notifications: types notification, subscription_update"), "{message}");
    // In a batch the refused event is named; nothing of the batch is published.
    let good = json!({"channel": "status:eu", "type": "status_update", "payload": {}});
    let bad = json!({"channel": "status:eu", "type": "message", "payload": {}});
    let (status, body) = post(&node, "/v1/publish/batch", json!({"events": [good, bad]})).await;
    assert_eq!(status, 422);
    assert!(
        body["message"].as_str().expect("message").starts_with("events[1]: no endpoint delivers `message`"),
        "{body}"
    );
    let (status, _) =
        post(&node, "/v1/publish", json!({"channel": "status:eu", "type": "status_update", "payload": {}})).await;
    assert_eq!(status, 200, "what an endpoint carries is accepted, subscribers or not");
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
async fn a_batch_holds_one_to_a_thousand_events_and_a_refused_one_publishes_nothing() {
    let node = TestNode::default().await;
    let mut c = node.connect_user("/ws", "alice").await;
    c.barrier().await;
    let batch = |n: usize, first: usize| {
        let events: Vec<Value> =
            (first..first + n).map(|i| json!({"user": "alice", "type": "notification", "payload": {"n": i}})).collect();
        node.admin(Method::POST, "/v1/publish/batch").json(&json!({"events": events})).send()
    };
    let (status, body) = answer(batch(1001, 0).await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    assert_eq!(body["message"], "`events` must hold 1 to 1000 events");
    let (status, _) = answer(batch(0, 0).await.unwrap()).await;
    assert_eq!(status, 400, "an empty batch is refused too");
    let (status, body) = answer(batch(1000, 5000).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ids"].as_array().expect("ids").len(), 1000);
    // Nothing of the refused batch went out: the first event the client sees is the 5000th.
    assert_eq!(c.json().await["data"]["n"], 5000);
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

async fn post(node: &TestNode, path: &str, body: Value) -> (u16, Value) {
    answer(node.admin(Method::POST, path).json(&body).send().await.expect("request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_retried_with_the_same_id_answers_the_first_answer_and_delivers_once() {
    let node = TestNode::default().await;
    let mut c = node.connect_user("/ws", "alice").await;
    c.barrier().await;
    let event = json!({"id": "order-42-shipped", "user": "alice", "type": "notification", "payload": {"n": 1}});
    let (status, first) = post(&node, "/v1/publish", event.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["id"], "order-42-shipped");
    assert!(first["stream_ids"][0].is_string(), "a persisted event: {first}");
    assert_eq!(first.get("duplicate"), None);
    let (status, again) = post(&node, "/v1/publish", event).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!((&again["id"], &again["stream_ids"]), (&first["id"], &first["stream_ids"]), "the first answer");
    // Delivered once: the next thing after it is the marker.
    node.publish(json!({"user": "alice", "type": "notification", "payload": {"n": "marker"}})).await;
    assert_eq!(c.json().await["data"]["n"], 1);
    assert_eq!(c.json().await["data"]["n"], "marker");
    // Ids are per event: another id publishes.
    let (_, other) =
        post(&node, "/v1/publish", json!({"id": "order-43", "channel": "status", "type": "t", "payload": {}})).await;
    assert_eq!(other.get("duplicate"), None, "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_retried_in_part_publishes_only_the_new_events() {
    let node = TestNode::default().await;
    let mut c = node.connect_user("/ws", "alice").await;
    c.barrier().await;
    let ev = |id: &str, n: u32| json!({"id": id, "user": "alice", "type": "notification", "payload": {"n": n}});
    let (status, first) = post(&node, "/v1/publish/batch", json!({"events": [ev("b1", 1), ev("b2", 2)]})).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first.get("duplicates"), None);
    // A retry after a timeout carries the same two and a new one, and an unkeyed event.
    let unkeyed = json!({"user": "alice", "type": "notification", "payload": {"n": 4}});
    let (status, retry) =
        post(&node, "/v1/publish/batch", json!({"events": [ev("b1", 1), ev("b2", 2), ev("b3", 3), unkeyed]})).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["duplicates"], json!([0, 1]));
    let head = |v: &Value, key: &str| v[key].as_array().expect(key)[..2].to_vec();
    assert_eq!(head(&retry, "ids"), head(&first, "ids"));
    assert_eq!(head(&retry, "stream_ids"), head(&first, "stream_ids"), "the first answers, in place");
    assert!(retry["stream_ids"][2][0].is_string() && retry["stream_ids"][3][0].is_string());
    for n in 1..=4 {
        assert_eq!(c.json().await["data"]["n"], n, "each event once, in order");
    }
    c.barrier().await;
    // One id twice in one batch is a mistake, named by index; nothing is published.
    let (status, body) = post(&node, "/v1/publish/batch", json!({"events": [ev("b9", 9), ev("b9", 9)]})).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], "events[1]: id `b9` repeats events[0]");
    let (status, _) = post(&node, "/v1/publish", ev("b9", 9)).await;
    assert_eq!(status, 200, "the refused batch claimed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_errors_name_the_event_not_a_json_column() {
    let node = TestNode::default().await;
    let good = json!({"user": "a", "type": "t", "payload": {}});
    let (status, body) = post(
        &node,
        "/v1/publish/batch",
        json!({"events": [good, {"user": "a", "type": "t", "payload": {}, "colour": 1}]}),
    )
    .await;
    assert_eq!(status, 400);
    let message = body["message"].as_str().expect("message");
    assert!(message.starts_with("events[1]: unknown field `colour`"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_mints_tokens_only_on_development_credentials() {
    let node = TestNode::default().await;
    let resp =
        node.request(Method::POST, "/playground/token").json(&json!({"sub": "alice"})).send().await.expect("post");
    let (status, body) = answer(resp).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("not_dev_mode")), "{body}");

    let dev = TestNode::start(switchboard_testkit::test_config(|c| {
        c.jwt.secret = String::new();
        c.admin_key = String::new();
    }))
    .await;
    let resp =
        dev.request(Method::POST, "/playground/token").json(&json!({"sub": "alice"})).send().await.expect("post");
    let (status, body) = answer(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["admin_key"], switchboard_protocol::token::DEV_ADMIN_KEY);
    let token = body["token"].as_str().expect("a token");
    let mut c = dev.connect(&format!("/realtime?token={token}"), &[]).await.expect("connect");
    c.send_json(json!({"type": "ping", "request_id": "r1"})).await;
    assert_eq!(c.json().await["payload"]["status"], "ok", "the token works");
    let resp = dev.request(Method::POST, "/playground/token").json(&json!({"sub": ""})).send().await.expect("post");
    assert_eq!(answer(resp).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_bearer_token() {
    let node = TestNode::start(switchboard_testkit::test_config(|c| c.metrics_token = "scrape-secret".into())).await;
    for given in [None, Some("wrong")] {
        let mut req = node.request(Method::GET, "/metrics");
        if let Some(t) = given {
            req = req.bearer_auth(t);
        }
        let (status, body) = answer(req.send().await.expect("get")).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "{given:?}: {body}");
    }
    let resp = node.request(Method::GET, "/metrics").bearer_auth("scrape-secret").send().await.expect("get");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.expect("text").contains("switchboard_connections"));
    // Without a token configured (every other test), /metrics is open.
    let open = TestNode::default().await;
    assert_eq!(open.request(Method::GET, "/metrics").send().await.expect("get").status(), 200);
}
