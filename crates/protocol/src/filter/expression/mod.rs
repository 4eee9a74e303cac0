//! The filter expression language of the binary dialect, evaluated on the JSON payload:
//!
//! ```text
//! severity in ["critical", "high"] && score >= 80
//! !(region == "eu") || meta.tags in ["urgent"]
//! ```
//!
//! Comparisons `== != < <= > >=` of a dotted field path with a string, number, boolean or
//! `null` literal; `path in [literal, ...]`; a bare path (true when the field is `true`);
//! `true`/`false`; `!`, `&&` (binds tighter), `||`, parentheses. Semantics a subscriber can rely
//! on: a comparison with a missing field is false (`!=` included); `==`/`!=` compare JSON values
//! with numbers compared exactly; ordering compares numbers with numbers and strings with
//! strings (byte order) and is false across types; `in` on an array field is true when any
//! element is in the list.
//!
//! A client controls the expression, so everything is bounded: its length
//! ([`MAX_EXPRESSION_BYTES`]), nesting ([`MAX_DEPTH`]), number of comparisons ([`MAX_TERMS`]) and
//! list length ([`MAX_LIST`]). Parsing is recursive descent bounded by the depth; evaluation
//! walks the compiled tree without allocating.

mod parse;

use std::cmp::Ordering;

use serde_json::Value;

use super::number::Num;

pub use parse::FilterSyntaxError;

/// Longest accepted expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 1024;
/// Deepest nesting of parentheses and `!`.
pub const MAX_DEPTH: usize = 16;
/// Most comparisons (and bare paths) in one expression.
pub const MAX_TERMS: usize = 64;
/// Most literals in one `in [...]` list.
pub const MAX_LIST: usize = 64;

/// A compiled filter expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    root: Node,
    /// The text it was compiled from (a client re-sends it).
    source: Box<str>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Const(bool),
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Compare { path: Path, op: Op, value: Literal },
    In { path: Path, values: Vec<Literal> },
    Truthy(Path),
}

/// A dotted field path, split once at compile time.
#[derive(Debug, Clone, PartialEq)]
struct Path(Vec<String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(Num),
    Bool(bool),
    Null,
}

impl Expression {
    /// Compiles an expression, or says what is wrong and at which byte.
    pub fn parse(text: &str) -> Result<Expression, FilterSyntaxError> {
        parse::parse(text).map(|root| Expression { root, source: text.into() })
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether a payload satisfies the expression.
    pub fn matches(&self, payload: &Value) -> bool {
        self.root.eval(payload)
    }
}

impl Node {
    fn eval(&self, payload: &Value) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::Or(terms) => terms.iter().any(|t| t.eval(payload)),
            Node::And(terms) => terms.iter().all(|t| t.eval(payload)),
            Node::Not(inner) => !inner.eval(payload),
            Node::Truthy(path) => path.find(payload) == Some(&Value::Bool(true)),
            Node::Compare { path, op, value } => path.find(payload).is_some_and(|field| compare(field, *op, value)),
            Node::In { path, values } => match path.find(payload) {
                Some(Value::Array(items)) => items.iter().any(|item| values.iter().any(|v| equals(item, v))),
                Some(field) => values.iter().any(|v| equals(field, v)),
                None => false,
            },
        }
    }
}

impl Path {
    fn find<'v>(&self, payload: &'v Value) -> Option<&'v Value> {
        super::lookup_path(payload, self.0.iter().map(String::as_str))
    }
}

fn equals(field: &Value, literal: &Literal) -> bool {
    order(field, literal) == Some(Ordering::Equal)
}

/// How a field compares with a literal of the same kind; `None` across kinds (or with a NaN).
fn order(field: &Value, literal: &Literal) -> Option<Ordering> {
    match (field, literal) {
        (Value::String(a), Literal::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Number(a), Literal::Num(b)) => Num::of(a).compare(*b),
        (Value::Bool(a), Literal::Bool(b)) => (a == b).then_some(Ordering::Equal),
        (Value::Null, Literal::Null) => Some(Ordering::Equal),
        _ => None,
    }
}

fn compare(field: &Value, op: Op, literal: &Literal) -> bool {
    let ordering = order(field, literal);
    match op {
        Op::Eq => ordering == Some(Ordering::Equal),
        Op::Ne => ordering != Some(Ordering::Equal),
        // Ordering is defined for numbers and strings only.
        _ if !matches!(literal, Literal::Str(_) | Literal::Num(_)) => false,
        Op::Lt => ordering == Some(Ordering::Less),
        Op::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        Op::Gt => ordering == Some(Ordering::Greater),
        Op::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expr: &str, payload: Value) -> bool {
        Expression::parse(expr).unwrap_or_else(|e| panic!("`{expr}`: {e}")).matches(&payload)
    }

    #[test]
    fn the_documented_example() {
        let e = r#"severity in ["critical","high"] && score >= 80"#;
        assert!(eval(e, json!({"severity": "critical", "score": 80})));
        assert!(eval(e, json!({"severity": "high", "score": 99.5})));
        assert!(!eval(e, json!({"severity": "high", "score": 79})));
        assert!(!eval(e, json!({"severity": "low", "score": 100})));
        assert!(!eval(e, json!({"score": 100})));
    }

    #[test]
    fn operators_precedence_and_grouping() {
        let p = json!({"a": 1, "b": "x", "c": true, "meta": {"region": "eu", "tags": ["t1", "t2"]}});
        for (expr, want) in [
            ("a == 1 || a == 2 && b == \"y\"", true),
            ("(a == 1 || a == 2) && b == \"y\"", false),
            ("!(a == 1)", false),
            ("!!c", true),
            ("c && meta.region == \"eu\"", true),
            ("meta.tags in [\"t2\"]", true),
            ("meta.tags in [\"t3\", \"t4\"]", false),
            ("a != 2 && a < 2 && a <= 1 && a > 0 && a >= 1", true),
            ("b < \"y\" && b >= \"x\"", true),
            ("missing != 1", false),
            ("!(missing == 1)", true),
            ("b == 1", false),
            ("b != 1", true),
            ("b > 1", false),
            ("c == true && c != false", true),
            ("meta.none == null || a == null", false),
            ("true && !false", true),
            ("a in [1, 2.5, \"1\"]", true),
        ] {
            assert_eq!(eval(expr, p.clone()), want, "`{expr}`");
        }
        assert!(eval("x == null", json!({"x": null})));
        assert!(eval("s == \"q\\\"\\u00e9\"", json!({"s": "q\"é"})));
    }

    #[test]
    fn numbers_compare_exactly() {
        assert!(eval("id == 9007199254740993", json!({"id": 9007199254740993u64})));
        assert!(!eval("id == 9007199254740992", json!({"id": 9007199254740993u64})));
        assert!(eval("x > -1.5e0 && x < 1e3", json!({"x": -1})));
        assert!(eval("big > 18446744073709551614", json!({"big": 18446744073709551615u64})));
    }
}
