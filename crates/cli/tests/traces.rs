//! OpenTelemetry over real processes: `serve` with an OTLP endpoint exports, to a small
//! OTLP/HTTP (JSON) receiver run by this test, the spans of a published persistent event: the
//! publish request's (a child of the caller's `traceparent`), the worker's `persist` and the
//! edge's `dispatch`, all in the caller's trace. The parent's sampling decision is followed:
//! with a sample ratio of 0, a sampled caller's trace is kept and an untraced publish is not.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_testkit::process::NodeProcess;
use switchboard_testkit::{connect_ws, WsClient};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Every span received: (service name, the span as OTLP JSON).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An OTLP/HTTP receiver: answers every `POST /v1/traces` with 200 and keeps the spans.
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let spans: Received = Arc::default();
    let keep = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let keep = keep.clone();
            std::thread::spawn(move || serve_exports(stream, keep));
        }
    });
    (addr, spans)
}

/// One client connection of the receiver: requests one after another (keep-alive).
fn serve_exports(stream: TcpStream, keep: Received) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut length = 0;
        let mut path = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if path.is_empty() {
                path = line.to_owned();
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().expect("a length");
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        assert!(path.starts_with("POST /v1/traces "), "exported to {path}");
        let export: Value = serde_json::from_slice(&body).expect("OTLP JSON");
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    keep.lock().expect("lock").push((service.clone(), span.clone()));
                }
            }
        }
        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// `POST /v1/publish` with an optional `traceparent` header.
fn publish(addr: &str, body: &Value, traceparent: Option<&str>) {
    let body = body.to_string();
    let header = traceparent.map(|t| format!("traceparent: {t}\r\n")).unwrap_or_default();
    let request = format!(
        "POST /v1/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer switchboard-dev-admin-key\r\n\
         Content-Type: application/json\r\n{header}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The spans of trace `trace_id` by name, once publish, persist and dispatch have all arrived.
async fn trace(spans: &Received, trace_id: &str) -> HashMap<String, (String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: HashMap<String, (String, Value)> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, s)| s["traceId"] == trace_id)
            .map(|(service, s)| (s["name"].as_str().unwrap_or_default().to_owned(), (service.clone(), s.clone())))
            .collect();
        if ["POST /v1/publish", "persist", "dispatch"].iter().all(|n| found.contains_key(*n)) {
            return found;
        }
        assert!(Instant::now() < deadline, "trace {trace_id} incomplete: {:?}", found.keys());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next_event(c: &mut WsClient) -> Value {
    loop {
        let m = c.json().await;
        if m["type"] == "notification" {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_events_publish_persist_and_dispatch_spans_share_the_callers_trace() {
    let (collector, spans) = receiver();
    let endpoint = format!("http://{collector}");
    let server = NodeProcess::start(
        BIN,
        &["serve"],
        &[
            ("SWITCHBOARD_OTLP_ENDPOINT", &endpoint),
            ("SWITCHBOARD_TRACE_SAMPLE_RATIO", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let token = switchboard_protocol::token::mint_hs256(
        switchboard_protocol::token::DEV_JWT_SECRET,
        "tracy",
        600,
        Default::default(),
    )
    .expect("token");
    let mut client =
        connect_ws(&format!("ws://{}/ws/notifications?token={token}", server.addr), &[]).await.expect("connect");
    assert_eq!(client.json().await["type"], "connection_ack");
    while client.json().await["type"] != "replay_complete" {}

    let event = |n: u64| json!({"user": "tracy", "type": "notification", "payload": {"n": n}});
    let (trace_1, caller_1) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    publish(&server.addr, &event(1), Some(&format!("00-{trace_1}-{caller_1}-01")));
    assert_eq!(next_event(&mut client).await["payload"]["n"], 1);
    let spans_1 = trace(&spans, trace_1).await;
    let (service, publish_span) = &spans_1["POST /v1/publish"];
    assert_eq!(service, "switchboard");
    assert_eq!(publish_span["parentSpanId"], caller_1, "the publish span is the caller's child");
    let publish_id = publish_span["spanId"].as_str().expect("a span id");
    for name in ["persist", "dispatch"] {
        assert_eq!(spans_1[name].1["parentSpanId"], publish_id, "{name} follows the publish: {:?}", spans_1[name]);
    }
    let dispatches =
        spans.lock().expect("lock").iter().filter(|(_, s)| s["traceId"] == trace_1 && s["name"] == "dispatch").count();
    assert_eq!(dispatches, 1, "one dispatch span per event on a node, not one per socket");

    // Ratio 0: an untraced publish starts no trace; a sampled caller's is still followed.
    publish(&server.addr, &event(2), None);
    assert_eq!(next_event(&mut client).await["payload"]["n"], 2);
    let trace_3 = "4bf92f3577b34da6a3ce929d0e0e4736";
    publish(&server.addr, &event(3), Some(&format!("00-{trace_3}-00f067aa0ba902b7-01")));
    assert_eq!(next_event(&mut client).await["payload"]["n"], 3);
    trace(&spans, trace_3).await;
    let traces: BTreeSet<String> =
        spans.lock().expect("lock").iter().map(|(_, s)| s["traceId"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(traces, BTreeSet::from([trace_1.to_owned(), trace_3.to_owned()]), "only the sampled callers' traces");
}
