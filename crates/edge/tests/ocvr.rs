//! The ocvr API (seed 001) over real sockets, frame by frame: connect tickets, heartbeats,
//! channels that must exist and membership, chat events, typing, presence, notifications and
//! session revocation.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Map, Value};
use switchboard_testkit::{test_config, token_with, Received, TestNode, WsClient, WAIT};

const PATH: &str = "/v1/ws";

/// Trades `token` for a ticket as the seed's client does; returns the ticket.
async fn ticket_for(node: &TestNode, token: &str) -> String {
    let resp = node.request(Method::POST, "/v1/auth/ws-ticket").bearer_auth(token).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    let ticket = body["data"]["ticket"].as_str().unwrap_or_else(|| panic!("no ticket in {body}")).to_owned();
    assert!(ticket.starts_with("wst_"), "{ticket}");
    ticket
}

fn token(user: &str, name: Option<&str>) -> String {
    let mut claims = Map::new();
    if let Some(name) = name {
        claims.insert("name".into(), json!(name));
    }
    token_with(user, claims)
}

/// Connects `user` with a fresh ticket; the connection is ready when this returns.
async fn connect(node: &TestNode, user: &str, name: Option<&str>) -> WsClient {
    let ticket = ticket_for(node, &token(user, name)).await;
    let mut client = node.connect(&format!("{PATH}?ticket={ticket}"), &[]).await.expect("connect");
    client.barrier().await;
    client
}

async fn admin(node: &TestNode, method: Method, path: &str) -> u16 {
    node.admin(method, path).send().await.expect("admin request").status().as_u16()
}

/// Creates `channel` with `members`.
async fn channel(node: &TestNode, channel: &str, members: &[&str]) {
    assert_eq!(admin(node, Method::PUT, &format!("/v1/channels/{channel}")).await, 204);
    for m in members {
        node.add_member(channel, m).await;
    }
}

async fn subscribe(client: &mut WsClient, channel: &str) {
    client.send_json(json!({"type": "subscribe", "data": {"channel_id": channel}})).await;
    // ocvr confirms nothing: a subscribe that failed answers with an error before the pong.
    client.barrier().await;
}

