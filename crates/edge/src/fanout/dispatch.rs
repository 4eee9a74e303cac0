//! Local fan-out of events from the broker. Each event is decoded once, encoded at most once
//! per dialect (and compressed at most once per dialect, for permessage-deflate clients), and
//! the same `Bytes` go to every local connection that wants it, written straight onto each
//! socket.
//!
//! Small topics (a user's own stream) are fanned out inline. A topic with many local
//! subscribers gets a task of its own that writes in passes, yielding to the rest of the node
//! every [`PASS_CHUNK`] connections; events that arrive while a pass runs wait for the next
//! one, which then writes all of them to each connection in one vectored write. At low rates a
//! delivery is one `write`; when events come faster than a pass takes, the cost per delivery
//! falls instead of the queues growing.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_broker::LogId;
use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::{DialectKind, Event};
use switchboard_wsframe::deflate;

use super::registry::TopicRegistry;
use crate::auth::Principal;
use crate::connection::{ConnHandle, LazyPayload, Payload, SendOutcome};
use crate::metrics::Metrics;

/// Topics with more local subscribers than this get a fan-out task of their own.
pub const INLINE_FANOUT: usize = 64;
/// Connections written between two yields of a fan-out pass.
const PASS_CHUNK: usize = 256;
/// Most events one pass delivers (each connection gets them in one vectored write).
const PASS_EVENTS: usize = crate::connection::MAX_FRAMES_PER_WRITE;
const _: () = assert!(PASS_EVENTS <= 64, "a pass tracks its events in a u64 mask");

/// Fans events from the broker out to local connections.
pub struct Dispatcher {
    registry: Arc<TopicRegistry>,
    metrics: Arc<Metrics>,
    /// Topics whose fan-out task is running, with the events waiting for its next pass.
    running: Mutex<HashMap<String, Vec<Event>>>,
    me: Weak<Dispatcher>,
}

/// One event's state during a pass: frames encoded (and compressed) so far, per dialect, the
/// parsed payload (for filters), its log position and how many connections got it.
struct Prepared<'a> {
    event: &'a Event,
    frames: [Option<Bytes>; DialectKind::COUNT],
    /// The compressed frames (`Some(None)`: compressing does not pay for this one).
    deflated: [Option<Option<Bytes>>; DialectKind::COUNT],
    payload: LazyPayload,
    position: Option<LogId>,
    /// The position before it in the user's log (persisted events; see [`Event::prev`]).
    prev: Option<LogId>,
    delivered: usize,
}

impl<'a> Prepared<'a> {
    fn new(event: &'a Event) -> Self {
        Prepared {
            event,
            frames: Default::default(),
            deflated: Default::default(),
            payload: LazyPayload::default(),
            position: event.position.as_deref().and_then(LogId::parse),
            prev: event.prev.as_deref().and_then(LogId::parse),
            delivered: 0,
        }
    }

    /// Tells a connection that does not want this persisted event that its position went by
    /// (so that the next event does not look like a gap after it).
    fn pass_over(&self, conn: &ConnHandle) {
        if let Some(position) = self.position {
            conn.pass_over(position, self.prev);
        }
    }

    /// The frame for `conn` if it wants this event, which arrived on `topic`. What a user sent
    /// comes back to their own connections only where it says so (`echo`: chat messages).
    /// Compressed for a connection that negotiated permessage-deflate, when the frame is
    /// large enough and compressing it pays.
    fn frame_for(&mut self, conn: &ConnHandle, topic: &str, allowed: bool, metrics: &Metrics) -> Option<Payload> {
        if !allowed || !conn.selects(topic, self.event, &mut self.payload) {
            return None;
        }
        if let Some(sender) = self.event.sender.as_deref().filter(|_| !self.event.echo) {
            if conn.principal.as_deref().and_then(Principal::user) == Some(sender) {
                return None;
            }
        }
        let codec = conn.endpoint.codec;
        let kind = codec.kind().index();
        let plain = self.frames[kind].get_or_insert_with(|| codec.encode_event(self.event, false));
        let Some(level) = conn.deflate_level_for(plain.len()) else { return Some(plain.clone().into()) };
        let deflated = self.deflated[kind].get_or_insert_with(|| {
            let packed = deflate::deflate(plain, level).map(Bytes::from);
            metrics.deflate_in.inc_by(plain.len() as u64);
            metrics.deflate_out.inc_by(packed.as_ref().map_or(plain.len(), Bytes::len) as u64);
            packed
        });
        Some(match deflated {
            Some(bytes) => Payload { bytes: bytes.clone(), deflated: true },
            None => plain.clone().into(),
        })
    }
}

