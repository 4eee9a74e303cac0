//! Native TLS on the listener, over real sockets with a real TLS client (rustls): `wss://`
//! endpoints and the HTTP API on the one port, large messages both ways, a plain-HTTP client
//! told to use TLS, a handshake that stalls dropped after the handshake timeout, and a renewed
//! certificate served to new connections while open ones carry on.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use switchboard_testkit::tls::{scratch_dir, TestCert as Cert};
use switchboard_testkit::{metric_value, test_config, TestNode, ADMIN, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

async fn tls_node(dir: &Path, cert: &Cert, edit: impl FnOnce(&mut switchboard_edge::config::Config)) -> TestNode {
    let (cert_path, key_path) = cert.write_to(dir);
    TestNode::start(test_config(|c| {
        c.tls_cert = cert_path;
        c.tls_key = key_path;
        edit(c);
    }))
    .await
}

/// A TLS client trusting `roots`.
fn connector(roots: &[&Cert]) -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Cert::client_config(roots))
}

async fn tls_connect(node: &TestNode, roots: &[&Cert]) -> TlsStream<TcpStream> {
    tls_connect_with(node, &connector(roots)).await
}

async fn tls_connect_with(node: &TestNode, connector: &tokio_rustls::TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(node.addr).await.expect("tcp connect");
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.expect("handshake in time").expect("handshake")
}

/// The certificate the server presented on `stream`.
fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().and_then(|c| c.first()).expect("a server certificate").clone().into_owned()
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(node: &TestNode, roots: &[&Cert], path_and_query: &str) -> Wss {
    let stream = tls_connect(node, roots).await;
    let url = format!("wss://localhost:{}{path_and_query}", node.addr.port());
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    ws
}

async fn next_json(ws: &mut Wss) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// One HTTP/1.1 request over TLS; the whole answer.
async fn https(node: &TestNode, roots: &[&Cert], method: &str, path: &str, body: Option<&Value>) -> String {
    https_with(node, &connector(roots), method, path, body).await
}

