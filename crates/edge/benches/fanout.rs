//! Encode + local fan-out, the dispatcher's whole job per event: decode nothing, encode once
//! per dialect, hand the same bytes to N connections' output (frame header, vectored write).
//! The sockets are [`Discard`] sinks: this isolates the node's own cost from the kernel's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_edge::connection::{ConnHandle, Discard, Selection};
use switchboard_edge::dispatch::Dispatcher;
use switchboard_edge::endpoint::EndpointRuntime;
use switchboard_edge::metrics::Metrics;
use switchboard_edge::registry::TopicRegistry;
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
    let endpoint =
        Arc::new(EndpointRuntime::new(config.endpoints.iter().find(|e| e.path == "/ws").expect("/ws").clone()));
    for n in [1_000usize, 10_000] {
        let registry = Arc::new(TopicRegistry::default());
        let dispatcher = Dispatcher::new(registry.clone(), Arc::new(Metrics::new()));
        let mut conns = Vec::with_capacity(n);
        for id in 0..n {
            let conn = Arc::new(ConnHandle::new(id as u64, endpoint.clone(), Selection::default(), Arc::new(Discard)));
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