/// Remembers the endpoint's verdict on event types across its subscribers (they mostly share
/// one endpoint).
#[derive(Default)]
struct TypeVerdicts {
    /// The endpoint's address, as its identity.
    endpoint: Option<usize>,
    allowed: Vec<bool>,
}

impl TypeVerdicts {
    fn for_conn(&mut self, conn: &ConnHandle, events: &[Prepared<'_>]) -> &[bool] {
        let ep = Arc::as_ptr(&conn.endpoint) as usize;
        if self.endpoint != Some(ep) {
            self.endpoint = Some(ep);
            self.allowed = events.iter().map(|p| conn.endpoint.allows_type(&p.event.kind)).collect();
        }
        &self.allowed
    }
}

/// One fan-out pass over a topic's subscribers: its events, and what is reused from one
/// connection to the next.
struct Pass<'a> {
    events: Vec<Prepared<'a>>,
    verdicts: TypeVerdicts,
    /// The frames going to the current connection.
    picked: Vec<Payload>,
    /// Whether any event is persisted (then each goes out on its own, in log order).
    persisted: bool,
}

impl<'a> Pass<'a> {
    fn new(events: &'a [Event]) -> Self {
        let events: Vec<Prepared<'a>> = events.iter().map(Prepared::new).collect();
        let persisted = events.iter().any(|p| p.position.is_some());
        Pass { picked: Vec::with_capacity(events.len()), events, verdicts: TypeVerdicts::default(), persisted }
    }
}

impl Dispatcher {
    /// A dispatcher over the node's registry.
    pub fn new(registry: Arc<TopicRegistry>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new_cyclic(|me| Dispatcher { registry, metrics, running: Mutex::default(), me: me.clone() })
    }

    /// Fans one event out to the subscribers of `topic` at once, on the caller's thread;
    /// returns how many got it.
    pub fn fan_out(&self, topic: &str, event: &Event) -> usize {
        let mut pass = Pass::new(std::slice::from_ref(event));
        self.registry.for_each(topic, |conn| self.deliver_to(conn, topic, &mut pass));
        pass.events[0].delivered
    }

    /// Sends the events of a pass to one connection: all of them in one write when they are
    /// live events and the connection is not replaying, else one by one in log order.
    fn deliver_to(&self, conn: &ConnHandle, topic: &str, pass: &mut Pass<'_>) {
        if conn.is_closing() {
            return;
        }
        let Pass { events, verdicts, picked, persisted } = pass;
        let allowed = verdicts.for_conn(conn, events);
        let in_order = *persisted || conn.is_holding();
        picked.clear();
        // Which events went into `picked` (a pass has at most 32 events).
        let mut who = 0u64;
        for (i, p) in events.iter_mut().enumerate() {
            let Some(frame) = p.frame_for(conn, topic, allowed[i], &self.metrics) else {
                p.pass_over(conn);
                continue;
            };
            if in_order {
                self.count(conn.send_event(frame, p.position, p.prev), &mut p.delivered);
            } else {
                picked.push(frame);
                who |= 1 << i;
            }
        }
        let outcome = match picked.len() {
            0 => return,
            1 => conn.send(picked[0].clone()),
            _ => conn.send_many(picked),
        };
        for (i, p) in events.iter_mut().enumerate() {
            if who & (1 << i) != 0 {
                self.count(outcome, &mut p.delivered);
            }
        }
    }

    /// Sends one event to one connection: [`Self::deliver_to`] for a pass of one event,
    /// without the pass's bookkeeping (the path of every event to a small topic).
    fn deliver_one(&self, conn: &ConnHandle, topic: &str, p: &mut Prepared<'_>) {
        if conn.is_closing() {
            return;
        }
        let allowed = conn.endpoint.allows_type(&p.event.kind);
        let Some(frame) = p.frame_for(conn, topic, allowed, &self.metrics) else { return p.pass_over(conn) };
        let outcome = if p.position.is_some() || conn.is_holding() {
            conn.send_event(frame, p.position, p.prev)
        } else {
            conn.send(frame)
        };
        self.count(outcome, &mut p.delivered);
    }

