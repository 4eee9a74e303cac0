//! The client against real nodes: when its node goes away it moves to another, resumes with
//! the last event id it saw, and hands the application every event exactly once, in order.

use std::time::Duration;

use serde_json::json;
use switchboard_broker::memory::MemoryHub;
use switchboard_client::{backoff_delay, Client, ClientConfig, ClientEvent, Dialect};
use switchboard_testkit::{test_config, TestNode, WAIT};

async fn next(client: &mut Client) -> ClientEvent {
    tokio::time::timeout(WAIT, client.next()).await.expect("client event in time").expect("client running")
}

async fn next_event(client: &mut Client) -> serde_json::Value {
    loop {
        if let ClientEvent::Event(v) = next(client).await {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_moves_to_another_node_resumes_and_never_delivers_twice() {
    let hub = MemoryHub::new();
    let mut a = TestNode::start_on_hub(test_config(|_| {}), &hub).await;
    let b = TestNode::start_on_hub(test_config(|_| {}), &hub).await;
    let urls = vec![a.ws_url("/ws/notifications"), b.ws_url("/ws/notifications")];
    let config = ClientConfig::new(Dialect::Orbnet, urls, a.token("alice"))
        .subscribe_to(&["notification"])
        .backoff(Duration::from_millis(20), Duration::from_millis(100));
    let mut client = Client::start(config);
    assert_eq!(next(&mut client).await, ClientEvent::Connected(a.ws_url("/ws/notifications")));
    loop {
        if let ClientEvent::Control(v) = next(&mut client).await {
            if v["type"] == "replay_complete" {
                break;
            }
        }
    }
    // The subscribe is in flight; events before it are delivered too on a replaying endpoint.
    for n in 0..3 {
        a.publish(json!({"user": "alice", "type": "notification", "payload": {"n": n}})).await;
    }
    for n in 0..3 {
        assert_eq!(next_event(&mut client).await["payload"]["n"], n);
    }

    a.drain().await;
    for n in 3..8 {
        b.publish(json!({"user": "alice", "type": "notification", "payload": {"n": n}})).await;
    }
    let mut reconnected = false;
    let mut got = Vec::new();
    while got.len() < 5 {
        match next(&mut client).await {
            ClientEvent::Disconnected(code) => assert_eq!(code, 1001),
            ClientEvent::Connected(url) => {
                assert_eq!(url, b.ws_url("/ws/notifications"));
                reconnected = true;
            }
            ClientEvent::Event(v) => got.push(v["payload"]["n"].as_u64().unwrap()),
            ClientEvent::Control(_) | ClientEvent::ConnectFailed { .. } => {}
        }
    }
    assert!(reconnected);
    assert_eq!(got, [3, 4, 5, 6, 7], "each missed event once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_the_client_and_backoff_grows_with_jitter() {
    let node = TestNode::default().await;
    let mut client =
        Client::start(ClientConfig::new(Dialect::Orbnet, vec![node.ws_url("/ws/notifications")], "not-a-token".into()));
    match next(&mut client).await {
        ClientEvent::ConnectFailed { url, status, .. } => {
            assert_eq!((url, status), (node.ws_url("/ws/notifications"), Some(401)));
        }
        other => panic!("expected the refused connect, got {other:?}"),
    }
    assert_eq!(
        tokio::time::timeout(WAIT, client.next()).await.expect("ends"),
        None,
        "no retry loop on bad credentials"
    );

    let config = ClientConfig::new(Dialect::Orbnet, Vec::new(), String::new());
    for attempt in 0..8 {
        let d = backoff_delay(&config, attempt);
        let cap = (Duration::from_secs(1) * (1 << attempt)).min(Duration::from_secs(30));
        assert!(d <= cap && d >= cap / 2, "attempt {attempt}: {d:?} outside [{:?}, {cap:?}]", cap / 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_down_is_reported_with_no_status_and_the_next_one_is_tried_from_the_given_address() {
    // One open connection per address: 127.0.0.1 is taken below, so only a client that really
    // connects from 127.0.0.2 gets in.
    let node = TestNode::start(test_config(|c| c.ip_limits.max_connections = 1)).await;
    let _holder = node.connect_user("/ws/notifications", "holder").await;
    // A port nobody listens on: bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let dead_url = format!("ws://{dead}/ws/notifications");
    let urls = vec![dead_url.clone(), node.ws_url("/ws/notifications")];
    let config = ClientConfig::new(Dialect::Orbnet, urls, node.token("bob"))
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .source("127.0.0.2".parse().expect("an address"));
    let mut client = Client::start(config);
    match next(&mut client).await {
        ClientEvent::ConnectFailed { url, status, .. } => assert_eq!((url, status), (dead_url, None)),
        other => panic!("expected the failed attempt, got {other:?}"),
    }
    assert_eq!(next(&mut client).await, ClientEvent::Connected(node.ws_url("/ws/notifications")));
}
