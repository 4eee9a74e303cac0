//! Any filter expression a client sends: compiling never panics, stays within its bounds, and
//! a compiled expression evaluates on a payload without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::filter::{Expression, MAX_EXPRESSION_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Expression::parse(text) {
        Ok(expression) => {
            assert!(text.len() <= MAX_EXPRESSION_BYTES);
            let payload = serde_json::json!({
                "severity": "high", "score": 91, "meta": {"tags": ["a", "b"], "n": 1e300}, "flag": true,
                "big": 18446744073709551615u64, "neg": -9007199254740993i64
            });
            let _ = expression.matches(&payload);
        }
        Err(e) => assert!(e.position <= text.len()),
    }
});
