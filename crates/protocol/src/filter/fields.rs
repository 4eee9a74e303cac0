//! Field filters: the JSON dialects' `"filters": {"severity": ["critical","high"], "categories": ["malware"]}`.
//!
//! Each entry names a payload field and the values it may take; an event passes when every
//! entry matches. A list-valued payload field matches when any of its elements is allowed.
//! Filters are evaluated on the edge, per subscription, so clients receive only what they asked
//! for. The documents filter `categories` on events whose field is `category`; a plural key that
//! is absent from the payload is therefore also looked up in its singular form.

use serde_json::{Map, Value};

use super::number::Num;
use crate::error::{ClientError, ErrorKind};

/// Most entries one filter may have: filters run per event per subscriber, so they stay small.
pub const MAX_FILTER_FIELDS: usize = 16;
/// Most allowed values per entry.
pub const MAX_FILTER_VALUES: usize = 64;

/// A conjunction of "field is one of these values" tests.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldFilter {
    fields: Vec<(String, Vec<Value>)>,
}

impl FieldFilter {
    /// Builds a filter from the JSON object a client sent. Values may be scalars or lists of
    /// scalars; anything else is an `InvalidRequest`.
    pub fn from_json(obj: &Map<String, Value>) -> Result<Self, ClientError> {
        if obj.len() > MAX_FILTER_FIELDS {
            return Err(invalid(format!("at most {MAX_FILTER_FIELDS} filter fields")));
        }
        let mut fields = Vec::with_capacity(obj.len());
        for (key, value) in obj {
            let allowed = match value {
                Value::Array(items) => items.clone(),
                scalar => vec![scalar.clone()],
            };
            if allowed.len() > MAX_FILTER_VALUES {
                return Err(invalid(format!("filter `{key}` has more than {MAX_FILTER_VALUES} values")));
            }
            if allowed.iter().any(|v| v.is_array() || v.is_object()) {
                return Err(invalid(format!("filter `{key}` values must be strings, numbers or booleans")));
            }
            fields.push((key.clone(), allowed));
        }
        Ok(FieldFilter { fields })
    }

    /// The JSON object form a client sends (every entry as a list), for clients that encode
    /// subscriptions: `from_json(&f.to_json())` gives `f` back.
    pub fn to_json(&self) -> Map<String, Value> {
        self.fields.iter().map(|(k, v)| (k.clone(), Value::Array(v.clone()))).collect()
    }

    /// True when the filter has no entries (everything passes).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether an event payload passes this filter.
    pub fn matches(&self, payload: &Value) -> bool {
        self.fields.iter().all(|(key, allowed)| match lookup(payload, key) {
            Some(Value::Array(items)) => items.iter().any(|item| contains(allowed, item)),
            Some(v) => contains(allowed, v),
            None => false,
        })
    }
}

fn invalid(message: String) -> ClientError {
    ClientError::new(ErrorKind::InvalidRequest, message)
}

/// Finds `key` (a dotted path) in the payload, falling back to the singular of a plural last
/// segment (`categories` → `category`, `tags` → `tag`).
fn lookup<'v>(payload: &'v Value, key: &str) -> Option<&'v Value> {
    if let Some(v) = path(payload, key) {
        return Some(v);
    }
    let singular = if let Some(stem) = key.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = key.strip_suffix('s') {
        stem.to_owned()
    } else {
        return None;
    };
    path(payload, &singular)
}

fn path<'v>(payload: &'v Value, dotted: &str) -> Option<&'v Value> {
    if let Some(v) = payload.get(dotted) {
        return Some(v);
    }
    super::lookup_path(payload, dotted.split('.'))
}

fn contains(allowed: &[Value], v: &Value) -> bool {
    allowed.iter().any(|a| match (a, v) {
        (Value::Number(x), Value::Number(y)) => Num::of(x).compare(Num::of(y)) == Some(std::cmp::Ordering::Equal),
        _ => a == v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> FieldFilter {
        FieldFilter::from_json(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn severity_and_category_as_in_the_threat_stream_example() {
        let f = filter(json!({"severity": ["critical", "high"], "categories": ["malware", "phishing", "c2"]}));
        assert!(f.matches(&json!({"severity": "critical", "category": "malware"})));
        assert!(f.matches(&json!({"severity": "high", "categories": ["spam", "c2"]})));
        assert!(!f.matches(&json!({"severity": "low", "category": "malware"})));
        assert!(!f.matches(&json!({"severity": "high", "category": "spam"})));
        assert!(!f.matches(&json!({"severity": "high"})));
    }

    #[test]
    fn scalars_numbers_and_dotted_paths() {
        let f = filter(json!({"score": 90, "meta.region": "eu"}));
        assert!(f.matches(&json!({"score": 90.0, "meta": {"region": "eu"}})));
        assert!(!f.matches(&json!({"score": 89, "meta": {"region": "eu"}})));
        let big = filter(json!({"id": 9007199254740993u64}));
        assert!(big.matches(&json!({"id": 9007199254740993u64})));
        assert!(!big.matches(&json!({"id": 9007199254740992u64})), "no rounding through f64");
    }

    #[test]
    fn rejects_nested_values_and_oversized_filters() {
        let bad = json!({"a": [{"x": 1}]});
        assert!(FieldFilter::from_json(bad.as_object().unwrap()).is_err());
        let many: Map<String, Value> = (0..40).map(|i| (format!("f{i}"), json!(1))).collect();
        assert!(FieldFilter::from_json(&many).is_err());
    }
}