    fn count(&self, outcome: SendOutcome, delivered: &mut usize) {
        match outcome {
            SendOutcome::Queued => *delivered += 1,
            SendOutcome::SlowConsumer => self.metrics.slow_consumer_closes.inc(),
            SendOutcome::Gone | SendOutcome::Duplicate => {}
        }
    }

    /// Delivers `first`, then whatever arrived for `topic` meanwhile, pass after pass, until
    /// nothing is waiting.
    async fn run_topic(self: Arc<Self>, topic: String, first: Event) {
        let mut events = vec![first];
        loop {
            self.pass(&topic, &events).await;
            let mut running = self.running.lock();
            let Some(waiting) = running.get_mut(&topic) else { return };
            if waiting.is_empty() {
                running.remove(&topic);
                return;
            }
            let take = waiting.len().min(PASS_EVENTS);
            events = waiting.drain(..take).collect();
        }
    }

    async fn pass(&self, topic: &str, events: &[Event]) {
        let subscribers = self.registry.snapshot(topic);
        let mut pass = Pass::new(events);
        let mut chunks = subscribers.chunks(PASS_CHUNK).peekable();
        while let Some(chunk) = chunks.next() {
            for conn in chunk {
                self.deliver_to(conn, topic, &mut pass);
            }
            if chunks.peek().is_some() {
                tokio::task::yield_now().await;
            }
        }
        for p in &pass.events {
            self.observe(p.delivered);
        }
    }

    fn observe(&self, delivered: usize) {
        self.metrics.deliveries.inc_by(delivered as u64);
        self.metrics.fanout_size.observe(delivered as f64);
    }
}

