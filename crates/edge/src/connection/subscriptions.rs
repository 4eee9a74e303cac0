//! What one connection receives from the topics it is registered on: its subscriptions, each
//! with an optional filter, read by the fan-out for every event.
//!
//! A connection hears two kinds of topic. Its own streams (its user's events, the endpoint's
//! broadcast channel) carry every event type; dialects that let clients pick types subscribe
//! to types there, each type with its filter. Channels it subscribed to by name carry that
//! channel's events, filtered per subscription; one connection may hold several subscriptions
//! to one channel (with different filters), and an event passes if any of them lets it.
//! Filters are shared (`Arc`), so subscribing many types with one filter stores it once.

use std::sync::Arc;

use serde_json::Value;
use switchboard_broker::Topic;
use switchboard_protocol::{Event, Filter};

/// A connection's subscriptions.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Event types chosen on the connection's own streams; `None`: every type passes.
    types: Option<Vec<TypeChoice>>,
    /// Channel subscriptions, by broker topic.
    channels: Vec<ChannelSubscription>,
}

#[derive(Debug)]
struct TypeChoice {
    kind: String,
    filter: Option<Arc<Filter>>,
}

#[derive(Debug)]
struct ChannelSubscription {
    topic: Topic,
    filter: Option<Arc<Filter>>,
}

/// An event's payload parsed on first need and shared by every subscriber of one fan-out.
#[derive(Default)]
pub struct LazyPayload(Option<Option<Value>>);

impl LazyPayload {
    /// The parsed payload (`None` if it is not JSON, e.g. raw bytes).
    pub fn get(&mut self, event: &Event) -> Option<&Value> {
        self.0.get_or_insert_with(|| event.payload_value()).as_ref()
    }
}

fn passes(filter: &Option<Arc<Filter>>, event: &Event, payload: &mut LazyPayload) -> bool {
    filter.as_ref().is_none_or(|f| f.matches(payload.get(event)))
}

impl Subscriptions {
    /// Subscriptions of a connection that receives nothing from its own streams until it
    /// picks event types.
    pub fn opt_in() -> Subscriptions {
        Subscriptions { types: Some(Vec::new()), channels: Vec::new() }
    }

    /// Whether `event`, which arrived on `topic`, is for this connection. `own_stream` says
    /// whether the topic is one of the connection's own streams; a channel subscription to the
    /// same topic takes precedence.
    pub fn selects(&self, topic: &str, own_stream: bool, event: &Event, payload: &mut LazyPayload) -> bool {
        let mut subscribed = false;
        for sub in self.channels.iter().filter(|s| &*s.topic == topic) {
            if passes(&sub.filter, event, payload) {
                return true;
            }
            subscribed = true;
        }
        if subscribed || !own_stream {
            return false;
        }
        match &self.types {
            None => true,
            Some(choices) => {
                choices.iter().find(|c| c.kind == event.kind).is_some_and(|c| passes(&c.filter, event, payload))
            }
        }
    }

    /// Receives `kinds` on the own streams, with `filter` (replacing an earlier choice of the
    /// same type).
    pub fn choose_types(&mut self, kinds: Vec<String>, filter: Option<Arc<Filter>>) {
        let choices = self.types.get_or_insert_with(Vec::new);
        for kind in kinds {
            match choices.iter_mut().find(|c| c.kind == kind) {
                Some(existing) => existing.filter = filter.clone(),
                None => {
                    choices.reserve_exact(1);
                    choices.push(TypeChoice { kind, filter: filter.clone() });
                }
            }
        }
    }

    /// Stops receiving `kinds` on the own streams.
    pub fn drop_types(&mut self, kinds: &[String]) {
        if let Some(choices) = self.types.as_mut() {
            choices.retain(|c| !kinds.contains(&c.kind));
        }
    }

    /// Adds a channel subscription; the same topic with an equal filter is not added twice.
    /// Returns false in that case.
    pub fn add_channel(&mut self, topic: Topic, filter: Option<Arc<Filter>>) -> bool {
        if self.contains(&topic, filter.as_deref()) {
            return false;
        }
        self.channels.reserve_exact(1);
        self.channels.push(ChannelSubscription { topic, filter });
        true
    }

