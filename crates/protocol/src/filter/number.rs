//! Exact comparison of JSON numbers: integers are compared as integers (so `9007199254740993`
//! and `9007199254740992` stay different, which they would not as `f64`), and an integer is
//! compared with a fraction without rounding either.

use std::cmp::Ordering;

use serde_json::Number;

/// A number as a filter compares it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    /// Any integer a JSON payload can hold (`i64` or `u64`).
    Int(i128),
    /// Everything else.
    Float(f64),
}

impl Num {
    /// The comparable form of a parsed JSON number.
    pub(crate) fn of(n: &Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::Int(i128::from(i))
        } else if let Some(u) = n.as_u64() {
            Num::Int(i128::from(u))
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// Total order where one exists; `None` only when a NaN is involved.
    pub(crate) fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
            (Num::Int(a), Num::Float(b)) => int_vs_float(a, b),
            (Num::Float(a), Num::Int(b)) => int_vs_float(b, a).map(Ordering::reverse),
        }
    }
}

/// Compares an integer with a float exactly.
fn int_vs_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // Beyond ±2^100 every JSON integer (at most 2^64 in magnitude) is on one side.
    const BOUND: f64 = 1.267_650_600_228_229_4e30; // 2^100
    if f >= BOUND {
        return Some(Ordering::Less);
    }
    if f <= -BOUND {
        return Some(Ordering::Greater);
    }
    // floor(f) is an integer that f64 holds exactly and that fits i128 here.
    let whole = f.floor();
    match i.cmp(&(whole as i128)) {
        Ordering::Equal if f > whole => Some(Ordering::Less),
        order => Some(order),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Num {
        Num::of(&serde_json::from_str::<Number>(text).expect("a number"))
    }

    #[test]
    fn integers_beyond_f64_precision_stay_distinct() {
        assert_eq!(n("9007199254740993").compare(n("9007199254740992")), Some(Ordering::Greater));
        assert_eq!(n("18446744073709551615").compare(n("18446744073709551614")), Some(Ordering::Greater));
        assert_eq!(n("-9223372036854775808").compare(n("-9223372036854775807")), Some(Ordering::Less));
    }

    #[test]
    fn integers_and_fractions_compare_without_rounding() {
        assert_eq!(n("80").compare(n("80.0")), Some(Ordering::Equal));
        assert_eq!(n("80").compare(n("79.5")), Some(Ordering::Greater));
        assert_eq!(n("80").compare(n("80.5")), Some(Ordering::Less));
        assert_eq!(n("-3").compare(n("-2.5")), Some(Ordering::Less));
        assert_eq!(n("9007199254740993").compare(n("9007199254740992.0")), Some(Ordering::Greater));
        assert_eq!(n("1e300").compare(n("5")), Some(Ordering::Greater));
        assert_eq!(n("5").compare(n("-1e300")), Some(Ordering::Greater));
    }
}
