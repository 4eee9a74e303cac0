//! Server-side filters: which events of a subscription a client receives, decided on the edge
//! from the event's JSON payload.
//!
//! A subscription carries at most one [`Filter`], in one of two languages: the field map of the
//! JSON dialects (`{"severity": ["critical","high"]}`, [`FieldFilter`]) and the expression
//! language of the binary dialect (`severity in ["critical","high"] && score >= 80`,
//! [`Expression`]). Both are compiled once when the client subscribes, bounded in size, and
//! evaluated per event against the payload parsed once per event per node, without allocating.

mod expression;
mod fields;
mod number;

use serde_json::Value;

pub use expression::{Expression, FilterSyntaxError, MAX_DEPTH, MAX_EXPRESSION_BYTES, MAX_LIST, MAX_TERMS};
pub use fields::{FieldFilter, MAX_FILTER_FIELDS, MAX_FILTER_VALUES};

/// A compiled filter of one subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// "Field is one of these values", for every listed field.
    Fields(FieldFilter),
    /// A boolean expression over payload fields.
    Expression(Expression),
}

impl Filter {
    /// Whether an event payload passes. A payload that is not JSON (`None`) passes no filter.
    pub fn matches(&self, payload: Option<&Value>) -> bool {
        let Some(payload) = payload else { return false };
        match self {
            Filter::Fields(f) => f.matches(payload),
            Filter::Expression(e) => e.matches(payload),
        }
    }
}

/// Looks up a dotted path (`meta.region`) in a JSON value, one object key per segment.
fn lookup_path<'v, 's>(value: &'v Value, segments: impl IntoIterator<Item = &'s str>) -> Option<&'v Value> {
    segments.into_iter().try_fold(value, |v, seg| v.get(seg))
}