async fn expect_error(client: &mut WsClient, code: &str) {
    let error = client.json().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["data"]["code"], code, "{error}");
    assert!(error["data"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_flow_ticket_connect_heartbeat() {
    let node = TestNode::default().await;
    let mut client = connect(&node, "12345", None).await;
    client.send_json(json!({"type": "heartbeat"})).await;
    let ack = client.json().await;
    assert_eq!(ack["type"], "heartbeat_ack", "{ack}");
    let server_time = ack["data"]["server_time"].as_u64().expect("unix seconds");
    assert!(server_time.abs_diff(now_secs()) <= 5, "{ack}");
    assert_eq!(ack["data"].as_object().map(Map::len), Some(1), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_opens_one_connection_and_a_bad_one_gets_invalid_ticket_and_4001() {
    let node = TestNode::default().await;
    let ticket = ticket_for(&node, &token("12345", None)).await;
    // A plain GET (a link preview, a prefetch) does not spend it.
    let plain = node.request(Method::GET, &format!("{PATH}?ticket={ticket}")).send().await.expect("GET");
    assert_eq!(plain.status(), 426);
    let mut first = node.connect(&format!("{PATH}?ticket={ticket}"), &[]).await.expect("connect");
    first.barrier().await;
    for bad in [ticket.as_str(), "wst_unknown", ""] {
        let mut again = node.connect(&format!("{PATH}?ticket={bad}"), &[]).await.expect("upgraded");
        let error = again.json().await;
        assert_eq!(error["type"], "error");
        assert_eq!(error["data"]["code"], "INVALID_TICKET", "{error}");
        if !bad.is_empty() {
            assert_eq!(error["data"]["message"], "WebSocket ticket is invalid or expired");
        }
        assert_eq!(again.closed().await.0, 4001);
    }
    first.barrier().await;
    assert!(node.metric("switchboard_connects_total{endpoint=\"/v1/ws\",result=\"invalid_ticket\"}").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_expires_after_its_lifetime() {
    let clock = std::sync::Arc::new(switchboard_broker::clock::OffsetClock::default());
    let node = TestNode::start_with_clock(test_config(|_| {}), clock.clone()).await;
    let ticket = ticket_for(&node, &token("12345", None)).await;
    clock.advance(30_001);
    let mut late = node.connect(&format!("{PATH}?ticket={ticket}"), &[]).await.expect("upgraded");
    expect_error(&mut late, "INVALID_TICKET").await;
    assert_eq!(late.closed().await.0, 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_need_a_valid_token_and_endpoints_may_refuse_before_the_upgrade() {
    let node = TestNode::start(test_config(|c| {
        c.endpoint_mut(PATH).expect("ocvr endpoint").auth.refusal = switchboard_edge::config::RefusalStyle::Http401;
    }))
    .await;
    let ask = |bearer: Option<&str>| {
        let mut req = node.request(Method::POST, "/v1/auth/ws-ticket");
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move {
            let resp = req.send().await.expect("request");
            (resp.status().as_u16(), resp.json::<Value>().await.expect("JSON"))
        }
    };
    assert_eq!(ask(None).await, (401, json!({"error": "unauthorized", "code": "missing_token", "status": 401})));
    assert_eq!(ask(Some("garbage")).await.1["code"], "invalid_token");
    let refused = node.connect(&format!("{PATH}?ticket=wst_unknown"), &[]).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(resp)) = refused else { panic!("not refused with HTTP") };
    assert_eq!(resp.status(), 401);
    let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).expect("JSON body");
    assert_eq!(body, json!({"error": "unauthorized", "code": "invalid_ticket", "status": 401}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_needs_an_existing_channel_and_membership() {
    let node = TestNode::default().await;
    let mut client = connect(&node, "12345", None).await;
    client.send_json(json!({"type": "subscribe", "data": {"channel_id": "ch_abc123"}})).await;
    expect_error(&mut client, "CHANNEL_NOT_FOUND").await;
    channel(&node, "ch_abc123", &[]).await;
    client.send_json(json!({"type": "subscribe", "data": {"channel_id": "ch_abc123"}})).await;
    expect_error(&mut client, "NOT_MEMBER").await;
    node.add_member("ch_abc123", "12345").await;
    subscribe(&mut client, "ch_abc123").await;
    client.send_json(json!({"type": "subscribe", "data": {}})).await;
    let error = client.json().await;
    assert_eq!(error["type"], "error", "a malformed subscribe is answered, not dropped: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_events_and_notifications_arrive_in_the_documented_shape() {
    let node = TestNode::default().await;
    channel(&node, "ch_abc123", &["12345"]).await;
    let mut client = connect(&node, "12345", None).await;
    subscribe(&mut client, "ch_abc123").await;
    let create = json!({
        "id": "msg_xyz789", "channel_id": "ch_abc123",
        "author": {"id": 12345, "display_name": "Sender"},
        "content": "Hello world!", "created_at": 1_703_523_600, "attachments": []
    });
    let update = json!({"id": "msg_xyz789", "channel_id": "ch_abc123", "content": "Hello world! (edited)", "edited_at": 1_703_523_700});
    let delete = json!({"id": "msg_xyz789", "channel_id": "ch_abc123"});
    for (kind, payload) in [("message_create", &create), ("message_update", &update), ("message_delete", &delete)] {
        node.publish(json!({"channel": "ch_abc123", "type": kind, "payload": payload})).await;
        assert_eq!(client.json().await, json!({"type": kind, "data": payload}));
    }
    let notification = json!({
        "id": "notif_abc", "type": "friend_request", "title": "New Friend Request",
        "body": "User123 wants to be your friend", "created_at": 1_703_523_600, "data": {"from_user_id": 456}
    });
    node.publish(json!({"user": "12345", "type": "notification", "payload": notification})).await;
    assert_eq!(client.json().await, json!({"type": "notification", "data": notification}));
    client.send_json(json!({"type": "unsubscribe", "data": {"channel_id": "ch_abc123"}})).await;
    client.barrier().await;
    node.publish(json!({"channel": "ch_abc123", "type": "message_delete", "payload": delete})).await;
    node.publish(json!({"user": "12345", "type": "notification", "payload": {"id": "notif_2"}})).await;
    assert_eq!(client.json().await["data"]["id"], "notif_2", "nothing of the channel after unsubscribing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_reaches_the_other_subscribers_throttled_and_never_the_typer() {
    let node = TestNode::default().await;
    channel(&node, "ch_abc123", &["12345", "777"]).await;
    let mut reader = connect(&node, "777", None).await;
    let mut typer = connect(&node, "12345", Some("TyperName")).await;
    typer.send_json(json!({"type": "typing", "data": {"channel_id": "ch_abc123"}})).await;
    expect_error(&mut typer, "NOT_SUBSCRIBED").await;
    subscribe(&mut reader, "ch_abc123").await;
    subscribe(&mut typer, "ch_abc123").await;
    for _ in 0..3 {
        typer.send_json(json!({"type": "typing", "data": {"channel_id": "ch_abc123"}})).await;
    }
    typer.barrier().await;
    let typing = reader.json().await;
    assert_eq!(
        typing,
        json!({"type": "typing_start", "data": {"channel_id": "ch_abc123", "user_id": 12345, "display_name": "TyperName"}})
    );
    // The two extra indicators within the throttle interval were dropped: the next thing the
    // reader sees is a message published after them.
    node.publish(json!({"channel": "ch_abc123", "type": "message_create", "payload": {"id": "m1"}})).await;
    assert_eq!(reader.json().await["type"], "message_create");
    assert_eq!(typer.json().await["type"], "message_create", "the typer saw no typing_start of their own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_or_a_deleted_channel_ends_the_subscription() {
    let node = TestNode::default().await;
    channel(&node, "ch_a", &["12345"]).await;
    channel(&node, "ch_b", &["12345"]).await;
    let mut client = connect(&node, "12345", None).await;
    subscribe(&mut client, "ch_a").await;
    subscribe(&mut client, "ch_b").await;
    let say =
        |ch: &'static str, n: u32| node.publish(json!({"channel": ch, "type": "message_create", "payload": {"n": n}}));
    assert_eq!(admin(&node, Method::DELETE, "/v1/channels/ch_a/members/12345").await, 204);
    assert_eq!(admin(&node, Method::DELETE, "/v1/channels/ch_a/members/12345").await, 404, "no longer a member");
    assert_eq!(admin(&node, Method::DELETE, "/v1/channels/ch_b").await, 204);
    assert_eq!(admin(&node, Method::DELETE, "/v1/channels/ch_b").await, 404);
    node.await_no_local_subscribers("c:ch_a").await;
    node.await_no_local_subscribers("c:ch_b").await;
    say("ch_a", 1).await;
    say("ch_b", 2).await;
    node.publish(json!({"user": "12345", "type": "notification", "payload": {"id": "marker"}})).await;
    assert_eq!(client.json().await["data"]["id"], "marker", "nothing from either channel came first");
    client.send_json(json!({"type": "subscribe", "data": {"channel_id": "ch_b"}})).await;
    expect_error(&mut client, "CHANNEL_NOT_FOUND").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_updates_reach_channel_peers_with_status_text() {
    let node = TestNode::default().await;
    channel(&node, "ch_abc123", &["777", "12345"]).await;
    let mut peer = connect(&node, "777", None).await;
    subscribe(&mut peer, "ch_abc123").await;
    let friend = connect(&node, "12345", None).await;
    assert_eq!(peer.json().await, json!({"type": "presence_update", "data": {"user_id": 12345, "presence": "online"}}));
    let resp =
        node.admin(Method::PUT, "/v1/users/12345/status").json(&json!({"status_text": "Playing OCVR"})).send().await;
    assert_eq!(resp.expect("status").status(), 204);
    assert_eq!(
        peer.json().await,
        json!({"type": "presence_update", "data": {"user_id": 12345, "presence": "online", "status_text": "Playing OCVR"}})
    );
    let online = node.admin(Method::GET, "/v1/presence/ch_abc123").send().await.expect("presence");
    assert_eq!(online.json::<Value>().await.expect("JSON")["online"], json!(["12345", "777"]));
    friend.close().await;
    assert_eq!(
        peer.json().await,
        json!({"type": "presence_update", "data": {"user_id": 12345, "presence": "offline"}})
    );
    node.await_metric("switchboard_presence_announcements_total{result=\"sent\"}", 3.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_told_why_and_closed() {
    let node = TestNode::default().await;
    let mut client = connect(&node, "12345", None).await;
    let resp = node
        .admin(Method::POST, "/v1/sessions/revoke")
        .json(&json!({"user": "12345", "reason": "logout_all"}))
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 200);
    assert_eq!(client.json().await, json!({"type": "session_revoked", "data": {"reason": "logout_all"}}));
    assert_eq!(client.closed().await.0, 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_past_the_idle_timeout_closes_and_heartbeats_keep_it_open() {
    let node = TestNode::start(test_config(|c| {
        c.endpoint_mut(PATH).expect("ocvr endpoint").limits.idle_timeout = Duration::from_secs(2);
    }))
    .await;
    let mut silent = connect(&node, "777", None).await;
    let mut talker = connect(&node, "12345", None).await;
    // Heartbeats at an eighth of the timeout keep the talker open well past it.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        talker.send_json(json!({"type": "heartbeat"})).await;
        assert_eq!(talker.json().await["type"], "heartbeat_ack");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (code, _) = silent.closed().await;
    assert_eq!(code, 1008, "the silent client was closed");
    talker.send_json(json!({"type": "heartbeat"})).await;
    assert_eq!(talker.json().await["type"], "heartbeat_ack");
    assert!(started.elapsed() < WAIT * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_messages_get_an_error_and_the_connection_stays() {
    let node = TestNode::default().await;
    let mut client = connect(&node, "12345", None).await;
    for bad in [r#"{"type":"dance"}"#, "not json", r#"{"type":"typing","data":{"channel_id":7}}"#] {
        client.send_text(bad).await;
        let error = client.json().await;
        assert_eq!(error["type"], "error", "{bad}: {error}");
    }
    client.send_json(json!({"type": "heartbeat"})).await;
    match client.next().await {
        Received::Json(ack) => assert_eq!(ack["type"], "heartbeat_ack"),
        other => panic!("{other:?}"),
    }
}
