//! permessage-deflate (RFC 7692) over real sockets, with the client's side done by zlib's
//! algorithm through `flate2` directly (not the gateway's code): the offer browsers send is
//! answered, a large broadcast arrives compressed (RSV1) and is the same compressed bytes for
//! every subscriber (compressed once per node), small frames arrive plain, compressed client
//! messages are inflated, and the limits hold on the inflated size.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use switchboard_testkit::raw::{client_frame, next_control, next_frame, upgrade_with};
use switchboard_testkit::{test_config, TestNode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const PATH: &str = "/realtime";
/// What Chromium and Firefox send.
const BROWSER_OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A message compressed as a client does it: raw deflate, sync flush, tail removed.
fn client_deflate(message: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(message.len() + 64);
    c.compress_vec(message, &mut out, FlushCompress::Sync).expect("compresses");
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

/// A server message inflated as a client does it (a fresh window: no context takeover).
fn client_inflate(payload: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(64 * 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("a valid deflate stream");
    assert_eq!(d.total_in() as usize, input.len(), "all of it inflated");
    out
}

async fn connect(node: &TestNode, path: &str, user: &str, offer: &str) -> (TcpStream, String) {
    let (socket, head) = upgrade_with(node, path, user, offer, b"").await;
    (socket, head.to_ascii_lowercase())
}

const AGREED: &str =
    "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Sends a veriops request, compressed (RSV1) or not.
async fn send(socket: &mut TcpStream, message: Value, compressed: bool) {
    let text = message.to_string();
    let frame = if compressed {
        client_frame(0xC1, &client_deflate(text.as_bytes()), true)
    } else {
        client_frame(0x81, text.as_bytes(), true)
    };
    socket.write_all(&frame).await.expect("send");
}

/// The next data frame: whether it was compressed, and the message as JSON.
async fn next_message(socket: &mut TcpStream) -> (bool, Value) {
    loop {
        let (first, payload) = next_frame(socket).await.expect("a frame");
        match first & 0x0f {
            0x1 => {
                let compressed = first & 0x40 != 0;
                let text = if compressed { client_inflate(&payload) } else { payload };
                return (compressed, serde_json::from_slice(&text).expect("JSON"));
            }
            0x9 | 0xA => continue,
            other => panic!("unexpected opcode {other}"),
        }
    }
}

async fn subscribe(socket: &mut TcpStream, id: &str, compressed: bool) {
    let request = json!({"type": "subscribe", "request_id": id, "payload": {"channel": "project.updated"}});
    send(socket, request, compressed).await;
    let (was_compressed, ack) = next_message(socket).await;
    assert_eq!((ack["type"].as_str(), ack["request_id"].as_str()), (Some("ack"), Some(id)), "{ack}");
    assert_eq!(ack["payload"]["status"], "ok", "{ack}");
    assert!(!was_compressed, "a short ack goes out plain");
}

fn deflated_in(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_deflate_bytes_total{stage=\"in\"} "))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browsers_offer_is_agreed_and_a_large_broadcast_is_compressed_once_for_all_subscribers() {
    let node = TestNode::start(test_config(|_| {})).await;
    let (mut a, head_a) = connect(&node, PATH, "alice", BROWSER_OFFER).await;
    let (mut b, head_b) = connect(&node, PATH, "bob", BROWSER_OFFER).await;
    let (mut plain, head_plain) = connect(&node, PATH, "carol", "").await;
    assert!(head_a.contains(AGREED) && head_b.contains(AGREED), "{head_a}");
    assert!(!head_plain.contains("sec-websocket-extensions"), "no offer, no extension: {head_plain}");
    // An endpoint that does not enable compression declines the offer.
    let (_orbnet, head_orbnet) = connect(&node, "/ws/notifications", "dave", BROWSER_OFFER).await;
    assert!(!head_orbnet.contains("sec-websocket-extensions"), "{head_orbnet}");

    // Client requests may be compressed too.
    subscribe(&mut a, "r1", true).await;
    subscribe(&mut b, "r1", false).await;
    subscribe(&mut plain, "r1", false).await;
    let before = deflated_in(&node.metrics().await);

    let big = "the quick brown fox jumps over the lazy dog; ".repeat(50);
    let data = json!({"project_id": "prj_1", "notes": big});
    node.publish(json!({"channel": "project.updated", "type": "project.updated", "payload": data})).await;
    node.publish(json!({"channel": "project.updated", "type": "project.updated", "payload": {"project_id": "p2"}}))
        .await;

    let (first_a, frame_a) = next_frame(&mut a).await.expect("the big event");
    let (first_b, frame_b) = next_frame(&mut b).await.expect("the big event");
    let (first_plain, frame_plain) = next_frame(&mut plain).await.expect("the big event");
    assert_eq!((first_a, first_b, first_plain), (0xC1, 0xC1, 0x81), "RSV1 only where deflate was agreed");
    assert_eq!(frame_a, frame_b, "one compression, the same bytes for every subscriber");
    assert!(frame_a.len() * 5 < frame_plain.len(), "{} compressed of {}", frame_a.len(), frame_plain.len());
    assert_eq!(client_inflate(&frame_a), frame_plain, "inflates to exactly the plain frame");
    let event: Value = serde_json::from_slice(&frame_plain).expect("JSON");
    assert_eq!(event["payload"]["data"]["notes"], big.as_str(), "{event}");
    for socket in [&mut a, &mut b, &mut plain] {
        let (compressed, small) = next_message(socket).await;
        assert!(!compressed, "a frame under min_bytes goes out plain");
        assert_eq!(small["payload"]["data"]["project_id"], "p2", "{small}");
    }
    let after = deflated_in(&node.metrics().await);
    assert_eq!(after - before, frame_plain.len() as u64, "compressed once on this node, not once per connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_the_inflated_size_and_rsv1_needs_an_agreement() {
    let node = TestNode::start(test_config(|_| {})).await;
    // 1 MiB of JSON-ish text compresses to about a kilobyte: it is refused as the document's
    // "message too large" (4009) by its inflated size, never inflated in full.
    let (mut bomb, _) = connect(&node, PATH, "alice", BROWSER_OFFER).await;
    let huge = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", " ".repeat(1 << 20));
    let packed = client_deflate(huge.as_bytes());
    assert!(packed.len() < 4096, "{}", packed.len());
    bomb.write_all(&client_frame(0xC1, &packed, true)).await.expect("send");
    let (op, payload) = next_control(&mut bomb).await.expect("a close frame");
    assert_eq!((op, u16::from_be_bytes([payload[0], payload[1]])), (0x8, 4009));

    // Bytes that are not deflate data: invalid payload (1007).
    let (mut garbage, _) = connect(&node, PATH, "bob", BROWSER_OFFER).await;
    garbage.write_all(&client_frame(0xC1, &[0xFF, 0xFF, 0xFF, 0xFF], true)).await.expect("send");
    let (op, payload) = next_control(&mut garbage).await.expect("a close frame");
    assert_eq!((op, u16::from_be_bytes([payload[0], payload[1]])), (0x8, 1007));

    // RSV1 where nothing was agreed: a protocol error (1002).
    let (mut unagreed, _) = connect(&node, PATH, "carol", "").await;
    let ping = client_deflate(br#"{"type":"ping","request_id":"x"}"#);
    unagreed.write_all(&client_frame(0xC1, &ping, true)).await.expect("send");
    let (op, payload) = next_control(&mut unagreed).await.expect("a close frame");
    assert_eq!((op, u16::from_be_bytes([payload[0], payload[1]])), (0x8, 1002));
}
