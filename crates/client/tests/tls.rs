//! The client over `wss://` against a node with native TLS: a bare connection and the
//! reconnecting client receive events published through another node of the same cluster, and
//! the wrong scheme on either port fails with a clear error instead of hanging.

use serde_json::{json, Value};
use switchboard_broker::memory::MemoryHub;
use switchboard_client::{
    Client, ClientConfig, ClientDialect, ClientEvent, ConnectError, ConnectOptions, Connection, Dialect, Incoming,
};
use switchboard_testkit::tls::{scratch_dir, TestCert};
use switchboard_testkit::{test_config, TestNode, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_connections_receive_and_the_wrong_scheme_fails_clearly() {
    let cert = TestCert::new();
    let (cert_path, key_path) = cert.write_to(&scratch_dir("client-tls"));
    let hub = MemoryHub::new();
    let secure = TestNode::start_on_hub(
        test_config(|c| {
            c.tls_cert = cert_path;
            c.tls_key = key_path;
        }),
        &hub,
    )
    .await;
    // Publishes go through a plain node of the same cluster.
    let plain = TestNode::start_on_hub(test_config(|_| {}), &hub).await;
    let tls = TestCert::client_config(&[&cert]);
    let url = format!("wss://localhost:{}/ws/notifications", secure.addr.port());

    let options = ConnectOptions { tls: Some(tls.clone()), ..Default::default() };
    let mut conn = Connection::open(&format!("{url}?token={}", secure.token("alice")), &options).await.expect("wss");
    let meanwhile = conn
        .send_confirmed(Dialect::Orbnet, &Dialect::Orbnet.subscriptions(&["notification"]))
        .await
        .expect("confirmed");
    assert!(meanwhile.iter().any(|t| t.contains("connection_ack")), "{meanwhile:?}");

    let config = ClientConfig::new(Dialect::Orbnet, vec![url.clone()], secure.token("bob")).tls(tls.clone());
    let mut client = Client::start(config);
    loop {
        let event = tokio::time::timeout(WAIT, client.next()).await.expect("in time").expect("running");
        if matches!(&event, ClientEvent::Control(v) if v["type"] == "replay_complete") {
            break;
        }
    }

    for user in ["alice", "bob"] {
        plain.publish(json!({"user": user, "type": "notification", "payload": {"to": user}})).await;
    }
    match tokio::time::timeout(WAIT, conn.next()).await.expect("in time") {
        Incoming::Text(t) => assert_eq!(serde_json::from_str::<Value>(&t).expect("JSON")["payload"]["to"], "alice"),
        other => panic!("unexpected {other:?}"),
    }
    loop {
        match tokio::time::timeout(WAIT, client.next()).await.expect("in time").expect("running") {
            ClientEvent::Event(v) => {
                assert_eq!(v["payload"]["to"], "bob");
                break;
            }
            ClientEvent::Control(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    // TLS to the plain port: the handshake fails; plain to the TLS port: refused with 400.
    let wss_to_plain = format!("wss://localhost:{}/ws/notifications?token=x", plain.addr.port());
    let err = Connection::open(&wss_to_plain, &options).await.err().expect("no TLS on the plain port");
    assert!(matches!(err, ConnectError::Io { what: "tls", .. }), "{err}");
    let ws_to_tls = format!("ws://localhost:{}/ws/notifications?token=x", secure.addr.port());
    let err = Connection::open(&ws_to_tls, &options).await.err().expect("TLS only on the TLS port");
    assert!(matches!(err, ConnectError::Refused(400)), "{err}");
}