/// [`https`] through `connector`, whose session tickets a later connection can resume with.
async fn https_with(
    node: &TestNode,
    connector: &tokio_rustls::TlsConnector,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> String {
    let mut stream = tls_connect_with(node, connector).await;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send request");
    let mut answer = Vec::new();
    // A server may end a TLS connection without close_notify after `Connection: close`.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.expect("an answer in time");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_clients_and_the_api_share_the_tls_port() {
    let cert = Cert::new();
    let node = tls_node(&scratch_dir("tls-api"), &cert, |_| {}).await;
    let mut alice = wss(&node, &[&cert], &format!("/ws/notifications?token={}", node.token("alice"))).await;
    assert_eq!(next_json(&mut alice).await["type"], "connection_ack");
    assert_eq!(next_json(&mut alice).await["type"], "replay_complete");
    // Small and large events (a large one spans several TLS records).
    for size in [10, 200_000] {
        let event = json!({"user": "alice", "type": "notification", "payload": {"text": "x".repeat(size)}});
        let answer = https(&node, &[&cert], "POST", "/v1/publish", Some(&event)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let got = next_json(&mut alice).await;
        assert_eq!(got["type"], "notification");
        assert_eq!(got["payload"]["text"].as_str().map(str::len), Some(size));
    }
    // The client's own messages are read and answered over the same session.
    alice.send(Message::text(json!({"type": "ping"}).to_string())).await.expect("send");
    assert_eq!(next_json(&mut alice).await["type"], "pong");
    // A client that kept the server's session ticket resumes: no certificate signature.
    let resuming = connector(&[&cert]);
    for _ in 0..2 {
        assert!(https_with(&node, &resuming, "GET", "/healthz", None).await.starts_with("HTTP/1.1 200"));
    }
    let metrics = https(&node, &[&cert], "GET", "/metrics", None).await;
    let done = ["full", "resumed"]
        .map(|r| metric_value(&metrics, &format!(r#"switchboard_tls_handshakes_total{{result="{r}"}}"#)));
    assert!(done[0] >= 4.0 && done[1] >= 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_goes_both_ways_through_the_echo_endpoint() {
    let cert = Cert::new();
    let node = tls_node(&scratch_dir("tls-echo"), &cert, |_| {}).await;
    let mut ws = wss(&node, &[&cert], "/diag/echo").await;
    let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i % 251) as u8).collect();
    // Sent and echoed while this side does not read yet: the server's writes fill the socket
    // and wait in the TLS session for it to drain.
    for _ in 0..3 {
        ws.send(Message::binary(big.clone())).await.expect("send");
    }
    for _ in 0..3 {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("echo in time") {
            Some(Ok(Message::Binary(b))) => assert!(b[..] == big[..], "the echo is the message"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cipher_suite_carries_messages_after_the_upgrade() {
    use rustls::crypto::ring::cipher_suite as suites;
    let cert = Cert::new();
    let node = tls_node(&scratch_dir("tls-suites"), &cert, |_| {}).await;
    let cases = [
        (suites::TLS13_AES_128_GCM_SHA256, &rustls::version::TLS13),
        (suites::TLS13_AES_256_GCM_SHA384, &rustls::version::TLS13),
        (suites::TLS13_CHACHA20_POLY1305_SHA256, &rustls::version::TLS13),
        (suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, &rustls::version::TLS12),
        (suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, &rustls::version::TLS12),
        (suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, &rustls::version::TLS12),
    ];
    let message: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
    for (suite, version) in cases {
        let mut provider = rustls::crypto::ring::default_provider();
        provider.cipher_suites = vec![suite];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der.clone()).expect("trust");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(node.addr).await.expect("tcp");
        let name = ServerName::try_from("localhost").expect("name");
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("handshake");
        assert_eq!(stream.get_ref().1.negotiated_cipher_suite(), Some(suite));
        let url = format!("wss://localhost:{}/diag/echo", node.addr.port());
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("upgrade");
        // Several messages, each spanning several records, both ways.
        for n in 0..3u8 {
            let mut sent = message.clone();
            sent[0] = n;
            ws.send(Message::binary(sent.clone())).await.expect("send");
            match tokio::time::timeout(WAIT, ws.next()).await.expect("echo in time") {
                Some(Ok(Message::Binary(b))) => assert!(b[..] == sent[..], "{suite:?}: the echo is the message"),
                other => panic!("{suite:?}: unexpected {other:?}"),
            }
        }
        ws.close(None).await.expect("close");
        match tokio::time::timeout(WAIT, ws.next()).await.expect("close answered in time") {
            Some(Ok(Message::Close(_))) | None => {}
            other => panic!("{suite:?}: unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_told_to_use_tls_and_stalled_or_refused_handshakes_are_counted() {
    let cert = Cert::new();
    let node = tls_node(&scratch_dir("tls-plain"), &cert, |c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut plain = TcpStream::connect(node.addr).await.expect("connect");
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut answer)).await.expect("an answer in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#""error":"tls_required""#), "{answer}");

    // The first byte of a TLS record, then nothing: dropped after the handshake timeout.
    let mut stalled = TcpStream::connect(node.addr).await.expect("connect");
    stalled.write_all(&[22]).await.expect("send");
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(WAIT, stalled.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "a stalled handshake is dropped");

    // A client that asked for another name refuses the certificate (and says so with an alert).
    let tcp = TcpStream::connect(node.addr).await.expect("connect");
    let other = ServerName::try_from("other.example").expect("server name");
    let refused = tokio::time::timeout(WAIT, connector(&[&cert]).connect(other, tcp)).await.expect("in time");
    assert!(refused.is_err(), "a certificate for localhost does not pass for other.example");

    let deadline = Instant::now() + WAIT;
    let counted = |result: &str, metrics: &str| {
        metric_value(metrics, &format!(r#"switchboard_tls_handshakes_total{{result="{result}"}}"#))
    };
    loop {
        let metrics = https(&node, &[&cert], "GET", "/metrics", None).await;
        let seen = ["not_tls", "timeout", "failed"].map(|r| counted(r, &metrics));
        if seen == [1.0, 1.0, 1.0] {
            break;
        }
        assert!(Instant::now() < deadline, "handshakes by result (not_tls, timeout, failed): {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_connections_while_open_ones_carry_on() {
    let (old, new) = (Cert::new(), Cert::new());
    let dir = scratch_dir("tls-reload");
    let node = tls_node(&dir, &old, |_| {}).await;
    let mut alice = wss(&node, &[&old], &format!("/ws/notifications?token={}", node.token("alice"))).await;
    assert_eq!(next_json(&mut alice).await["type"], "connection_ack");
    assert_eq!(next_json(&mut alice).await["type"], "replay_complete");
    assert_eq!(presented(&tls_connect(&node, &[&old, &new]).await), old.der);

    new.write_to(&dir);
    let deadline = Instant::now() + WAIT * 2;
    while presented(&tls_connect(&node, &[&old, &new]).await) != new.der {
        assert!(Instant::now() < deadline, "the renewed certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let event = json!({"user": "alice", "type": "notification", "payload": {"n": 1}});
    let answer = https(&node, &[&new], "POST", "/v1/publish", Some(&event)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(next_json(&mut alice).await["payload"]["n"], 1, "the connection opened under the old certificate");
}
