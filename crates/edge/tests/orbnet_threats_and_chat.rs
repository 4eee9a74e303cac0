//! OrbGuard threat stream (`orbnet` dialect: API keys, server-side filters) and OrbNET chat
//! (client-sent messages reach the other members of the conversation).

use serde_json::json;
use switchboard_testkit::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_stream_accepts_keys_by_header_or_query_and_applies_filters() {
    let node = TestNode::default().await;
    let key = node.api_key("soc-team", 2).await;
    assert!(!node.metrics().await.contains(&key));

    let mut by_header = node.connect("/ws/threats", &[("x-api-key", &key)]).await.expect("connect with X-API-Key");
    let mut by_query = node.connect(&format!("/ws/threats?api_key={key}"), &[]).await.expect("connect with api_key");
    for c in [&mut by_header, &mut by_query] {
        assert_eq!(c.json().await["type"], "connection_ack");
    }
    by_header
        .send_json(json!({"type": "subscribe", "channels": ["threat_detected", "alert"],
                          "filters": {"severity": ["critical", "high"], "categories": ["malware", "phishing", "c2"]}}))
        .await;
    by_header.barrier().await;
    by_query.send_json(json!({"type": "subscribe", "channels": ["threat_detected"]})).await;
    by_query.barrier().await;

    let threats = [
        json!({"indicator": "a.example", "severity": "low", "category": "malware", "score": 20}),
        json!({"indicator": "b.example", "severity": "critical", "category": "spam", "score": 70}),
        json!({"indicator": "c.example", "severity": "high", "category": "c2", "score": 95}),
    ];
    for t in &threats {
        node.publish(json!({"channel": "threats", "type": "threat_detected", "payload": t})).await;
    }
    let got = by_header.json().await;
    assert_eq!(got["payload"]["indicator"], "c.example", "only the high/c2 threat passes the filter");
    for t in &threats {
        assert_eq!(by_query.json().await["payload"], *t, "an unfiltered subscriber gets everything in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threat_stream_rejects_missing_unknown_and_deleted_keys_with_401() {
    let node = TestNode::default().await;
    let status_code = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        (status, resp.json::<serde_json::Value>().await.unwrap()["code"].as_str().unwrap().to_owned())
    };
    let get = |q: &str| node.request(reqwest::Method::GET, &format!("/ws/threats{q}")).send();
    assert_eq!(status_code(get("").await.unwrap()).await, (401, "missing_api_key".into()));
    assert_eq!(status_code(get("?api_key=sbk_nope").await.unwrap()).await, (401, "invalid_api_key".into()));
    let key = node.api_key("temp", 2).await;
    assert_eq!(get(&format!("?api_key={key}")).await.unwrap().status(), 426, "a valid key without Upgrade gets 426");
    let del = node.admin(reqwest::Method::DELETE, "/v1/api-keys/temp").send().await.unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(status_code(get(&format!("?api_key={key}")).await.unwrap()).await, (401, "invalid_api_key".into()));
    let err =
        node.connect(&format!("/ws/threats?api_key={key}"), &[]).await.err().expect("a deleted key must not connect");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_name_is_taken_once_and_keys_are_listed_without_secrets() {
    let node = TestNode::default().await;
    let key = node.api_key("partner", 2).await;
    let body = serde_json::json!({"name": "partner", "endpoints": ["/ws/threats"], "max_connections": 9});
    let again = node.admin(reqwest::Method::POST, "/v1/api-keys").json(&body).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["code"], "api_key_exists");
    assert!(again["message"].as_str().unwrap().contains("DELETE /v1/api-keys/partner"), "{again}");
    // The first key was not replaced: it still connects.
    let mut c = node.connect(&format!("/ws/threats?api_key={key}"), &[]).await.expect("the first key still works");
    assert_eq!(c.json().await["type"], "connection_ack");

    let listed = node.admin(reqwest::Method::GET, "/v1/api-keys").send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let text = listed.text().await.unwrap();
    assert!(!text.contains(&key) && !text.contains("sha256"), "no secret is listed: {text}");
    let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        listed["api_keys"],
        serde_json::json!([{"name": "partner", "endpoints": ["/ws/threats"], "max_connections": 2, "source": "api"}])
    );
    let del = node.admin(reqwest::Method::DELETE, "/v1/api-keys/partner").send().await.unwrap();
    assert_eq!(del.status(), 204);
    let listed: serde_json::Value =
        node.admin(reqwest::Method::GET, "/v1/api-keys").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["api_keys"], serde_json::json!([]));
    node.api_key("partner", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_messages_reach_the_other_members_stamped_with_the_sender() {
    let node = TestNode::default().await;
    for user in ["alice", "bob", "carol"] {
        node.add_member("conversation:c1", user).await;
    }
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol", "mallory"] {
        let mut c = node.connect_user("/ws/chat", user).await;
        c.json().await;
        c.send_json(json!({"type": "subscribe", "channels": ["message", "typing", "read_receipt"]})).await;
        c.barrier().await;
        clients.push(c);
    }
    clients[0].send_json(json!({"type": "message", "payload": {"conversationId": "c1", "text": "hello"}})).await;
    // The sender gets her message back as the confirmation (with its id and time), like the
    // other members.
    for c in &mut clients[0..3] {
        let ev = c.json().await;
        assert_eq!(ev["type"], "message");
        assert_eq!(ev["payload"]["text"], "hello");
        assert_eq!(ev["sender"], "alice");
        assert!(ev["id"].as_str().unwrap().starts_with("evt_"));
    }
    // Mallory is not a member: her message is refused, and she received nothing.
    clients[3].send_json(json!({"type": "message", "payload": {"conversationId": "c1", "text": "spam"}})).await;
    let err = clients[3].json().await;
    assert_eq!((err["type"].as_str(), err["code"].as_str()), (Some("error"), Some("not_member")));
    // Typing is delivered too; a typer never gets her own indicator back.
    clients[1].send_json(json!({"type": "typing", "payload": {"conversationId": "c1"}})).await;
    clients[1].barrier().await;
    let ev = clients[0].json().await;
    assert_eq!((ev["type"].as_str(), ev["sender"].as_str()), (Some("typing"), Some("bob")));
    assert_eq!(clients[2].json().await["type"], "typing");
    clients[1].barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_end_posts_to_a_conversation_and_its_members_get_it_on_every_device() {
    let node = TestNode::default().await;
    for user in ["alice", "bob"] {
        node.add_member("conversation:c9", user).await;
    }
    let chat = |user: &'static str| {
        let node = &node;
        async move {
            let mut c = node.connect_user("/ws/chat", user).await;
            assert_eq!(c.json().await["type"], "connection_ack");
            c.send_json(json!({"type": "subscribe", "channels": ["message"]})).await;
            c.barrier().await;
            c
        }
    };
    let (mut alice_phone, mut alice_laptop, mut bob, mut mallory) =
        (chat("alice").await, chat("alice").await, chat("bob").await, chat("mallory").await);
    // A basic-dialect connection of a member: it gets a channel's events by subscribing to it,
    // never a chat copy on its user stream.
    let mut alice_basic = node.connect_user("/ws", "alice").await;
    alice_basic.barrier().await;
    let id = node
        .publish(json!({"channel": "conversation:c9", "type": "message", "payload": {"text": "from support"}}))
        .await;
    for c in [&mut alice_phone, &mut alice_laptop, &mut bob] {
        let ev = c.json().await;
        assert_eq!((ev["id"].as_str(), ev["payload"]["text"].as_str()), (Some(id.as_str()), Some("from support")));
    }
    // What alice sends from her phone reaches her laptop and bob; the phone gets it as the
    // confirmation.
    alice_phone.send_json(json!({"type": "message", "payload": {"conversationId": "c9", "text": "thanks"}})).await;
    for c in [&mut alice_phone, &mut alice_laptop, &mut bob] {
        let ev = c.json().await;
        assert_eq!((ev["payload"]["text"].as_str(), ev["sender"].as_str()), (Some("thanks"), Some("alice")));
    }
    // Nothing reached the non-member or the basic connection.
    node.publish(json!({"user": "mallory", "type": "message", "payload": {"marker": true}})).await;
    assert_eq!(mallory.json().await["payload"]["marker"], true, "nothing of the conversation came first");
    alice_basic.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_channels_claim_authorizes_sending() {
    let node = TestNode::default().await;
    node.add_member("conversation:c2", "bob").await;
    let mut claims = serde_json::Map::new();
    claims.insert("channels".into(), json!(["conversation:c2"]));
    let token = switchboard_testkit::token_with("dave", claims);
    let mut dave = node.connect(&format!("/ws/chat?token={token}"), &[]).await.unwrap();
    dave.json().await;
    let mut bob = node.connect_user("/ws/chat", "bob").await;
    bob.json().await;
    bob.send_json(json!({"type": "subscribe", "channels": ["message"]})).await;
    bob.barrier().await;
    dave.send_json(json!({"type": "message", "payload": {"conversationId": "c2", "text": "hi bob"}})).await;
    assert_eq!(bob.json().await["sender"], "dave");
}
