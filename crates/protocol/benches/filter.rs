//! What a brl filter costs per event per subscription: evaluating a compiled expression on a
//! payload already parsed (the edge parses each event's payload once per node, whatever the
//! number of filtered subscriptions).

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use switchboard_protocol::filter::Expression;

fn evaluation(c: &mut Criterion) {
    let payload = json!({
        "severity": "high", "score": 91, "region": "eu-west",
        "meta": {"tags": ["malware", "c2"], "source": {"asn": 13335}},
        "indicator": "203.0.113.7", "first_seen": 1_770_552_000_000u64
    });
    let cases = [
        ("simple", "score >= 80"),
        ("documented", r#"severity in ["critical","high"] && score >= 80"#),
        (
            "complex",
            r#"(severity in ["critical","high"] && score >= 80 || meta.tags in ["ransomware"]) && !(region == "us-east") && meta.source.asn != 64512"#,
        ),
    ];
    let mut group = c.benchmark_group("brl_filter");
    for (name, text) in cases {
        let expression = Expression::parse(text).expect("a valid expression");
        assert!(expression.matches(&payload), "{name} matches the sample");
        group.bench_function(name, |b| {
            b.iter(|| std::hint::black_box(&expression).matches(std::hint::black_box(&payload)))
        });
    }
    group.finish();
}

fn compilation(c: &mut Criterion) {
    let text =
        r#"(severity in ["critical","high"] && score >= 80 || meta.tags in ["ransomware"]) && !(region == "us-east")"#;
    c.bench_function("brl_filter/compile", |b| b.iter(|| Expression::parse(std::hint::black_box(text))));
}

criterion_group!(benches, evaluation, compilation);
criterion_main!(benches);