impl Dispatcher {
    /// Delivers one event message published on `topic` to the local connections that want it.
    /// Called from the broker's delivery context: never blocks.
    pub fn deliver(&self, topic: &str, message: Bytes) {
        self.metrics.events_in.inc();
        let event: Event = match serde_json::from_slice(&message) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(topic, error = %e, "dropping malformed event from the broker");
                return;
            }
        };
        self.metrics.publish_to_dispatch.observe(now_millis().saturating_sub(event.ts) as f64 / 1000.0);
        // One span per event on this node (never per connection), while tracing is on.
        let mut span = event.traceparent.as_deref().and_then(|parent| {
            let mut span =
                switchboard_telemetry::start("dispatch", switchboard_telemetry::Kind::Consumer, Some(parent))?;
            span.set("switchboard.topic", topic.to_owned());
            span.set("switchboard.event_id", event.id.clone());
            Some(span)
        });
        if let Some(waiting) = self.running.lock().get_mut(topic) {
            // A pass is under way: the next one takes this event, in order.
            waiting.push(event);
            return;
        }
        // A small topic (a user's own stream) is served right here, in one registry lookup.
        let mut one = Prepared::new(&event);
        if self.registry.for_each_up_to(topic, INLINE_FANOUT, |conn| self.deliver_one(conn, topic, &mut one)) {
            self.observe(one.delivered);
            if let Some(span) = span.as_mut() {
                span.set("switchboard.deliveries", one.delivered as i64);
            }
            return;
        }
        // A large topic: the span ends at the hand-off to the topic's fan-out task.
        if let Some(span) = span.as_mut() {
            span.set("switchboard.fanout_task", true);
        }
        let mut running = self.running.lock();
        if let Some(waiting) = running.get_mut(topic) {
            waiting.push(event);
        } else if let (Some(me), Ok(runtime)) = (self.me.upgrade(), tokio::runtime::Handle::try_current()) {
            running.insert(topic.to_owned(), Vec::new());
            runtime.spawn(me.run_topic(topic.to_owned(), event));
        } else {
            drop(running);
            let n = self.fan_out(topic, &event);
            self.observe(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value};

    use super::*;
    use crate::connection::testing::{connection, endpoint_with, Recorder};
    use crate::connection::ConnHandle;

    fn event(body: Value) -> Bytes {
        let mut e = json!({"id": "evt_1", "type": "status_update", "ts": 0, "payload": {}});
        e.as_object_mut().expect("object").extend(body.as_object().cloned().unwrap_or_default());
        Bytes::from(e.to_string())
    }

    /// A connection and what it was sent.
    type Watched = (Arc<ConnHandle>, Arc<Recorder>);

    fn setup(n: u64, topic: &str) -> (Arc<Dispatcher>, Vec<Watched>) {
        let registry = Arc::new(TopicRegistry::default());
        let dispatcher = Dispatcher::new(registry.clone(), Arc::new(Metrics::new()));
        let endpoint = endpoint_with("/ws", |_| {});
        let conns: Vec<_> = (1..=n)
            .map(|id| {
                let (conn, socket) = connection(id, endpoint.clone());
                conn.update_subscriptions(|s| s.add_channel(topic.into(), None));
                registry.add(topic, &conn);
                (conn, socket)
            })
            .collect();
        (dispatcher, conns)
    }

    #[test]
    fn every_subscriber_gets_the_same_frame_and_others_nothing() {
        let (dispatcher, conns) = setup(3, "c:status");
        let (outsider, outsider_socket) = connection(9, endpoint_with("/ws", |_| {}));
        dispatcher.registry.add("c:other", &outsider);
        dispatcher.deliver("c:status", event(json!({"channel": "status", "payload": {"up": true}})));
        let frames: Vec<Vec<(u8, Vec<u8>)>> = conns.iter().map(|(_, s)| s.take_frames()).collect();
        assert_eq!(frames[0].len(), 1);
        assert!(frames.iter().all(|f| *f == frames[0]), "one encoding for all");
        assert!(outsider_socket.take_frames().is_empty());
        let v: Value = serde_json::from_slice(&frames[0][0].1).expect("JSON");
        assert_eq!((v["type"].clone(), v["data"]["up"].clone()), (json!("status_update"), json!(true)));
    }

    #[test]
    fn types_the_endpoint_does_not_carry_and_malformed_messages_are_dropped() {
        let (dispatcher, conns) = setup(1, "c:status");
        dispatcher.deliver("c:status", event(json!({"type": "threat_detected"})));
        dispatcher.deliver("c:status", Bytes::from_static(b"{not json"));
        assert!(conns[0].1.take_frames().is_empty());
    }

    #[test]
    fn persisted_events_go_out_in_log_order_once() {
        let (dispatcher, conns) = setup(1, "u:alice");
        for pos in ["5-0", "6-0", "6-0", "4-0", "7-0"] {
            dispatcher.deliver("u:alice", event(json!({"user": "alice", "pos": pos, "payload": {"p": pos}})));
        }
        let got: Vec<String> = conns[0]
            .1
            .take_frames()
            .iter()
            .map(|(_, p)| {
                serde_json::from_slice::<Value>(p).expect("JSON")["data"]["p"].as_str().unwrap_or("").to_owned()
            })
            .collect();
        assert_eq!(got, ["5-0", "6-0", "7-0"], "a repeat and an older position are dropped");
    }

    #[tokio::test]
    async fn a_large_topic_is_served_in_passes_and_keeps_the_order_of_events() {
        let n = INLINE_FANOUT as u64 * 5;
        let (dispatcher, conns) = setup(n, "c:status");
        for i in 0..50 {
            dispatcher.deliver("c:status", event(json!({"payload": {"i": i}})));
        }
        // The passes run on a task of their own; wait until it has finished.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while dispatcher.running.lock().contains_key("c:status") {
            assert!(tokio::time::Instant::now() < deadline, "the fan-out task never finished");
            tokio::task::yield_now().await;
        }
        for (conn, socket) in &conns {
            let order: Vec<i64> = socket
                .take_frames()
                .iter()
                .map(|(_, p)| serde_json::from_slice::<Value>(p).expect("JSON")["data"]["i"].as_i64().unwrap_or(-1))
                .collect();
            assert_eq!(order, (0..50).collect::<Vec<_>>(), "connection {}", conn.id);
        }
    }
}