    /// Removes every subscription to `topic`; returns how many there were.
    pub fn remove_channel(&mut self, topic: &str) -> usize {
        let before = self.channels.len();
        self.channels.retain(|s| &*s.topic != topic);
        before - self.channels.len()
    }

    /// Whether these subscriptions filter nothing: every type on the own streams, no filter on
    /// any channel subscription.
    pub fn is_plain(&self) -> bool {
        self.types.is_none() && self.channels.iter().all(|s| s.filter.is_none())
    }

    /// Whether a subscription to `topic` with exactly this filter exists.
    pub fn contains(&self, topic: &str, filter: Option<&Filter>) -> bool {
        self.channels.iter().any(|s| &*s.topic == topic && s.filter.as_deref() == filter)
    }

    /// Whether any subscription is to `topic`.
    pub fn has_channel(&self, topic: &str) -> bool {
        self.channels.iter().any(|s| &*s.topic == topic)
    }

    /// Number of channel subscriptions (the endpoint's `max_subscriptions` bounds it).
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_protocol::FieldFilter;

    use super::*;

    fn event(kind: &str, payload: Value) -> Event {
        serde_json::from_value(json!({"id": "e", "type": kind, "ts": 0, "payload": payload})).expect("an event")
    }

    fn fields(v: Value) -> Option<Arc<Filter>> {
        Some(Arc::new(Filter::Fields(FieldFilter::from_json(v.as_object().expect("object")).expect("valid"))))
    }

    fn selects(s: &Subscriptions, topic: &str, own: bool, e: &Event) -> bool {
        s.selects(topic, own, e, &mut LazyPayload::default())
    }

    #[test]
    fn own_streams_carry_every_type_until_types_are_chosen() {
        let mut s = Subscriptions::default();
        let alert = event("alert", json!({"severity": "low"}));
        assert!(selects(&s, "u:alice", true, &alert));
        assert!(!selects(&s, "c:elsewhere", false, &alert), "not subscribed, not an own stream");
        s.choose_types(vec!["notification".into()], None);
        assert!(!selects(&s, "u:alice", true, &alert));
        s.choose_types(vec!["alert".into()], fields(json!({"severity": ["critical"]})));
        assert!(!selects(&s, "u:alice", true, &alert), "filtered out");
        assert!(selects(&s, "u:alice", true, &event("alert", json!({"severity": "critical"}))));
        s.choose_types(vec!["alert".into()], None);
        assert!(selects(&s, "u:alice", true, &alert), "a later choice of the type replaces its filter");
        s.drop_types(&["alert".into()]);
        assert!(!selects(&s, "u:alice", true, &alert));
        assert!(!selects(&Subscriptions::opt_in(), "u:alice", true, &alert), "opt-in: nothing until chosen");
    }

    #[test]
    fn channel_subscriptions_pass_an_event_if_any_filter_lets_it() {
        let mut s = Subscriptions::default();
        assert!(s.add_channel("c:project.updated".into(), fields(json!({"project_id": "a"}))));
        assert!(s.add_channel("c:project.updated".into(), fields(json!({"project_id": "b"}))));
        assert!(!s.add_channel("c:project.updated".into(), fields(json!({"project_id": "b"}))), "same twice");
        assert_eq!(s.channel_count(), 2);
        for (id, want) in [("a", true), ("b", true), ("c", false)] {
            let e = event("project.updated", json!({"project_id": id}));
            assert_eq!(selects(&s, "c:project.updated", false, &e), want, "{id}");
        }
        // A subscription to an own stream's topic filters it like a channel.
        assert!(!selects(&s, "c:project.updated", true, &event("x", json!({"project_id": "c"}))));
        assert_eq!(s.remove_channel("c:project.updated"), 2);
        assert!(!s.has_channel("c:project.updated"));
        assert!(!selects(&s, "c:project.updated", false, &event("x", json!({"project_id": "a"}))));
    }

    #[test]
    fn a_payload_that_is_not_json_passes_only_unfiltered_subscriptions() {
        let mut s = Subscriptions::default();
        s.add_channel("c:raw".into(), None);
        s.add_channel("c:filtered".into(), fields(json!({"a": 1})));
        let mut e = event("blob", json!(null));
        e.payload = serde_json::value::RawValue::from_string("\"not an object\"".into()).expect("json");
        assert!(selects(&s, "c:raw", false, &e));
        assert!(!selects(&s, "c:filtered", false, &e));
    }
}
