//! The real `switchboard` binary: `token`, `check-config`, and `serve` end to end with the
//! documents' own clients (seed 000's Python client, seed 001's JavaScript client).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use std::time::Duration;
use switchboard_testkit::process::{http_post, http_request, NodeProcess};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn workspace_file(rel: &str) -> String {
    format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Starts `switchboard serve` on a free port with the built-in config.
fn serve() -> NodeProcess {
    let server = NodeProcess::start(BIN, &["serve"], &[]);
    assert!(
        server.banner.iter().any(|l| l.contains("/ws/notifications")),
        "banner lists the endpoints: {:?}",
        server.banner
    );
    assert!(server.banner.iter().any(|l| l.contains("switchboard token --sub")), "banner says how to get a token");
    assert!(
        server.banner.iter().any(|l| l.contains("in this process only")),
        "the embedded broker's state is said to be lost on restart: {:?}",
        server.banner
    );
    server
}

fn token(sub: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", "--sub", sub, "--claim", "name=Alice"])
        .env_remove("SWITCHBOARD_JWT_SECRET")
        .output()
        .expect("run token");
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).expect("utf8").trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT has three parts: {token}");
    token
}

#[test]
fn check_config_accepts_every_shipped_example_and_explains_mistakes() {
    for f in [
        "deploy/examples/all.toml",
        "deploy/examples/orbnet.toml",
        "deploy/examples/basic.toml",
        "deploy/examples/ocvr.toml",
        "deploy/examples/brl.toml",
        "deploy/examples/veriops.toml",
    ] {
        let out = Command::new(BIN).args(["check-config", &workspace_file(f)]).output().expect("run check-config");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("OK"), "{stdout}");
    }
    let dir = std::env::temp_dir().join(format!("sb-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:8080\"\n\n[[endpoints]]\npath = \"/x\"\ndialect = \"klingon\"\nauth = { method = \"jwt\" }\n",
    )
    .unwrap();
    let out = Command::new(BIN).args(["check-config", bad.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 5") && stderr.contains("klingon"), "{stderr}");
}

#[test]
fn serve_works_end_to_end_with_the_documents_python_client() {
    let server = serve();
    let url = format!("ws://{}/ws/notifications", server.addr);
    let mut client = Command::new("python3")
        .args([&format!("{}/tests/clients/orbnet_notifications.py", env!("CARGO_MANIFEST_DIR")), &url, &token("alice")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (scripts/test.sh installs the websockets library)");
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first = lines.next().expect("python client printed the session").expect("line");
    assert!(first.contains("sess_"), "{first}; is the `websockets` library installed?");

    // The client sends `subscribe` right after connecting, without waiting for an answer, so
    // publish numbered notifications until the first one arrives, then one device status.
    let mut got = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    while got.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no notification reached the python client");
        n += 1;
        publish(
            &server.addr,
            &format!(r#"{{"user":"alice","type":"notification","payload":{{"title":"T{n}","message":"hello"}}}}"#),
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            got.push(line);
        }
    }
    publish(&server.addr, r#"{"user":"alice","type":"device_status","payload":{"deviceId":"d1","status":"online"}}"#);
    loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("device status reached the python client");
        if line.contains("d1") {
            assert!(line.contains("online"));
            break;
        }
    }
    let status = client.wait().expect("python client exits");
    assert!(status.success(), "python client failed");
}

#[test]
fn serve_with_tls_speaks_wss_to_the_documents_python_client_and_the_cli_publishes_over_https() {
    let (cert, key) =
        switchboard_testkit::tls::TestCert::new().write_to(&switchboard_testkit::tls::scratch_dir("cli-tls"));
    let tls_env = [("SWITCHBOARD_TLS_CERT", cert.as_str()), ("SWITCHBOARD_TLS_KEY", key.as_str())];
    let server = NodeProcess::start(BIN, &["serve"], &tls_env);
    assert!(
        server.banner.iter().any(|l| l.contains("wss://") && l.contains("/ws/notifications")),
        "{:?}",
        server.banner
    );
    assert!(server.banner.iter().any(|l| l.contains("https://") && l.contains("/playground")), "{:?}", server.banner);
    let port = server.addr.rsplit(':').next().expect("port");
    let url = format!("wss://localhost:{port}/ws/notifications");
    let script = format!("{}/tests/clients/orbnet_notifications.py", env!("CARGO_MANIFEST_DIR"));
    let mut python = Command::new("python3")
        .args([&script, &url, &token("alice"), &cert])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 with the websockets library");
    let mut lines = BufReader::new(python.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("python client printed the session").expect("line");
    assert!(first.contains("sess_"), "{first}");
    // `switchboard publish` finds the node's address and certificate in the same settings.
    let publish = |event: &str| {
        let out = Command::new(BIN)
            .args(["publish", event, "--url", &format!("https://localhost:{port}")])
            .envs(tls_env)
            .env_remove("SWITCHBOARD_ADMIN_KEY")
            .output()
            .expect("run publish");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    // The client subscribes without waiting for an answer: publish until its event arrives.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        assert!(std::time::Instant::now() < deadline, "no event reached the python client over wss");
        publish(r#"{"user":"alice","type":"device_status","payload":{"deviceId":"d1","status":"online"}}"#);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
    };
    assert!(line.contains("d1") && line.contains("online"), "{line}");
    assert!(python.wait().expect("python client exits").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_tls_serves_its_operations_endpoints_over_https() {
    let redis = switchboard_testkit::redis::RedisServer::start();
    let cert = switchboard_testkit::tls::TestCert::new();
    let (cert_path, key_path) = cert.write_to(&switchboard_testkit::tls::scratch_dir("cli-worker-tls"));
    let env = [
        ("SWITCHBOARD_REDIS_URL", redis.url()),
        ("SWITCHBOARD_TLS_CERT", cert_path),
        ("SWITCHBOARD_TLS_KEY", key_path),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker = NodeProcess::start(BIN, &["worker"], &env);
    let port = worker.addr.rsplit(':').next().expect("port");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert_pem.as_bytes()).expect("certificate"))
        .build()
        .expect("client");
    let ready = client.get(format!("https://localhost:{port}/readyz")).send().await.expect("https answers");
    assert_eq!(ready.status(), 200);
    let metrics = client.get(format!("https://localhost:{port}/metrics")).send().await.expect("metrics");
    assert!(metrics.text().await.expect("text").contains("switchboard_worker_shards_owned"));
    let (status, body) = http_request(&worker.addr, "GET", "/readyz", "", "");
    assert_eq!(status, 400, "plain HTTP to the worker's TLS port: {body}");
}

/// How to run Node with a global `WebSocket`: Node 22+ has one, Node 20 behind a flag; older
/// ones use the `ws` package that scripts/test.sh installs next to the client.
fn node_command() -> Command {
    let flag_works = Command::new("node")
        .args(["--experimental-websocket", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut node = Command::new("node");
    if flag_works {
        node.arg("--experimental-websocket");
    }
    node
}

#[test]
fn serve_works_end_to_end_with_the_ocvr_documents_javascript_client() {
    let server = serve();
    assert!(server.banner.iter().any(|l| l.contains("ws-ticket")), "banner says how to get a ticket");
    let admin = |method: &str, path: &str| {
        let (status, body) = http_request(&server.addr, method, path, "switchboard-dev-admin-key", "");
        assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
    };
    admin("PUT", "/v1/channels/ch_abc123");
    admin("PUT", "/v1/channels/ch_abc123/members/12345");
    let mut client = node_command()
        .args([
            &format!("{}/tests/clients/ocvr_client.mjs", env!("CARGO_MANIFEST_DIR")),
            &format!("http://{}", server.addr),
            &format!("ws://{}", server.addr),
            &token("12345"),
            "ch_abc123",
        ])
        .env("HEARTBEAT_MS", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node must be installed (scripts/test.sh installs it)");
    let lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({"raw": line})));
        }
    });
    let next_of = |kind: &str| loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|_| panic!("no `{kind}` from the client"));
        if line["got"] == kind {
            return line;
        }
    };
    let says = |n: u32| {
        let body = format!(
            r#"{{"channel":"ch_abc123","type":"message_create","payload":{{"id":"msg_{n}","channel_id":"ch_abc123","content":"Hello world!"}}}}"#
        );
        publish(&server.addr, &body);
    };
    for round in 0..2 {
        next_of("open");
        next_of("heartbeat_ack");
        // The subscribe went out right after open, unanswered: publish until one arrives.
        let got = (0..40)
            .find_map(|n| {
                says(round * 100 + n);
                rx.recv_timeout(Duration::from_millis(500)).ok().filter(|l| l["got"] == "message_create")
            })
            .expect("a message reached the client");
        assert_eq!(got["data"]["content"], "Hello world!");
        if round == 0 {
            // Logged out everywhere: the client is told, the server closes, and the document's
            // client reconnects on its own with a new ticket.
            let (status, _) = http_post(
                &server.addr,
                "/v1/sessions/revoke",
                "switchboard-dev-admin-key",
                r#"{"user":"12345","reason":"logout_all"}"#,
            );
            assert_eq!(status, 200);
            assert_eq!(next_of("session_revoked")["data"]["reason"], "logout_all");
            next_of("closed");
        }
    }
    let _ = client.kill();
    let _ = client.wait();
}

fn publish(addr: &str, body: &str) {
    let (status, answer) = http_post(addr, "/v1/publish", "switchboard-dev-admin-key", body);
    assert_eq!(status, 200, "publish failed: {answer}");
}

/// What Kubernetes injects into every pod of a namespace with a Service named `switchboard`
/// on port 8080 ("service links").
const SERVICE_LINKS: [(&str, &str); 7] = [
    ("SWITCHBOARD_SERVICE_HOST", "10.96.0.12"),
    ("SWITCHBOARD_SERVICE_PORT", "8080"),
    ("SWITCHBOARD_SERVICE_PORT_HTTP", "8080"),
    ("SWITCHBOARD_PORT", "tcp://10.96.0.12:8080"),
    ("SWITCHBOARD_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
    ("SWITCHBOARD_PORT_8080_TCP_PROTO", "tcp"),
    ("SWITCHBOARD_PORT_8080_TCP_ADDR", "10.96.0.12"),
];

#[test]
fn kubernetes_service_link_variables_do_not_stop_a_node() {
    let mut env = SERVICE_LINKS.to_vec();
    env.push(("SWITCHBOARD_PORT_8080_TCP_PORT", "8080"));
    let server = NodeProcess::start(BIN, &["serve"], &env);
    assert!(server.banner.iter().any(|l| l.contains("/ws/notifications")), "{:?}", server.banner);
    publish(&server.addr, r#"{"user":"alice","type":"notification","payload":{}}"#);
}

#[test]
fn check_config_warns_about_unknown_variables_but_not_service_links() {
    let out = Command::new(BIN)
        .arg("check-config")
        .envs(SERVICE_LINKS)
        .env("SWITCHBOARD_DRAIN_WINDOWW", "5s")
        .output()
        .expect("run check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("built-in default config: OK"), "{stdout}");
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert!(warnings[0].contains("SWITCHBOARD_DRAIN_WINDOWW"), "{stdout}");
    assert!(stdout.contains("broadcast `notifications`"), "the broadcast channels are listed: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_as_a_user_meets_it() {
    let window = Duration::from_secs(3);
    let mut server = NodeProcess::start(BIN, &["serve"], &[("SWITCHBOARD_DRAIN_WINDOW", "3s")]);
    let url = |user: &str| format!("ws://{}/ws?token={}", server.addr, token(user));
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = switchboard_testkit::connect_ws(&url(&format!("user-{i}")), &[]).await.expect("connect");
        c.barrier().await;
        clients.push(c);
    }
    let ready = |addr: &str| http_request(addr, "GET", "/readyz", "", "").0;
    assert_eq!(ready(&server.addr), 200);
    let started = std::time::Instant::now();
    server.signal("TERM");
    // Not ready at once, and new WebSockets are refused with a reason, while the open ones drain.
    let deadline = started + Duration::from_secs(2);
    while ready(&server.addr) != 503 {
        assert!(std::time::Instant::now() < deadline, "/readyz still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = switchboard_testkit::connect_ws(&url("late"), &[]).await;
    let Err(switchboard_testkit::tungstenite::Error::Http(resp)) = refused else { panic!("an upgrade was accepted") };
    assert_eq!(resp.status(), 503);
    // Each client on a task of its own, so each close is timed when it arrives.
    let waits: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let (code, _) = c.closed().await;
                (code, started.elapsed())
            })
        })
        .collect();
    let mut closed_at = Vec::new();
    for w in waits {
        let (code, at) = w.await.expect("client task");
        assert_eq!(code, 1001);
        closed_at.push(at);
    }
    // Spread over the window (20 uniform points in 3 s all within 1 s: about 1 in 10^9), within it.
    let (first, last) = (closed_at.iter().min().copied(), closed_at.iter().max().copied());
    let (first, last) = (first.expect("closes"), last.expect("closes"));
    assert!(last - first > Duration::from_secs(1), "closes not spread: {first:?} .. {last:?}");
    assert!(last < window + Duration::from_secs(2), "a close came after the window: {last:?}");
    let status = server.wait_exit(Duration::from_secs(10)).expect("the process exits after the drain");
    assert!(status.success(), "exit status {status}");
}

/// Runs `switchboard ARGS` against `server`; its stdout, failing the test on a non-zero exit.
fn client(server: &NodeProcess, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(args)
        .args(["--url", &format!("http://{}", server.addr)])
        .env_remove("SWITCHBOARD_ADMIN_KEY")
        .output()
        .expect("run the client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args:?}: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_inspect_talk_to_a_running_node() {
    let server = serve();
    let url = |path: &str| format!("ws://{}{path}?token={}", server.addr, token("alice"));
    let mut notifications = switchboard_testkit::connect_ws(&url("/ws/notifications"), &[]).await.expect("connect");
    notifications.welcomed().await;
    let mut basic = switchboard_testkit::connect_ws(&url("/ws"), &[]).await.expect("connect");
    basic.barrier().await;

    let answer =
        client(&server, &["publish", r#"{"user":"alice","type":"notification","payload":{"title":"from the CLI"}}"#]);
    assert!(answer["id"].as_str().is_some_and(|id| id.starts_with("evt_")), "{answer}");
    assert_eq!(basic.json().await["data"]["title"], "from the CLI");

    let all = client(&server, &["inspect", "connections"]);
    assert_eq!(all["connections"], 2, "{all}");
    assert_eq!((&all["per_endpoint"]["/ws"], &all["per_endpoint"]["/ws/notifications"]), (&1.into(), &1.into()));
    let alice = client(&server, &["inspect", "connections", "--user", "alice"]);
    let endpoints: Vec<&serde_json::Value> =
        alice["connections"].as_array().expect("connections").iter().map(|c| &c["endpoint"]).collect();
    assert_eq!(endpoints.len(), 2, "{alice}");
    assert!(endpoints.contains(&&serde_json::json!("/ws/notifications")), "{alice}");
    assert_eq!(alice["connections"][0]["node"], all["nodes"][0]["node"], "{alice} {all}");

    let keys = client(&server, &["inspect", "api-keys"]);
    assert_eq!(keys, serde_json::json!({"api_keys": []}));
    let dev_admin = switchboard_protocol::token::DEV_ADMIN_KEY;
    let (status, body) = http_request(&server.addr, "PUT", "/v1/channels/conversation:c1/members/alice", dev_admin, "");
    assert_eq!(status, 204, "{body}");
    let members = client(&server, &["inspect", "channel", "conversation:c1"]);
    assert_eq!(members["members"], serde_json::json!(["alice"]), "{members}");
    // A refused call exits non-zero with the node's message.
    let out = Command::new(BIN)
        .args([
            "publish",
            r#"{"user":"alice","type":"invoice","payload":7}"#,
            "--url",
            &format!("http://{}", server.addr),
        ])
        .output()
        .expect("run publish");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`payload` must be a JSON object"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_tell_connects_refusals_closes_and_publishes_without_credentials() {
    let log = logs_of_a_short_session(&[("SWITCHBOARD_LOG", "switchboard_edge=debug")]).await;
    assert!(!log.contains('\u{1b}'), "no terminal colours in a log that is not a terminal");
    assert!(log.contains("connect refused endpoint=\"/ws\" code=\"invalid_token\""), "{log}");
    assert!(!log.contains(FOREIGN_TOKEN) && !log.contains("c2lnbmVkLWVsc2V3aGVyZQ"), "never the credential: {log}");
    assert!(log.contains("connected endpoint=\"/ws\" user=\"alice\""), "{log}");
    assert!(log.contains("published id=\"evt_"), "{log}");
    assert!(log.contains("closed endpoint=\"/ws\" code=\"1000\" by=\"client\""), "{log}");
}

/// With `SWITCHBOARD_LOG_FORMAT=json` every line is one JSON object a collector can index
/// (time, level, target, the event's fields); the level comes from `RUST_LOG` when
/// `SWITCHBOARD_LOG` is not set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_at_the_rust_log_level() {
    let log =
        logs_of_a_short_session(&[("SWITCHBOARD_LOG_FORMAT", "json"), ("RUST_LOG", "switchboard_edge=debug")]).await;
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    let find = |message: &str| {
        lines.iter().find(|l| l["fields"]["message"] == message).unwrap_or_else(|| panic!("no `{message}` in {log}"))
    };
    let connected = find("connected");
    assert_eq!(connected["level"], "DEBUG", "{connected}");
    assert_eq!((&connected["fields"]["endpoint"], &connected["fields"]["user"]), (&"/ws".into(), &"alice".into()));
    assert!(connected["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{connected}");
    assert!(connected["target"].as_str().is_some_and(|t| t.starts_with("switchboard_edge")), "{connected}");
    assert_eq!(find("connect refused")["fields"]["code"], "invalid_token");
    assert_eq!(find("closed")["fields"]["code"], "1000");
    assert!(!log.contains(FOREIGN_TOKEN), "never the credential: {log}");
}

/// A token signed with another secret.
const FOREIGN_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmVkLWVsc2V3aGVyZQ";

/// Runs `serve` with `env`, makes one refused connect, one connection that gets a published
/// event and closes; returns what the node logged on stderr.
async fn logs_of_a_short_session(env: &[(&str, &str)]) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .env_remove(if env.iter().any(|(k, _)| *k == "SWITCHBOARD_LOG") { "RUST_LOG" } else { "SWITCHBOARD_LOG" })
        .env_remove("SWITCHBOARD_JWT_SECRET")
        .env_remove("SWITCHBOARD_ADMIN_KEY")
        .env_remove("SWITCHBOARD_REDIS_URL")
        .env_remove("SWITCHBOARD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let mut banner = String::new();
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    stdout.read_line(&mut banner).expect("banner");
    // Keep reading: a closed pipe would fail the node's next banner line.
    std::thread::spawn(move || stdout.lines().for_each(drop));
    let addr = banner.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).expect("address").to_owned();
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());

    let refused = switchboard_testkit::connect_ws(&format!("ws://{addr}/ws?token={FOREIGN_TOKEN}"), &[]).await;
    assert!(refused.is_err(), "a bad token is refused");
    let url = format!("ws://{addr}/ws?token={}", token("alice"));
    let mut c = switchboard_testkit::connect_ws(&url, &[]).await.expect("connect");
    c.barrier().await;
    let body = r#"{"user":"alice","type":"notification","payload":{"n":1}}"#;
    let (status, _) = http_post(&addr, "/v1/publish", "switchboard-dev-admin-key", body);
    assert_eq!(status, 200);
    assert_eq!(c.json().await["data"]["n"], 1);
    c.close().await;
    // The close is logged once the connection's task ends; then stop the process.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = http_request(&addr, "GET", "/metrics", "", "");
        if switchboard_testkit::metric_value(&metrics, "switchboard_connections{endpoint=\"/ws\"}") == 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the connection never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    lines.join().expect("stderr reader").join("\n")
}

/// The metric names an expression uses (`switchboard_*`, histogram and summary suffixes cut).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchboard_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The Grafana dashboard and the Prometheus alerts only use metrics a node serves: every name
/// they use is on `/metrics` of a node that has seen a little traffic (a connection that
/// opened and closed, a publish).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_served() {
    let server = serve();
    let url = format!("ws://{}/ws?token={}", server.addr, token("metrics-user"));
    let mut client = switchboard_testkit::connect_ws(&url, &[]).await.expect("connect");
    client.barrier().await;
    publish(&server.addr, r#"{"user":"metrics-user","type":"notification","payload":{"title":"hi"}}"#);
    client.close().await;
    let served = |body: &str| {
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(|n| ["_bucket", "_sum", "_count"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(n).to_owned())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let dashboard = std::fs::read_to_string(workspace_file("deploy/grafana/switchboard.json")).expect("dashboard");
    let alerts = std::fs::read_to_string(workspace_file("deploy/prometheus/alerts.yml")).expect("alerts");
    let used: std::collections::BTreeSet<String> =
        metric_names(&dashboard).into_iter().chain(metric_names(&alerts)).collect();
    assert!(used.len() >= 15, "names found: {used:?}");
    // The close above is counted once the node has handled it: wait for it on /metrics.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_request(&server.addr, "GET", "/metrics", "", "");
        assert_eq!(status, 200);
        let missing: Vec<&String> = used.iter().filter(|n| !served(&body).contains(*n)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "used by the dashboard or alerts, not on /metrics: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
