//! The WebSocket wire itself, over a raw TCP socket (a client library would refuse to send
//! these bytes): frames sent in the same packet as the handshake, and the close codes for
//! frames RFC 6455 forbids. The fan-out of one channel to more subscribers than are written
//! inline, in passes.

use serde_json::{json, Value};
use switchboard_edge::INLINE_FANOUT;
use switchboard_testkit::raw::{client_frame, next_control, upgrade};
use switchboard_testkit::{TestNode, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn assert_closed_with(mut socket: TcpStream, code: u16) {
    let (opcode, payload) = next_control(&mut socket).await.expect("a close frame");
    assert_eq!(opcode, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
    // The connection was failed: the server drops the socket instead of waiting for an answer.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await.expect("closed in time");
    assert!(read.is_ok_and(|_| rest.is_empty()), "nothing after the close frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_sent_with_the_handshake_is_answered() {
    let node = TestNode::default().await;
    let mut socket = upgrade(&node, "/ws", "alice", &client_frame(0x89, b"early", true)).await;
    assert_eq!(next_control(&mut socket).await, Some((0xA, b"early".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_fails_the_connection_with_1002() {
    let node = TestNode::default().await;
    let mut socket = upgrade(&node, "/ws", "alice", &[]).await;
    let frame = client_frame(0x81, br#"{"type":"ping","data":{}}"#, false);
    socket.write_all(&frame).await.expect("send");
    assert_closed_with(socket, 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_message_fails_the_connection_with_1007() {
    let node = TestNode::default().await;
    let mut socket = upgrade(&node, "/ws", "alice", &[]).await;
    socket.write_all(&client_frame(0x81, &[b'{', 0xC3, 0x28, b'}'], true)).await.expect("send");
    assert_closed_with(socket, 1007).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_channel_gets_every_event_of_a_burst_in_order() {
    let node = TestNode::default().await;
    // More subscribers than are written inline: the channel gets a fan-out task of its own,
    // and a burst arriving while its first pass runs goes out in later, coalesced passes.
    let n = 2 * INLINE_FANOUT + 3;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = node.connect_user("/ws", &format!("user-{i}")).await;
        c.send_json(json!({"type": "subscribe", "data": {"channel": "status"}})).await;
        c.barrier().await;
        clients.push(c);
    }
    let events: Vec<Value> =
        (0..50).map(|i| json!({"channel": "status", "type": "status_update", "payload": {"n": i}})).collect();
    let response = node
        .admin(reqwest::Method::POST, "/v1/publish/batch")
        .json(&json!({"events": events}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 200);
    // One more afterwards: the channel's task ended cleanly and a new one starts.
    node.publish(json!({"channel": "status", "type": "status_update", "payload": {"n": 50}})).await;
    for (i, c) in clients.iter_mut().enumerate() {
        for expected in 0..=50 {
            let ev = c.json().await;
            assert_eq!(ev["data"]["n"], expected, "client {i}");
        }
    }
}
