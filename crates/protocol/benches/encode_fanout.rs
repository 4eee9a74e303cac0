//! Encode one event per dialect and hand the shared bytes to N subscribers, as the edge's
//! dispatcher does: the cost that must stay flat as fan-out grows.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_protocol::{DialectKind, Event};

fn event() -> Event {
    serde_json::from_str(
        r#"{"id":"evt_01JABCDEFGHJKMNPQRSTVWXYZ0","type":"notification","user":"alice","ts":1770552000000,
            "payload":{"title":"Subscription Renewed","message":"Your plan was renewed.","n":1}}"#,
    )
    .expect("valid event")
}

fn bench(c: &mut Criterion) {
    let ev = event();
    let mut group = c.benchmark_group("encode_fanout");
    for dialect in DialectKind::ALL {
        group.bench_function(BenchmarkId::new("encode", dialect.name()), |b| {
            b.iter(|| dialect.codec().encode_event(&ev, false))
        });
    }
    for n in [1_000usize, 10_000] {
        let (tx, _rx) = std::sync::mpsc::sync_channel::<Bytes>(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("encode_once_share", n), |b| {
            b.iter(|| {
                let frame = DialectKind::Orbnet.codec().encode_event(&ev, false);
                let mut queues: Vec<Vec<Bytes>> = Vec::new();
                queues.resize_with(n, || Vec::with_capacity(1));
                for q in &mut queues {
                    q.push(frame.clone());
                }
                let _ = tx.try_send(frame);
                queues
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
