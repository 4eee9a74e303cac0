//! Filters are evaluated per event per subscription on the fan-out path: a compiled expression
//! and a field filter must match a parsed payload without allocating. A counting allocator
//! proves it (counting this thread's allocations only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use serde_json::json;
use switchboard_protocol::filter::{Expression, FieldFilter, Filter};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is touched.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations_during(f: impl Fn()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn filters_match_without_allocating() {
    let payload = json!({
        "severity": "high", "score": 91, "region": "eu-west",
        "meta": {"tags": ["a", "b"], "source": {"asn": 64500}}, "big": 9007199254740993u64
    });
    let expressions = [
        r#"severity in ["critical","high"] && score >= 80"#,
        r#"(severity in ["critical","high"] && score >= 80 || meta.tags in ["x"]) && !(region == "us-east") && meta.source.asn != 64512"#,
        "big == 9007199254740993 && missing.path == 1 || score < 1.5",
    ];
    for text in expressions {
        let expression = Expression::parse(text).expect("valid");
        let n = allocations_during(|| {
            for _ in 0..1000 {
                std::hint::black_box(expression.matches(&payload));
            }
        });
        assert_eq!(n, 0, "`{text}` allocated {n} times in 1,000 evaluations");
    }
    let fields = json!({"severity": ["critical", "high"], "meta": 1});
    let filter = Filter::Fields(FieldFilter::from_json(fields.as_object().expect("object")).expect("valid"));
    let n = allocations_during(|| {
        for _ in 0..1000 {
            std::hint::black_box(filter.matches(Some(&payload)));
        }
    });
    assert_eq!(n, 0, "a field filter allocated {n} times in 1,000 evaluations");
    // The counter counts: building a filter does allocate.
    assert!(allocations_during(|| drop(Expression::parse("a == 1"))) > 0);
}
