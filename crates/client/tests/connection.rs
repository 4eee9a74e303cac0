//! One [`Connection`] against a real node, in both dialects: subscriptions confirmed by a
//! ping round trip, events arriving as text, a chosen source address, refusals told apart.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{json, Value};
use switchboard_client::{event_id, ClientDialect, ConnectError, ConnectOptions, Connection, Dialect, Incoming};
use switchboard_testkit::{TestNode, WAIT};

async fn next_json(conn: &mut Connection) -> Value {
    match tokio::time::timeout(WAIT, conn.next()).await.expect("a message in time") {
        Incoming::Text(t) => serde_json::from_str(&t).expect("JSON"),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn a_basic_connection_receives_its_channel_once_the_subscription_is_confirmed() {
    let node = TestNode::default().await;
    let options = ConnectOptions { source: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))), ..Default::default() };
    let url = node.ws_url(&format!("/ws?token={}", node.token("bob")));
    let mut conn = Connection::open(&url, &options).await.expect("connects from 127.0.0.3");
    let meanwhile =
        conn.send_confirmed(Dialect::Basic, &Dialect::Basic.subscriptions(&["status:svc"])).await.expect("confirmed");
    assert!(meanwhile.is_empty(), "basic acknowledges nothing: {meanwhile:?}");
    node.publish(json!({"channel": "status:svc", "type": "status_update", "payload": {"up": true}})).await;
    let event = next_json(&mut conn).await;
    assert_eq!(event["data"], json!({"up": true}));
    assert!(event_id(Dialect::Basic, event.to_string().as_bytes()).is_some(), "an event: {event}");
}

#[tokio::test]
async fn an_orbnet_connection_sees_its_ack_before_the_confirmation_and_events_after() {
    let node = TestNode::default().await;
    let url = node.ws_url(&format!("/ws/notifications?token={}", node.token("carol")));
    let mut conn = Connection::open(&url, &ConnectOptions::default()).await.expect("connects");
    let meanwhile = conn
        .send_confirmed(Dialect::Orbnet, &Dialect::Orbnet.subscriptions(&["notification"]))
        .await
        .expect("confirmed");
    let kinds: Vec<Value> =
        meanwhile.iter().map(|t| serde_json::from_str::<Value>(t).expect("JSON")["type"].clone()).collect();
    assert!(kinds.contains(&json!("connection_ack")), "{kinds:?}");
    node.publish(json!({"user": "carol", "type": "notification", "payload": {"n": 1}})).await;
    let event = next_json(&mut conn).await;
    assert_eq!((event["type"].clone(), event["payload"]["n"].clone()), (json!("notification"), json!(1)));
    conn.close().await;
}

#[tokio::test]
async fn the_connection_comes_from_the_source_address_asked_for() {
    // A bare listener: it records who connected and hangs up before any handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let accepted = tokio::spawn(async move { listener.accept().await.expect("accept").1 });
    let options = ConnectOptions { source: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))), ..Default::default() };
    let opened = Connection::open(&url, &options).await;
    assert!(opened.is_err(), "no WebSocket handshake was offered");
    let peer = tokio::time::timeout(WAIT, accepted).await.expect("accepted in time").expect("listener task");
    assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)));
}

#[tokio::test]
async fn a_refused_subscription_fails_the_confirmation_with_the_servers_error() {
    let node = TestNode::default().await;
    let url = node.ws_url(&format!("/ws?token={}", node.token("dave")));
    let mut conn = Connection::open(&url, &ConnectOptions::default()).await.expect("connects");
    let refused = conn.send_confirmed(Dialect::Basic, &Dialect::Basic.subscriptions(&["no-such-namespace"])).await;
    match refused {
        Err(ConnectError::Rejected(text)) => assert!(text.contains("\"error\""), "{text}"),
        other => panic!("expected the server's error, got {other:?}"),
    }
}

#[tokio::test]
async fn refused_credentials_and_bad_urls_are_told_apart() {
    let node = TestNode::default().await;
    let refused = Connection::open(&node.ws_url("/ws?token=nope"), &ConnectOptions::default()).await;
    assert!(matches!(refused, Err(ConnectError::Refused(401))), "{:?}", refused.err());
    let not_websocket = Connection::open("http://127.0.0.1:1/ws", &ConnectOptions::default()).await;
    assert!(matches!(not_websocket, Err(ConnectError::Url(_))), "{:?}", not_websocket.err());
    let nobody = Connection::open("wss://127.0.0.1:1/ws", &ConnectOptions::default()).await;
    assert!(matches!(nobody, Err(ConnectError::Io { what: "connect", .. })), "{:?}", nobody.err());
}

#[tokio::test]
async fn a_veriops_connection_answers_the_servers_pings_and_stays() {
    let node = switchboard_testkit::TestNode::start(switchboard_testkit::test_config(|c| {
        let e = c.endpoint_mut("/realtime").expect("veriops endpoint");
        e.heartbeat.interval = std::time::Duration::from_millis(50);
        e.heartbeat.timeout = std::time::Duration::from_millis(50);
    }))
    .await;
    let url = node.ws_url(&format!("/realtime?token={}", node.token("dana")));
    let options = ConnectOptions { answer_pings: Some(Dialect::Veriops), ..Default::default() };
    let mut conn = Connection::open(&url, &options).await.expect("connects");
    let acks = conn
        .send_confirmed(Dialect::Veriops, &Dialect::Veriops.subscriptions(&["project.updated"]))
        .await
        .expect("confirmed");
    assert!(acks.iter().all(|t| t.contains(r#""status":"ok""#)), "{acks:?}");
    // Heartbeat rounds pass while both are read: `next` answers the pings of the one that
    // answers (read by its own task, so no read of it is ever cut short); the other is closed
    // for not answering.
    let reader = tokio::spawn(async move { conn.next().await });
    let mut silent = Connection::open(&url, &ConnectOptions::default()).await.expect("connects");
    loop {
        match tokio::time::timeout(WAIT, silent.next()).await.expect("the silent one is closed in time") {
            Incoming::Closed(code) => break assert_eq!(code, 1008),
            _ => continue,
        }
    }
    // Let more rounds (100 ms each) pass for the answering one alone.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!reader.is_finished(), "nothing but pings so far, all answered");
    node.publish(json!({"channel": "project.updated", "type": "project.updated", "payload": {"n": 1}})).await;
    let event = match tokio::time::timeout(WAIT, reader).await.expect("in time").expect("reader") {
        Incoming::Text(t) => serde_json::from_str::<Value>(&t).expect("JSON"),
        other => panic!("expected the event, got {other:?}"),
    };
    assert_eq!(event["payload"]["data"], json!({"n": 1}), "{event}");
}
