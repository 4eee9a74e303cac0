//! Properties of the brl filter language, over generated expressions and payloads: what the
//! compiled expression decides is what the expression means (checked against a reference
//! interpreter of the generated syntax tree), and no input makes the parser panic or report a
//! position outside the text.

use proptest::prelude::*;
use serde_json::{json, Value};
use switchboard_protocol::filter::Expression;

/// The generated syntax, rendered to text and interpreted directly.
#[derive(Debug, Clone)]
enum Ast {
    NumCmp(&'static str, i64),
    StrEq(bool, &'static str),
    In(Vec<&'static str>),
    Flag,
    Not(Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Or(Box<Ast>, Box<Ast>),
}

const WORDS: [&str; 4] = ["critical", "high", "low", "x y"];

impl Ast {
    fn text(&self) -> String {
        match self {
            Ast::NumCmp(op, n) => format!("score {op} {n}"),
            Ast::StrEq(eq, s) => format!("meta.severity {} \"{s}\"", if *eq { "==" } else { "!=" }),
            Ast::In(list) => {
                let items: Vec<String> = list.iter().map(|s| format!("\"{s}\"")).collect();
                format!("meta.severity in [{}]", items.join(", "))
            }
            Ast::Flag => "urgent".to_owned(),
            Ast::Not(a) => format!("!({})", a.text()),
            Ast::And(a, b) => format!("({}) && ({})", a.text(), b.text()),
            Ast::Or(a, b) => format!("({}) || ({})", a.text(), b.text()),
        }
    }

    /// The meaning the language documents: a comparison with a missing field is false.
    fn eval(&self, score: Option<i64>, severity: Option<&str>, urgent: Option<bool>) -> bool {
        match self {
            Ast::NumCmp(op, n) => score.is_some_and(|s| match *op {
                "==" => s == *n,
                "!=" => s != *n,
                "<" => s < *n,
                "<=" => s <= *n,
                ">" => s > *n,
                _ => s >= *n,
            }),
            Ast::StrEq(eq, s) => severity.is_some_and(|v| (v == *s) == *eq),
            Ast::In(list) => severity.is_some_and(|v| list.contains(&v)),
            Ast::Flag => urgent == Some(true),
            Ast::Not(a) => !a.eval(score, severity, urgent),
            Ast::And(a, b) => a.eval(score, severity, urgent) && b.eval(score, severity, urgent),
            Ast::Or(a, b) => a.eval(score, severity, urgent) || b.eval(score, severity, urgent),
        }
    }
}

fn ast() -> impl Strategy<Value = Ast> {
    let leaf = prop_oneof![
        (prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]), -5i64..5).prop_map(|(op, n)| Ast::NumCmp(op, n)),
        (any::<bool>(), prop::sample::select(WORDS.to_vec())).prop_map(|(eq, s)| Ast::StrEq(eq, s)),
        prop::collection::vec(prop::sample::select(WORDS.to_vec()), 1..4).prop_map(Ast::In),
        Just(Ast::Flag),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| Ast::Not(Box::new(a))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Ast::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Ast::Or(Box::new(a), Box::new(b))),
        ]
    })
}

fn payload(score: Option<i64>, severity: Option<&str>, urgent: Option<bool>) -> Value {
    let mut p = json!({});
    if let Some(s) = score {
        p["score"] = json!(s);
    }
    if let Some(s) = severity {
        p["meta"] = json!({"severity": s});
    }
    if let Some(u) = urgent {
        p["urgent"] = json!(u);
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_compiled_expression_decides_what_it_says(
        ast in ast(),
        score in prop::option::of(-6i64..6),
        severity in prop::option::of(prop::sample::select(WORDS.to_vec())),
        urgent in prop::option::of(any::<bool>()),
    ) {
        let text = ast.text();
        let compiled = Expression::parse(&text).map_err(|e| TestCaseError::fail(format!("`{text}`: {e}")))?;
        let want = ast.eval(score, severity, urgent);
        prop_assert_eq!(compiled.matches(&payload(score, severity, urgent)), want, "`{}`", text);
    }

    #[test]
    fn no_input_makes_the_parser_panic(text in ".{0,300}") {
        if let Err(e) = Expression::parse(&text) {
            prop_assert!(e.position <= text.len(), "position {} past the end of {:?}", e.position, text);
        }
    }

    #[test]
    fn expression_like_noise_is_refused_or_compiled_never_a_panic(
        parts in prop::collection::vec(prop::sample::select(vec![
            "score", ">=", "80", "&&", "||", "!", "(", ")", "in", "[", "]", ",", "\"high\"", "meta.x", "==", "true", "null",
            "1e400", "-0", "99999999999999999999999",
        ]), 0..40),
    ) {
        let text = parts.join(" ");
        if let Err(e) = Expression::parse(&text) {
            prop_assert!(e.position <= text.len());
        }
    }
}
