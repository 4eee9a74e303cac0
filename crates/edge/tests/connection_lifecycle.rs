//! How connections end: heartbeat timeouts, token expiry, oversized messages, slow consumers,
//! graceful drain. Short intervals come from the test config.

use std::time::Duration;

use serde_json::json;
use switchboard_testkit::tungstenite::Message;
use switchboard_testkit::{test_config, Received, TestNode, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Server closes of `/ws/notifications` with 1008 (a heartbeat timeout in these tests).
const HEARTBEAT_CLOSES: &str =
    "switchboard_disconnects_total{by=\"server\",code=\"1008\",endpoint=\"/ws/notifications\"}";

fn fast_heartbeat() -> switchboard_edge::Config {
    test_config(|c| {
        for e in &mut c.endpoints {
            e.heartbeat.interval = Duration::from_millis(200);
            e.heartbeat.timeout = Duration::from_millis(300);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_pings_is_closed() {
    let node = TestNode::start(fast_heartbeat()).await;
    // A raw client never answers a ping, whenever it reads.
    let mut silent = switchboard_testkit::raw::upgrade(&node, "/ws/notifications", "alice", &[]).await;
    let close = loop {
        match switchboard_testkit::raw::next_control(&mut silent).await.expect("a ping or the close") {
            (0x9, _) => continue,
            (0x8, payload) => break payload,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1008);
    assert_eq!(&close[2..], b"Heartbeat timeout");
    node.await_metric(HEARTBEAT_CLOSES, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_three_allowed_misses_a_silent_client_gets_three_pings_before_the_close() {
    let node = TestNode::start(test_config(|c| {
        for e in &mut c.endpoints {
            e.heartbeat.interval = Duration::from_millis(200);
            e.heartbeat.timeout = Duration::from_millis(200);
            e.heartbeat.max_missed = 3;
        }
    }))
    .await;
    // A raw client never answers a ping, whenever it reads.
    let mut silent = switchboard_testkit::raw::upgrade(&node, "/ws/notifications", "alice", &[]).await;
    let mut pings = 0;
    loop {
        match switchboard_testkit::raw::next_control(&mut silent).await.expect("a ping or the close") {
            (0x9, _) => pings += 1,
            (0x8, payload) => {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pings, 3, "one ping per allowed miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_answers_pings_stays_connected() {
    let node = TestNode::start(fast_heartbeat()).await;
    let mut live = node.connect_user("/ws/notifications", "alice").await;
    live.welcomed().await;
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut live.ws)).await {
        match msg.expect("connection stays up") {
            Message::Ping(_) => pings += 1,
            Message::Close(f) => panic!("closed although answering pings: {f:?}"),
            _ => {}
        }
    }
    assert!(pings >= 3, "expected several server pings, got {pings}");
    live.barrier().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_closes_with_4001_when_the_token_expires() {
    let node = TestNode::default().await;
    let mut claims = serde_json::Map::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    claims.insert("exp".into(), json!(now + 2));
    let token = switchboard_testkit::token_with("alice", claims);
    let mut c = node.connect(&format!("/ws/notifications?token={token}"), &[]).await.unwrap();
    c.welcomed().await;
    assert_eq!(c.closed().await, (4001, "Token expired".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_with_1009() {
    let node = TestNode::default().await;
    let mut c = node.connect_user("/ws/notifications", "alice").await;
    c.welcomed().await;
    c.send_text(&"x".repeat(70 * 1024)).await;
    assert_eq!(c.closed().await.0, 1009);
}

/// Once the server gave up on a slow client, the client reads: what fitted in the buffers, then
/// the slow-consumer close frame the server still writes. Returns how many events got through.
async fn closed_as_slow_consumer(node: &TestNode, slow: &mut switchboard_testkit::WsClient) -> usize {
    node.await_metric("switchboard_slow_consumer_closes_total", 1.0).await;
    let mut events = 0;
    let close = loop {
        match slow.next().await {
            Received::Json(_) => events += 1,
            Received::Closed(code, reason) => break (code, reason),
            other => panic!("the slow consumer must get a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, (1008, "Slow consumer: outbound queue full".to_owned()));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_by_the_bytes_it_holds_not_only_their_count() {
    // 100 events fit the message bound (1,024) many times over; 256 KiB each, they pass the
    // byte bound (1 MiB) within a few: only that bound can close this client.
    let node = TestNode::start(test_config(|c| {
        let e = c.endpoint_mut("/ws/notifications").expect("notifications");
        e.limits.outbound_queue_bytes = 1 << 20;
    }))
    .await;
    let mut slow = node.connect_user("/ws/notifications", "alice").await;
    slow.welcomed().await;
    slow.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
    slow.barrier().await;
    let big = "z".repeat(256 * 1024);
    let total = 100;
    for i in 0..total {
        node.publish(json!({"user": "alice", "type": "notification", "payload": {"n": i, "pad": big}})).await;
        if node.metric("switchboard_slow_consumer_closes_total").await >= 1.0 {
            break;
        }
    }
    let events = closed_as_slow_consumer(&node, &mut slow).await;
    assert!(events < total, "closed by the byte bound ({events} events got through)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_without_stalling_others() {
    let node = TestNode::start(test_config(|c| {
        c.endpoints.iter_mut().filter(|e| e.path == "/ws/notifications").for_each(|e| e.limits.outbound_queue = 8);
    }))
    .await;
    let mut slow = node.connect_user("/ws/notifications", "alice").await;
    slow.welcomed().await;
    slow.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
    slow.barrier().await;
    let mut fast = node.connect_user("/ws", "alice").await;
    fast.barrier().await;

    let big = "y".repeat(60 * 1024);
    let total = 400;
    let reader = tokio::spawn(async move {
        for i in 0..total {
            let ev = fast.json().await;
            assert_eq!(ev["data"]["n"], i, "the fast client must get every event in order");
        }
    });
    let node = std::sync::Arc::new(node);
    let publisher = {
        let node = node.clone();
        tokio::spawn(async move {
            for i in 0..total {
                node.publish(json!({"user": "alice", "type": "notification", "payload": {"n": i, "pad": big}})).await;
            }
        })
    };
    let events = closed_as_slow_consumer(&node, &mut slow).await;
    assert!(events < total, "it was closed, not served everything ({events} events)");
    publisher.await.expect("publisher");
    reader.await.expect("fast reader");
    assert_eq!(node.metric("switchboard_slow_consumer_closes_total").await, 1.0);
    let closes = "switchboard_disconnects_total{by=\"server\",code=\"1008\",endpoint=\"/ws/notifications\"}";
    node.await_metric(closes, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_idle_keep_alive_http_connections() {
    let mut node = TestNode::default().await;
    let mut socket = tokio::net::TcpStream::connect(node.addr).await.expect("connect");
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("send");
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, socket.read_exact(&mut head)).await.expect("answer in time").expect("read");
    assert_eq!(&head, b"HTTP/1.1 200");
    // The connection stays open (keep-alive) until the node drains, which must close it
    // rather than wait for the client.
    let closed = tokio::spawn(async move {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.map(|r| r.is_ok())
    });
    node.drain().await;
    assert_eq!(closed.await.expect("reader"), Ok(true), "the idle keep-alive connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_every_connection_with_1001() {
    let mut node = TestNode::default().await;
    let mut a = node.connect_user("/ws/notifications", "alice").await;
    a.welcomed().await;
    let mut b = node.connect_user("/ws", "bob").await;
    b.barrier().await;
    node.drain().await;
    assert_eq!(a.closed().await.0, 1001);
    assert_eq!(b.closed().await.0, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_pings_or_fragments_are_rate_limited_like_messages() {
    use switchboard_testkit::raw::{client_frame, next_control, upgrade};
    let node = TestNode::default().await;
    // /ws allows 20 messages a second with a burst of 40: 1,000 pings (a tenth of a message
    // each) are far past it; so are 1,000 empty fragments of a message that never ends.
    let pings: Vec<u8> = (0..1000).flat_map(|_| client_frame(0x89, b"p", true)).collect();
    let mut fragments = client_frame(0x01, b"", true);
    fragments.extend((0..1000).flat_map(|_| client_frame(0x00, b"", true)));
    for (what, flood) in [("pings", pings), ("fragments", fragments)] {
        let mut socket = upgrade(&node, "/ws", "alice", &[]).await;
        socket.write_all(&flood).await.expect("send the flood");
        let mut pongs = 0;
        let code = loop {
            match next_control(&mut socket).await {
                Some((0xA, _)) => pongs += 1,
                Some((0x8, payload)) => break u16::from_be_bytes([payload[0], payload[1]]),
                Some(other) => panic!("{what}: unexpected {other:?}"),
                None => panic!("{what}: dropped without a close frame"),
            }
        };
        assert_eq!(code, 4029, "{what}");
        assert!(pongs < 1000, "{what}: closed before answering them all ({pongs} pongs)");
    }
}
