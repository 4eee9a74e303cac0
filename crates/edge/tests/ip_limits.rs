//! Admission at the TCP accept, over real sockets: per-address limits on open and new
//! connections answer 429 before any of the request is read, a closed WebSocket gives its
//! address's place back, and a peer that sends nothing (or half a request head) is dropped
//! after the handshake timeout.

use std::time::{Duration, Instant};

use switchboard_testkit::{connect_ws, test_config, TestNode, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the server says to a new plain connection that asks for `/healthz`.
async fn answer(node: &TestNode) -> String {
    get(node, "/healthz").await
}

/// The whole answer to `GET path` on a new connection.
async fn get(node: &TestNode, path: &str) -> String {
    let mut s = TcpStream::connect(node.addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", node.addr);
    let _ = s.write_all(request.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("an answer in time");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_holds_at_most_max_connections_and_a_closed_one_frees_its_place() {
    let node = TestNode::start(test_config(|c| c.ip_limits.max_connections = 2)).await;
    let url = node.ws_url(&format!("/ws?token={}", node.token("alice")));
    let mut first = connect_ws(&url, &[]).await.expect("1st");
    first.barrier().await;
    let mut second = connect_ws(&url, &[]).await.expect("2nd");
    second.barrier().await;
    // The third connection from 127.0.0.1 is answered before its request is read.
    let refused = answer(&node).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains(r#""code":"ip_connection_limit""#), "{refused}");
    // A WebSocket that ends gives its place back (its slot lived in the connection's task).
    first.close().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let now = answer(&node).await;
        if now.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the closed connection's place never came back: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.close().await;
    // (A probe's place comes back when the server has closed it: retry until admitted.)
    let mut metrics = get(&node, "/metrics").await;
    while !metrics.starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        metrics = get(&node, "/metrics").await;
    }
    assert!(
        metrics.contains(r#"switchboard_connects_total{endpoint="(tcp)",result="ip_connection_limit"} "#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_from_one_address_are_rate_limited_after_the_burst() {
    let node = TestNode::start(test_config(|c| {
        c.ip_limits.connects_per_second = 0.5;
        c.ip_limits.connect_burst = 2;
    }))
    .await;
    assert!(answer(&node).await.starts_with("HTTP/1.1 200"));
    assert!(answer(&node).await.starts_with("HTTP/1.1 200"));
    let third = answer(&node).await;
    assert!(third.starts_with("HTTP/1.1 429") && third.contains("ip_rate_limited"), "{third}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_nothing_or_half_a_request_is_dropped_after_the_handshake_timeout() {
    let node = TestNode::start(test_config(|c| c.handshake_timeout = Duration::from_secs(1))).await;
    for sent in [&b""[..], b"GET /ws?token=x HTTP/1.1\r\nHost: a\r\nUpgr"] {
        let mut s = TcpStream::connect(node.addr).await.expect("connect");
        s.write_all(sent).await.expect("send");
        let started = Instant::now();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "a silent peer was kept open past 10 s (sent {sent:?})");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900), "closed before the timeout: {took:?}");
        let text = String::from_utf8_lossy(&out);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
}
