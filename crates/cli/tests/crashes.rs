//! Crashes with live traffic, over real processes and a real Redis: an edge killed with
//! SIGKILL while a back end keeps publishing persistent events to the users connected through
//! it. Its clients (the client crate: backoff, resume with `last_event_id`, deduplication)
//! reconnect to the surviving edge, and every event whose publish was acknowledged arrives,
//! once, in order. And Redis killed with SIGKILL while persistent events are published, on
//! the durability setting the README recommends (`appendfsync always`): every event whose
//! publish was acknowledged is in the user's log after the restart.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{edge, worker};
use serde_json::json;
use switchboard_client::{Client, ClientConfig, ClientEvent, Dialect};
use switchboard_testkit::process::http_post;
use switchboard_testkit::redis::RedisServer;
use switchboard_testkit::{token_with, ADMIN, WAIT};

async fn next(client: &mut Client) -> ClientEvent {
    tokio::time::timeout(WAIT, client.next()).await.expect("client event in time").expect("client running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_under_traffic_loses_no_acknowledged_persistent_event() {
    const USERS: usize = 6;
    let redis = RedisServer::start();
    let mut a = edge(&redis.url(), false);
    let b = edge(&redis.url(), false);
    let _worker = worker(&redis.url(), false);
    let url = |n: &switchboard_testkit::process::NodeProcess| format!("ws://{}/ws/notifications", n.addr);
    let mut clients = Vec::new();
    for i in 0..USERS {
        // Every client starts on edge A (the first URL) and moves to B when A goes.
        let config = ClientConfig::new(
            Dialect::Orbnet,
            vec![url(&a), url(&b)],
            token_with(&format!("crash-{i}"), Default::default()),
        )
        .subscribe_to(&["notification"])
        .backoff(Duration::from_millis(50), Duration::from_millis(300));
        let mut client = Client::start(config);
        assert_eq!(next(&mut client).await, ClientEvent::Connected(url(&a)));
        loop {
            if let ClientEvent::Control(v) = next(&mut client).await {
                if v["type"] == "replay_complete" {
                    break;
                }
            }
        }
        clients.push(client);
    }

    // A back end publishes through edge B, one persistent event at a time, numbering each
    // user's events in the order they are acknowledged.
    let acknowledged: Arc<Mutex<HashMap<usize, Vec<u64>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (addr, acknowledged, stop) = (b.addr.clone(), acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next_n = [0u64; USERS];
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) {
                let user = k % USERS;
                k += 1;
                let n = next_n[user];
                let body = json!({"user": format!("crash-{user}"), "type": "notification", "payload": {"n": n}});
                let (status, _) = http_post(&addr, "/v1/publish", ADMIN, &body.to_string());
                if status == 200 {
                    acknowledged.lock().expect("lock").entry(user).or_default().push(n);
                    next_n[user] += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    publisher.join().expect("publisher");

    let acknowledged = acknowledged.lock().expect("lock").clone();
    for (i, client) in clients.iter_mut().enumerate() {
        let expected = acknowledged.get(&i).cloned().unwrap_or_default();
        assert!(expected.len() > 20, "user {i}: only {} events published", expected.len());
        let mut got = Vec::new();
        let mut moved = false;
        while got.len() < expected.len() {
            match next(client).await {
                ClientEvent::Event(v) => got.push(v["payload"]["n"].as_u64().expect("n")),
                ClientEvent::Connected(u) => {
                    assert_eq!(u, url(&b), "user {i} reconnected to the surviving edge");
                    moved = true;
                }
                ClientEvent::Disconnected(_) | ClientEvent::Control(_) | ClientEvent::ConnectFailed { .. } => {}
            }
        }
        assert!(moved, "user {i} never left the killed edge");
        assert_eq!(got, expected, "user {i}: every acknowledged event once, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_publish_with_aof_always_keeps_every_acknowledged_event() {
    let mut redis = RedisServer::start_durable();
    let a = edge(&redis.url(), false);
    let _worker = worker(&redis.url(), false);
    // Each attempt has its own number: an attempt that failed may still have been stored.
    let acknowledged: Arc<Mutex<Vec<u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (addr, acknowledged, stop) = (a.addr.clone(), acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut attempt = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let body = json!({"user": "durable", "type": "notification", "payload": {"n": attempt}});
                if http_post(&addr, "/v1/publish", ADMIN, &body.to_string()).0 == 200 {
                    acknowledged.lock().expect("lock").push(attempt);
                }
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    publisher.join().expect("publisher");
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > 50, "only {} acknowledged", acknowledged.len());

    // A first connection replays the user's log: every acknowledged event, in publish order.
    common::wait_until("the worker to store every acknowledged event", || {
        redis.cli(&["XLEN", "events:durable"]).trim().parse::<usize>().unwrap_or(0) >= acknowledged.len()
    })
    .await;
    let token = token_with("durable", Default::default());
    let mut c = switchboard_testkit::connect_ws(&format!("ws://{}/ws/notifications?token={token}", a.addr), &[])
        .await
        .expect("connect");
    let mut replayed = Vec::new();
    loop {
        let m = c.json().await;
        if m["type"] == "replay_complete" {
            assert_eq!(m["truncated"], false, "{m}");
            break;
        }
        if let Some(n) = m["payload"]["n"].as_u64() {
            replayed.push(n);
        }
    }
    assert!(replayed.windows(2).all(|w| w[0] < w[1]), "in publish order: {replayed:?}");
    let missing: Vec<u64> = acknowledged.iter().filter(|n| !replayed.contains(n)).copied().collect();
    assert!(missing.is_empty(), "acknowledged but lost in the crash: {missing:?}");
}
