//! The brl endpoint (`/api/v2/realtime`) over real sockets: binary frames as SPEC §4.3 lays
//! them out, server-side filter expressions, errors that leave the connection open, pings both
//! ways, and the document's limits (8 connections per token, 64 subscriptions, 60 s without a
//! subscription, 4401 at token expiry).

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{json, Value};
use switchboard_testkit::tungstenite::Message;
use switchboard_testkit::{test_config, token_with, Received, TestNode, WsClient};

const PATH: &str = "/api/v2/realtime";

fn str16(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn subscribe(topic: &str, filter: &str) -> Vec<u8> {
    let mut buf = vec![0x01];
    str16(&mut buf, topic);
    str16(&mut buf, filter);
    buf
}

/// An EVENT frame's fields: topic, event id, unix ms, payload bytes.
fn parse_event(frame: &[u8]) -> (String, String, u64, Vec<u8>) {
    assert_eq!(frame[0], 0x10, "an EVENT frame: {frame:?}");
    let mut at = 1;
    let mut str16 = || {
        let len = u16::from_be_bytes([frame[at], frame[at + 1]]) as usize;
        let s = String::from_utf8(frame[at + 2..at + 2 + len].to_vec()).expect("UTF-8");
        at += 2 + len;
        s
    };
    let (topic, id) = (str16(), str16());
    let ts = u64::from_be_bytes(frame[at..at + 8].try_into().expect("8 bytes"));
    (topic, id, ts, frame[at + 8..].to_vec())
}

/// An ERROR frame's code and message.
fn parse_error(frame: &[u8]) -> (String, String) {
    assert_eq!(frame[0], 0xFF, "an ERROR frame: {frame:?}");
    let len = u16::from_be_bytes([frame[1], frame[2]]) as usize;
    let code = String::from_utf8(frame[3..3 + len].to_vec()).expect("UTF-8");
    let at = 3 + len;
    let mlen = u16::from_be_bytes([frame[at], frame[at + 1]]) as usize;
    (code, String::from_utf8(frame[at + 2..at + 2 + mlen].to_vec()).expect("UTF-8"))
}

async fn send(c: &mut WsClient, frame: Vec<u8>) {
    c.ws.send(Message::Binary(frame.into())).await.expect("send");
}

async fn binary(c: &mut WsClient) -> Vec<u8> {
    match c.next().await {
        Received::Binary(b) => b,
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

async fn connect(node: &TestNode, user: &str) -> WsClient {
    let mut c = node.connect_user(PATH, user).await;
    c.barrier().await;
    c
}

async fn publish(node: &TestNode, topic: &str, payload: Value) -> String {
    node.publish(json!({"channel": topic, "type": "alert", "payload": payload})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_gets_the_documented_401_and_a_token_connects() {
    let node = TestNode::default().await;
    let resp = node.request(reqwest::Method::GET, PATH).send().await.expect("GET");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.expect("body"), r#"{"code":"missing_token","error":"unauthorized","status":401}"#);
    let resp = node.request(reqwest::Method::GET, &format!("{PATH}?token=nope")).send().await.expect("GET");
    assert_eq!(resp.json::<Value>().await.expect("JSON")["code"], "invalid_token");
    let expired = token_with("alice", serde_json::Map::from_iter([("exp".into(), json!(1_000_000_000))]));
    let resp = node.request(reqwest::Method::GET, &format!("{PATH}?token={expired}")).send().await.expect("GET");
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.expect("JSON")["code"], "expired_token");
    connect(&node, "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_as_documented_and_only_where_the_filter_matches() {
    let node = TestNode::default().await;
    let mut filtered = connect(&node, "alice").await;
    let mut everything = connect(&node, "bob").await;
    send(&mut filtered, subscribe("alerts.eu", r#"severity in ["critical","high"] && score >= 80"#)).await;
    send(&mut everything, subscribe("alerts.eu", "")).await;
    filtered.barrier().await;
    everything.barrier().await;

    let low = publish(&node, "alerts.eu", json!({"severity": "low", "score": 99})).await;
    let hit = publish(&node, "alerts.eu", json!({"severity": "high", "score": 80})).await;
    let before = switchboard_protocol::timefmt::now_millis();
    let (topic, id, ts, payload) = parse_event(&binary(&mut filtered).await);
    assert_eq!((topic.as_str(), id.as_str()), ("alerts.eu", hit.as_str()), "only the matching event");
    assert!(ts <= before && before - ts < 60_000, "unix ms of the event: {ts}");
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).expect("JSON payload"),
        json!({"severity": "high", "score": 80})
    );
    assert_eq!(parse_event(&binary(&mut everything).await).1, low);
    assert_eq!(parse_event(&binary(&mut everything).await).1, hit);

    // Raw bytes go out as they are, to unfiltered subscriptions only.
    let raw = [0u8, 159, 146, 150, 255];
    let body = json!({"channel": "alerts.eu", "type": "alert", "payload_base64": "AJ+Slv8="});
    let resp = node.admin(reqwest::Method::POST, "/v1/publish").json(&body).send().await.expect("publish");
    assert_eq!(resp.status(), 200);
    assert_eq!(parse_event(&binary(&mut everything).await).3, raw);
    // The filtered subscriber got nothing since: the next thing it sees is its pong.
    send(&mut filtered, vec![0x20, 7]).await;
    assert_eq!(binary(&mut filtered).await, [0x21, 7]);

    // Unsubscribed: nothing more.
    let mut unsubscribe = vec![0x02];
    str16(&mut unsubscribe, "alerts.eu");
    send(&mut everything, unsubscribe).await;
    everything.barrier().await;
    publish(&node, "alerts.eu", json!({"severity": "high", "score": 90})).await;
    send(&mut everything, vec![0x20]).await;
    assert_eq!(binary(&mut everything).await, [0x21]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_connection_lives_on() {
    let node = TestNode::default().await;
    let mut c = connect(&node, "alice").await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (subscribe("Alerts!", ""), "invalid_topic"),
        (subscribe(&"a".repeat(129), ""), "invalid_topic"),
        (subscribe("alerts", "score >= "), "invalid_filter"),
        (subscribe("alerts", &format!("{}true{}", "(".repeat(40), ")".repeat(40))), "invalid_filter"),
        (vec![0x01, 0x00, 0x09, b'a'], "invalid_frame"),
        (vec![0x07, 1, 2, 3], "unknown_kind"),
        (vec![0x20; 127], "invalid_frame"),
    ];
    for (frame, code) in cases {
        send(&mut c, frame).await;
        let (got, message) = parse_error(&binary(&mut c).await);
        assert_eq!(got, code, "{message}");
    }
    let (_, message) = {
        send(&mut c, subscribe("alerts", "score >= ")).await;
        parse_error(&binary(&mut c).await)
    };
    assert!(message.starts_with("at byte 9"), "the position of the error: {message}");
    c.send_text(r#"{"type":"subscribe"}"#).await;
    assert_eq!(parse_error(&binary(&mut c).await).0, "invalid_frame", "a text frame");
    // Still open and working.
    send(&mut c, subscribe("alerts", "")).await;
    c.barrier().await;
    publish(&node, "alerts", json!({"n": 1})).await;
    assert_eq!(parse_event(&binary(&mut c).await).0, "alerts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_when_idle_and_closes_after_three_missed_pongs() {
    let node = TestNode::start(test_config(|c| {
        let e = c.endpoint_mut(PATH).expect("brl endpoint");
        e.heartbeat.interval = Duration::from_millis(200);
        e.heartbeat.timeout = Duration::from_millis(200);
    }))
    .await;
    // A raw client never answers, whenever it reads.
    let mut silent = switchboard_testkit::raw::upgrade(&node, PATH, "alice", &[]).await;
    let mut pings = 0;
    loop {
        match switchboard_testkit::raw::next_control(&mut silent).await.expect("a ping or the close") {
            (0x2, frame) if frame.first() == Some(&0x20) => pings += 1,
            (0x8, payload) => {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pings, 3, "three missed pongs close the connection");

    // A client that answers stays.
    let mut answering = connect(&node, "bob").await;
    for _ in 0..5 {
        let ping = binary(&mut answering).await;
        assert_eq!(ping[0], 0x20);
        let mut pong = ping.clone();
        pong[0] = 0x21;
        send(&mut answering, pong).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_connections_per_token_and_sixty_four_subscriptions() {
    let node = TestNode::default().await;
    let token = node.token("alice");
    let url = format!("{PATH}?token={token}");
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(node.connect(&url, &[]).await.expect("connect").admitted().await.expect("admitted"));
    }
    let mut ninth = node.connect(&url, &[]).await.expect("upgraded");
    assert_eq!(ninth.closed().await.0, 1008, "the 9th connection of one token");
    // The others are unaffected, and another token of the same user has its own eight.
    held[0].barrier().await;
    let other = token_with("alice", serde_json::Map::from_iter([("sid".into(), json!("second-login"))]));
    node.connect(&format!("{PATH}?token={other}"), &[]).await.expect("connect").admitted().await.expect("admitted");

    let c = &mut held[1];
    for i in 0..64 {
        send(c, subscribe(&format!("t{i}"), "")).await;
    }
    c.barrier().await;
    send(c, subscribe("t64", "")).await;
    assert_eq!(parse_error(&binary(c).await).0, "too_many_subscriptions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subscription_in_time_closes_1008_and_an_expired_token_4401() {
    let node = TestNode::start(test_config(|c| {
        c.endpoint_mut(PATH).expect("brl endpoint").limits.unsubscribed_timeout = Duration::from_millis(300);
    }))
    .await;
    let mut idle = connect(&node, "alice").await;
    assert_eq!(idle.closed().await.0, 1008);

    let exp = switchboard_protocol::timefmt::now_millis() / 1000 + 2;
    let token = token_with("bob", serde_json::Map::from_iter([("exp".into(), json!(exp))]));
    let mut c = node.connect(&format!("{PATH}?token={token}"), &[]).await.expect("connect");
    send(&mut c, subscribe("alerts", "")).await;
    assert_eq!(c.closed().await.0, 4401, "auth expired mid-session");
}
