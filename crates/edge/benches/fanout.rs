//! Encode + local fan-out, the dispatcher's whole job per event: decode nothing, encode once
//! per dialect, hand the same bytes to N connections' output (frame header, vectored write).
//! And the other shape of traffic, many small topics (one user stream per connection): an
//! event as the broker hands it over, decoded, looked up, encoded and written.
//! The sockets are [`Discard`] sinks: this isolates the node's own cost from the kernel's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_edge::internals::{
    ConnHandle, Discard, Dispatcher, EndpointRuntime, Metrics, Subscriptions, TopicRegistry,
};
use switchboard_edge::Config;
use switchboard_protocol::{DialectKind, Event};

fn event() -> Event {
    serde_json::from_str(
        r#"{"id":"evt_01JABCDEFGHJKMNPQRSTVWXYZ0","type":"status_update","channel":"status:load","ts":1770552000000,
            "payload":{"entity_type":"task","entity_id":"task-789","status":"completed"}}"#,
    )
    .expect("valid event")
}

fn bench(c: &mut Criterion) {
    let ev = event();
    let mut group = c.benchmark_group("fanout");
    for dialect in DialectKind::ALL {
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("encode", dialect.name()), |b| {
            b.iter(|| dialect.codec().encode_event(&ev, false))
        });
    }
    let config = Config::from_toml(switchboard_edge::config::DEFAULT_CONFIG_TOML).expect("default config");
    let endpoint = Arc::new(EndpointRuntime::new(config.endpoint("/ws").expect("/ws").clone()));
    for n in [1_000usize, 10_000] {
        let registry = Arc::new(TopicRegistry::default());
        let dispatcher = Dispatcher::new(registry.clone(), Arc::new(Metrics::new()));
        let mut conns = Vec::with_capacity(n);
        for id in 0..n {
            let mut subscriptions = Subscriptions::default();
            subscriptions.add_channel("c:status:load".into(), None);
            let conn =
                Arc::new(ConnHandle::new(id as u64, endpoint.clone(), None, subscriptions, Arc::new(Discard), None));
            registry.add("c:status:load", &conn);
            conns.push(conn);
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("encode_and_fan_out", n), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let delivered = dispatcher.fan_out("c:status:load", &ev);
                    spent += start.elapsed();
                    assert_eq!(delivered, n);
                }
                spent
            })
        });
    }
    group.finish();
    user_streams(c, &config);
    stamp(c);
    deflate(c);
}

/// permessage-deflate's cost per event (paid once per event and dialect on a node, whatever
/// the number of subscribers): a 2.2 KB JSON event of varied task records, at levels 1 and 6.
fn deflate(c: &mut Criterion) {
    let tasks: Vec<String> = (0..22u64)
        .map(|i| {
            let n = i.wrapping_mul(2_654_435_761) % 100_000_000;
            format!(
                r#"{{"id":"task_{n:08}","status":"{}","assignee":"usr_{:06}","progress":0.{:03},"updated_at":"2026-12-01T1{}:{:02}:00Z"}}"#,
                ["todo", "review", "done", "blocked"][(n % 4) as usize],
                n % 1_000_000,
                n % 1000,
                n % 10,
                n % 60
            )
        })
        .collect();
    let event = format!(
        r#"{{"type":"event","payload":{{"event_type":"project.updated","data":{{"tasks":[{}]}}}}}}"#,
        tasks.join(",")
    );
    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(event.len() as u64));
    for level in [1, 6] {
        group.bench_function(BenchmarkId::new("event_2k", level), |b| {
            b.iter(|| switchboard_wsframe::deflate::deflate(event.as_bytes(), level).expect("compresses"))
        });
    }
    group.finish();
}

/// The persistence worker's step per event: the ingest entry stamped with its position and the
/// one before it in the user's log.
/// `appended` is the publish API's compact entry; `reparsed` the same entry with a trailing
/// space, which takes the long way (parse, set, serialize), as every entry did before.
fn stamp(c: &mut Criterion) {
    let entry = r#"{"id":"evt_01JABCDEFGHJKMNPQRSTVW00042","type":"notification","user":"many-42","ts":1770552000000,"payload":{"t":1770552000000123}}"#;
    let id = switchboard_broker::LogId::parse("1770552000000-7").expect("a log id");
    let prev = switchboard_broker::LogId::parse("1770551999000-3").expect("a log id");
    let mut group = c.benchmark_group("worker_stamp");
    group.throughput(Throughput::Elements(1));
    for (name, body) in [("appended", entry.to_string()), ("reparsed", format!("{entry} "))] {
        group.bench_function(name, |b| b.iter(|| switchboard_worker::stamp(id, prev, body.as_bytes())));
    }
    group.finish();
}

/// 19,000 connections on `/ws/notifications`, each on its own user stream; every event comes
/// from the broker as JSON for one of them, in a scattered order (as `sb-load many` sends).
fn user_streams(c: &mut Criterion, config: &Config) {
    const USERS: usize = 19_000;
    let endpoint = Arc::new(EndpointRuntime::new(config.endpoint("/ws/notifications").expect("endpoint").clone()));
    let registry = Arc::new(TopicRegistry::default());
    let dispatcher = Dispatcher::new(registry.clone(), Arc::new(Metrics::new()));
    let mut conns = Vec::with_capacity(USERS);
    for id in 0..USERS {
        let conn = Arc::new(ConnHandle::new(
            id as u64,
            endpoint.clone(),
            None,
            Subscriptions::default(),
            Arc::new(Discard),
            None,
        ));
        registry.add(format!("u:many-{id}"), &conn);
        conns.push(conn);
    }
    let messages: Vec<(String, Bytes)> = (0..USERS)
        .map(|i| (i * 7919) % USERS)
        .map(|u| {
            let json = format!(
                r#"{{"id":"evt_01JABCDEFGHJKMNPQRSTVW{u:05}","type":"notification","user":"many-{u}","ts":1770552000000,"payload":{{"t":1770552000000123}}}}"#
            );
            (format!("u:many-{u}"), Bytes::from(json))
        })
        .collect();
    let mut group = c.benchmark_group("user_streams");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("decode_look_up_encode_write", USERS), |b| {
        let mut next = messages.iter().cycle();
        b.iter(|| {
            let (topic, message) = next.next().expect("cycles forever");
            dispatcher.deliver(topic, message.clone());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
