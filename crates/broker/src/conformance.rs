//! The behavioural suite every [`Broker`] implementation must pass.
//!
//! It states the semantics the edge and worker rely on, in tests: delivery to subscribed nodes
//! only, order within a topic, idempotent subscribe, TTLs, single-use `take`, log order and
//! retention, and leases that never exceed their limit under concurrent acquirers. The in-process
//! broker runs it in this crate's tests; the Redis implementations run the very same functions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{DeliverySink, LeaseRequest, LogId, SharedBroker, Topic};

/// Generous bound for anything the suite waits for.
pub const WAIT: Duration = Duration::from_secs(10);

/// Makes broker handles that share one backing store, one per simulated node.
#[async_trait]
pub trait NodeFactory: Send + Sync {
    /// A new node whose subscriptions deliver to `sink`.
    async fn node(&self, sink: Arc<dyn DeliverySink>) -> SharedBroker;
}

/// A sink that records deliveries for assertions.
pub struct Collector {
    tx: mpsc::UnboundedSender<(String, Bytes)>,
}

impl DeliverySink for Collector {
    fn deliver(&self, topic: &str, message: Bytes) {
        let _ = self.tx.send((topic.to_owned(), message));
    }
}

/// A node under test with the deliveries it received.
pub struct TestNode {
    /// The broker handle.
    pub broker: SharedBroker,
    rx: mpsc::UnboundedReceiver<(String, Bytes)>,
}

impl TestNode {
    /// Creates a node from the factory.
    pub async fn new(factory: &dyn NodeFactory) -> TestNode {
        let (tx, rx) = mpsc::unbounded_channel();
        TestNode { broker: factory.node(Arc::new(Collector { tx })).await, rx }
    }

    /// The next delivery other than a liveness probe, or a panic after [`WAIT`].
    pub async fn next(&mut self) -> (String, Bytes) {
        loop {
            match tokio::time::timeout(WAIT, self.rx.recv()).await {
                Ok(Some((_, m))) if &m[..] == PROBE => continue,
                Ok(Some(d)) => return d,
                _ => panic!("no delivery within {WAIT:?}"),
            }
        }
    }

    /// Waits for a message on `topic` equal to `body`, failing on anything else first.
    pub async fn expect(&mut self, topic: &str, body: &str) {
        let (t, m) = self.next().await;
        assert_eq!((t.as_str(), &m[..]), (topic, body.as_bytes()), "unexpected delivery");
    }

    /// Publishes `body` on `probe` repeatedly until it arrives, proving that the node's
    /// subscription to `probe` is live (subscriptions on a network broker settle asynchronously).
    pub async fn await_live(&mut self, publisher: &SharedBroker, probe: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            publisher.publish(probe, Bytes::from_static(PROBE)).await.expect("publish probe");
            if let Ok(Some((t, _))) = tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await {
                if t == probe {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "subscription to {probe} never became live");
        }
    }

    /// Asserts that nothing more arrives before a marker published on `marker_topic`.
    pub async fn expect_only_marker(&mut self, publisher: &SharedBroker, marker_topic: &str) {
        publisher.publish(marker_topic, Bytes::from_static(b"marker")).await.expect("publish marker");
        self.expect(marker_topic, "marker").await;
    }
}

/// Body of liveness probes; [`TestNode::next`] skips them.
const PROBE: &[u8] = b"probe";

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// Topic names as the pub/sub calls take them.
fn topics(names: &[&str]) -> Vec<Topic> {
    names.iter().map(|&name| Topic::from(name)).collect()
}

/// A name no other test (or earlier run against the same Redis) uses.
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{prefix}:{}:{t}:{n}", std::process::id())
}

/// Runs every behaviour in the suite.
pub async fn run_all(factory: &dyn NodeFactory) {
    publish_reaches_every_subscribed_node_and_only_those(factory).await;
    unsubscribe_stops_delivery(factory).await;
    publish_many_keeps_order_and_subscribe_is_idempotent(factory).await;
    keys_expire_and_take_is_single_use(factory).await;
    sets_add_remove_and_list(factory).await;
    logs_read_after_an_id_in_order_and_trim_by_age(factory).await;
    blocking_reads_answer_at_once_or_wake_on_an_append(factory).await;
    a_stored_batch_is_in_its_logs_before_it_is_published(factory).await;
    leases_never_exceed_their_limit(factory).await;
    fenced_leases_keep_a_stalled_holder_from_moving_the_cursor_back(factory).await;
    presence_follows_connections_and_reports_each_transition_once(factory).await;
    presence_of_a_node_that_stops_renewing_expires_and_is_reported_once(factory).await;
}

/// Subscribed nodes get a publish; an unsubscribed node does not.
pub async fn publish_reaches_every_subscribed_node_and_only_those(factory: &dyn NodeFactory) {
    let (mut a, mut b, mut c) =
        (TestNode::new(factory).await, TestNode::new(factory).await, TestNode::new(factory).await);
    let topic = unique("t");
    let other = unique("other");
    a.broker.subscribe(&topics(&[&topic])).await.expect("subscribe a");
    b.broker.subscribe(&topics(&[&topic])).await.expect("subscribe b");
    c.broker.subscribe(&topics(&[&other])).await.expect("subscribe c");
    a.await_live(&c.broker, &topic).await;
    b.await_live(&c.broker, &topic).await;
    c.await_live(&a.broker, &other).await;

    c.broker.publish(&topic, Bytes::from_static(b"hello")).await.expect("publish");
    a.expect(&topic, "hello").await;
    b.expect(&topic, "hello").await;
    c.expect_only_marker(&a.broker, &other).await;
}

/// After unsubscribe a node receives nothing more from the topic.
pub async fn unsubscribe_stops_delivery(factory: &dyn NodeFactory) {
    let (mut a, p) = (TestNode::new(factory).await, TestNode::new(factory).await);
    let (topic, marker) = (unique("t"), unique("marker"));
    a.broker.subscribe(&topics(&[&topic, &marker])).await.expect("subscribe");
    a.await_live(&p.broker, &topic).await;
    a.await_live(&p.broker, &marker).await;
    a.broker.unsubscribe(&topics(&[&topic])).await.expect("unsubscribe");
    a.broker.unsubscribe(&topics(&[&topic])).await.expect("unsubscribe twice is fine");
    // A node subscribed to nothing else (on a cluster: nothing else on that topic's node).
    let lone = TestNode::new(factory).await;
    let only = unique("only");
    lone.broker.subscribe(&topics(&[&only])).await.expect("subscribe");
    lone.broker.unsubscribe(&topics(&[&only])).await.expect("unsubscribe the only topic");
    lone.broker.unsubscribe(&topics(&[&only])).await.expect("unsubscribe it again");
    // Give a network broker the time to apply the unsubscribe: a marker round trip on the same
    // subscriber connection orders it.
    a.expect_only_marker(&p.broker, &marker).await;
    p.broker.publish(&topic, Bytes::from_static(b"late")).await.expect("publish");
    a.expect_only_marker(&p.broker, &marker).await;
}

/// `publish_many` delivers in order; subscribing twice still delivers once.
pub async fn publish_many_keeps_order_and_subscribe_is_idempotent(factory: &dyn NodeFactory) {
    let (mut a, p) = (TestNode::new(factory).await, TestNode::new(factory).await);
    let topic = unique("t");
    a.broker.subscribe(&topics(&[&topic])).await.expect("subscribe");
    a.broker.subscribe(&topics(&[&topic])).await.expect("subscribe again");
    a.await_live(&p.broker, &topic).await;
    let batch: Vec<(String, Bytes)> = (0..50).map(|i| (topic.clone(), Bytes::from(format!("m{i}")))).collect();
    p.broker.publish_many(&batch).await.expect("publish_many");
    for i in 0..50 {
        a.expect(&topic, &format!("m{i}")).await;
    }
    a.expect_only_marker(&p.broker, &topic).await;
}

/// TTLs expire keys; of many concurrent `take`s exactly one gets the value.
pub async fn keys_expire_and_take_is_single_use(factory: &dyn NodeFactory) {
    let a = TestNode::new(factory).await;
    let key = unique("k");
    let (k1, k2) = (unique("many"), unique("many"));
    let pairs = [(k1.clone(), Bytes::from_static(b"1")), (k2.clone(), Bytes::from_static(b"2"))];
    a.broker.set_many(&pairs, Some(Duration::from_secs(30))).await.expect("set many");
    assert_eq!(a.broker.get(&k2).await.expect("get").as_deref(), Some(&b"2"[..]));
    assert_eq!(a.broker.get(&k1).await.expect("get").as_deref(), Some(&b"1"[..]));
    a.broker.set(&key, Bytes::from_static(b"v"), None).await.expect("set");
    assert_eq!(a.broker.get(&key).await.expect("get").as_deref(), Some(&b"v"[..]));
    assert!(a.broker.delete(&key).await.expect("delete"));
    assert_eq!(a.broker.get(&key).await.expect("get"), None);

    let short = unique("ttl");
    a.broker.set(&short, Bytes::from_static(b"v"), Some(Duration::from_millis(150))).await.expect("set ttl");
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.broker.get(&short).await.expect("get").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "key with a 150 ms TTL still there after {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let once = unique("once");
    let ttl = Some(Duration::from_millis(150));
    assert!(a.broker.set_if_absent(&once, Bytes::from_static(b"1"), ttl).await.expect("set_if_absent"));
    assert!(!a.broker.set_if_absent(&once, Bytes::from_static(b"2"), ttl).await.expect("set_if_absent again"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !a.broker.set_if_absent(&once, Bytes::from_static(b"3"), ttl).await.expect("set_if_absent") {
        assert!(tokio::time::Instant::now() < deadline, "a set_if_absent key never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let forever = unique("forever");
    assert!(a.broker.set_if_absent(&forever, Bytes::from_static(b"1"), None).await.expect("set_if_absent"));
    assert!(!a.broker.set_if_absent(&forever, Bytes::from_static(b"2"), None).await.expect("set_if_absent again"));
    assert_eq!(a.broker.get(&forever).await.expect("get").as_deref(), Some(&b"1"[..]), "the first value stays");

    let counter = unique("window");
    for i in 1..=5 {
        assert_eq!(a.broker.incr_in_window(&counter, Duration::from_millis(300)).await.expect("incr"), i);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.broker.incr_in_window(&counter, Duration::from_millis(300)).await.expect("incr") != 1 {
        assert!(tokio::time::Instant::now() < deadline, "a window counter never reset");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ticket = unique("ticket");
    a.broker.set(&ticket, Bytes::from_static(b"t"), Some(Duration::from_secs(30))).await.expect("set ticket");
    let takers: Vec<_> = (0..16)
        .map(|_| {
            let b = a.broker.clone();
            let k = ticket.clone();
            tokio::spawn(async move { b.take(&k).await.expect("take").is_some() })
        })
        .collect();
    let mut winners = 0;
    for t in takers {
        winners += usize::from(t.await.expect("taker"));
    }
    assert_eq!(winners, 1, "a single-use value was taken {winners} times");
}

/// Sets behave as sets.
pub async fn sets_add_remove_and_list(factory: &dyn NodeFactory) {
    let a = TestNode::new(factory).await;
    let key = unique("s");
    assert!(a.broker.set_add(&key, "alice").await.expect("add"));
    assert!(!a.broker.set_add(&key, "alice").await.expect("add again"));
    assert!(a.broker.set_add(&key, "bob").await.expect("add"));
    assert!(a.broker.set_contains(&key, "bob").await.expect("contains"));
    let mut members = a.broker.set_members(&key).await.expect("members");
    members.sort();
    assert_eq!(members, ["alice", "bob"]);
    assert!(a.broker.set_remove(&key, "bob").await.expect("remove"));
    assert!(!a.broker.set_contains(&key, "bob").await.expect("contains"));
    assert!(!a.broker.set_remove(&key, "bob").await.expect("remove again"));
}

/// Log ids grow; `read_after` returns the entries after an id, oldest first; old entries are
/// trimmed on append.
pub async fn logs_read_after_an_id_in_order_and_trim_by_age(factory: &dyn NodeFactory) {
    let a = TestNode::new(factory).await;
    let log = unique("log");
    let day = Duration::from_secs(86_400);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(a.broker.append(&log, Bytes::from(format!("e{i}")), day).await.expect("append"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "log ids must grow");
    // A batch over two logs keeps each log's order and returns ids in input order.
    let (even, odd) = (unique("log"), unique("log"));
    let batch: Vec<(String, Bytes)> =
        (0..6).map(|i| (if i % 2 == 0 { even.clone() } else { odd.clone() }, Bytes::from(format!("b{i}")))).collect();
    let batch_ids = a.broker.append_many(&batch, day).await.expect("append many");
    assert_eq!(batch_ids.len(), 6);
    let stored = a.broker.read_after(&even, None, 10).await.expect("read batch");
    assert_eq!(stored.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [batch_ids[0], batch_ids[2], batch_ids[4]]);
    assert_eq!(&stored[1].1[..], b"b2");
    let all = a.broker.read_after(&log, None, 100).await.expect("read");
    assert_eq!(all.len(), 20);
    let after = a.broker.read_after(&log, Some(ids[14]), 3).await.expect("read after");
    let bodies: Vec<&[u8]> = after.iter().map(|(_, b)| &b[..]).collect();
    assert_eq!(bodies, [&b"e15"[..], b"e16", b"e17"]);
    assert_eq!(after[0].0, ids[15]);
    assert!(a.broker.read_after(&log, Some(ids[19]), 10).await.expect("read tail").is_empty());

    let (last3, truncated) = a.broker.read_last_after(&log, Some(ids[4]), 3).await.expect("read last");
    let bodies: Vec<&[u8]> = last3.iter().map(|(_, b)| &b[..]).collect();
    assert_eq!(bodies, [&b"e17"[..], b"e18", b"e19"], "the newest entries, oldest first");
    assert!(truncated);
    let (rest, truncated) = a.broker.read_last_after(&log, Some(ids[16]), 10).await.expect("read last");
    assert_eq!((rest.len(), truncated), (3, false));
    let newest = a.broker.newest_ids(&[even.clone(), unique("empty"), log.clone()]).await.expect("newest ids");
    assert_eq!(newest, [Some(batch_ids[4]), None, Some(ids[19])], "each log's newest, in the order asked");
    assert!(a.broker.newest_ids(&[]).await.expect("nothing asked").is_empty());

    // Copying entries under their ids is idempotent and keeps order.
    let copy = unique("copy");
    assert!(a.broker.append_with_id(&copy, ids[3], Bytes::from_static(b"e3"), day, 100).await.expect("copy"));
    assert!(!a.broker.append_with_id(&copy, ids[3], Bytes::from_static(b"e3"), day, 100).await.expect("copy again"));
    assert!(!a.broker.append_with_id(&copy, ids[1], Bytes::from_static(b"e1"), day, 100).await.expect("copy older"));
    assert!(a.broker.append_with_id(&copy, ids[7], Bytes::from_static(b"e7"), day, 100).await.expect("copy newer"));
    let copied = a.broker.read_after(&copy, None, 10).await.expect("read copy");
    assert_eq!(copied.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[3], ids[7]]);
    let (other, batch): (String, Vec<(String, LogId, Bytes)>) = {
        let other = unique("copy");
        let batch = [7, 3, 8, 9, 9]
            .iter()
            .flat_map(|i| {
                [
                    (copy.clone(), ids[*i], Bytes::from(format!("e{i}"))),
                    (other.clone(), ids[*i], Bytes::from(format!("e{i}"))),
                ]
            })
            .collect();
        (other, batch)
    };
    a.broker.append_with_id_many(&batch, day, 100).await.expect("copy many");
    let copied = a.broker.read_after(&copy, None, 10).await.expect("read copy");
    assert_eq!(copied.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[3], ids[7], ids[8], ids[9]]);
    let copied = a.broker.read_after(&other, None, 10).await.expect("read other");
    assert_eq!(copied.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[7], ids[8], ids[9]]);

    // A consumer trims what it is done with; ids keep growing past the trimmed ones.
    let trimmed = unique("trimmed");
    let mut tids = Vec::new();
    for i in 0..5 {
        tids.push(a.broker.append(&trimmed, Bytes::from(format!("t{i}")), day).await.expect("append"));
    }
    a.broker.trim_through(&trimmed, tids[2]).await.expect("trim");
    let left: Vec<LogId> =
        a.broker.read_after(&trimmed, None, 10).await.expect("read").iter().map(|(id, _)| *id).collect();
    assert_eq!(left, tids[3..], "entries through the given id are gone");
    a.broker.trim_through(&trimmed, tids[4]).await.expect("trim all");
    assert!(a.broker.read_after(&trimmed, None, 10).await.expect("read").is_empty());
    let next = a.broker.append(&trimmed, Bytes::from_static(b"t5"), day).await.expect("append after trim");
    assert!(next > tids[4], "{next} after a trim must still follow {}", tids[4]);

    // A copy keeps only the newest `max_entries`: enough for the newest `limit` and to tell
    // that older ones were left out.
    let capped = unique("capped");
    let all: Vec<(String, LogId, Bytes)> =
        (0..20).map(|i| (capped.clone(), ids[i], Bytes::from(format!("e{i}")))).collect();
    a.broker.append_with_id_many(&all, day, 4).await.expect("copy many, capped");
    let kept = a.broker.read_after(&capped, None, 100).await.expect("read capped");
    assert_eq!(kept.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids[16..20], "the newest four");
    let (last3, truncated) = a.broker.read_last_after(&capped, Some(ids[2]), 3).await.expect("read last");
    assert_eq!((last3.iter().map(|(id, _)| *id).collect::<Vec<_>>(), truncated), (ids[17..20].to_vec(), true));
    assert!(a.broker.append_with_id(&capped, ids[19], Bytes::from_static(b"again"), day, 4).await.is_ok());
    assert_eq!(a.broker.read_after(&capped, None, 100).await.expect("read").len(), 4, "no growth on a repeat");

    let short = unique("log");
    a.broker.append(&short, Bytes::from_static(b"old"), Duration::from_millis(100)).await.expect("append");
    tokio::time::sleep(Duration::from_millis(250)).await;
    a.broker.append(&short, Bytes::from_static(b"new"), Duration::from_millis(100)).await.expect("append");
    let left = a.broker.read_after(&short, None, 10).await.expect("read");
    assert_eq!(left.len(), 1, "entries older than the retention must be trimmed");
    assert_eq!(&left[0].1[..], b"new");

    // A log nobody appends to for a retention period disappears as a whole.
    let idle = unique("idle-log");
    a.broker.append(&idle, Bytes::from_static(b"x"), Duration::from_millis(150)).await.expect("append");
    let copied = unique("idle-copy");
    let id = LogId { ms: 1, seq: 0 };
    a.broker
        .append_with_id(&copied, id, Bytes::from_static(b"x"), Duration::from_millis(150), 100)
        .await
        .expect("copy");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = a.broker.read_after(&idle, None, 10).await.expect("read").len()
            + a.broker.read_last_after(&copied, None, 10).await.expect("read").0.len();
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "idle logs never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `read_after_many` returns each log's entries in the order asked at once when there are any;
/// when there are none it blocks until another node appends to one of the logs (not until its
/// wait runs out), and after a short wait with nothing appended it returns nothing.
pub async fn blocking_reads_answer_at_once_or_wake_on_an_append(factory: &dyn NodeFactory) {
    let a = TestNode::new(factory).await;
    let b = TestNode::new(factory).await;
    let day = Duration::from_secs(86_400);
    let logs = [unique("shard"), unique("shard"), unique("shard")];
    let first = a.broker.append(&logs[1], Bytes::from_static(b"x0"), day).await.expect("append");
    let second = a.broker.append(&logs[1], Bytes::from_static(b"x1"), day).await.expect("append");
    let reads: Vec<(String, Option<LogId>)> = logs.iter().map(|l| (l.clone(), None)).collect();
    let long = Duration::from_secs(60);
    let found = tokio::time::timeout(WAIT, a.broker.read_after_many(&reads, 10, long))
        .await
        .expect("entries that are there are returned at once")
        .expect("read");
    assert_eq!(found.len(), 3);
    assert!(found[0].is_empty() && found[2].is_empty());
    assert_eq!(found[1].iter().map(|(id, _)| *id).collect::<Vec<_>>(), [first, second]);
    let one = a.broker.read_after_many(&reads, 1, long).await.expect("read");
    assert_eq!(one[1].len(), 1, "the limit holds per log");

    let caught_up: Vec<(String, Option<LogId>)> =
        vec![(logs[0].clone(), None), (logs[1].clone(), Some(second)), (logs[2].clone(), None)];
    let nothing = a.broker.read_after_many(&caught_up, 10, Duration::from_millis(50)).await.expect("read");
    assert_eq!(nothing.len(), 3);
    assert!(nothing.iter().all(Vec::is_empty), "nothing new: {nothing:?}");

    // Blocked (its wait is far longer than the test's patience) until b appends.
    let reader = a.broker.clone();
    let blocked = tokio::spawn(async move { reader.read_after_many(&caught_up, 10, long).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let third = b.broker.append(&logs[2], Bytes::from_static(b"y0"), day).await.expect("append");
    let woken = tokio::time::timeout(WAIT, blocked)
        .await
        .expect("an append wakes a blocked read")
        .expect("read task")
        .expect("read");
    assert!(woken[0].is_empty() && woken[1].is_empty());
    assert_eq!(woken[2].iter().map(|(id, b)| (*id, &b[..])).collect::<Vec<_>>(), [(third, &b"y0"[..])]);
}

/// `store_and_publish`: a node that receives the live message finds the copies and the index
/// already stored.
pub async fn a_stored_batch_is_in_its_logs_before_it_is_published(factory: &dyn NodeFactory) {
    let a = TestNode::new(factory).await;
    let mut b = TestNode::new(factory).await;
    let day = Duration::from_secs(86_400);
    let (topic, probe) = (unique("live"), unique("probe"));
    b.broker.subscribe(&topics(&[&topic, &probe])).await.expect("subscribe");
    b.await_live(&a.broker, &probe).await;
    let (source, log, index) = (unique("ingest"), unique("user-log"), unique("index"));
    let ids = [
        a.broker.append(&source, Bytes::from_static(b"s0"), day).await.expect("append"),
        a.broker.append(&source, Bytes::from_static(b"s1"), day).await.expect("append"),
    ];
    let copies: Vec<(String, LogId, Bytes)> =
        ids.iter().zip(["c0", "c1"]).map(|(id, body)| (log.clone(), *id, Bytes::from(body))).collect();
    let indexed = [(index.clone(), Bytes::from(ids[1].to_string()))];
    let live = [(topic.clone(), Bytes::from_static(b"c1"))];
    a.broker.store_and_publish(&copies, &indexed, day, 10, &live).await.expect("store and publish");
    b.expect(&topic, "c1").await;
    let stored = b.broker.read_after(&log, None, 10).await.expect("read");
    assert_eq!(stored.iter().map(|(id, b)| (*id, &b[..])).collect::<Vec<_>>(), [(ids[0], &b"c0"[..]), (ids[1], b"c1")]);
    assert_eq!(b.broker.get(&index).await.expect("get").as_deref(), Some(ids[1].to_string().as_bytes()));
    // Idempotent: the same batch again stores nothing twice.
    a.broker.store_and_publish(&copies, &indexed, day, 10, &live).await.expect("store and publish again");
    b.expect(&topic, "c1").await;
    assert_eq!(b.broker.read_after(&log, None, 10).await.expect("read").len(), 2);
}

/// Concurrent acquirers never exceed the limit; release frees a slot; leases expire.
pub async fn leases_never_exceed_their_limit(factory: &dyn NodeFactory) {
    let (a, b) = (TestNode::new(factory).await, TestNode::new(factory).await);
    let key = unique("lease");
    let ttl = Duration::from_secs(30);
    let tasks: Vec<_> = (0..14)
        .map(|i| {
            let broker = if i % 2 == 0 { a.broker.clone() } else { b.broker.clone() };
            let key = key.clone();
            tokio::spawn(async move { broker.try_acquire(&key, &format!("h{i}"), 5, ttl).await.expect("acquire") })
        })
        .collect();
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.expect("acquirer") {
            won.push(format!("h{i}"));
        }
    }
    assert_eq!(won.len(), 5, "exactly the limit must be admitted");
    assert!(a.broker.try_acquire(&key, &won[0], 5, ttl).await.expect("re-acquire own"), "a holder may re-acquire");
    assert!(!a.broker.try_acquire(&key, "late", 5, ttl).await.expect("acquire"));
    assert!(a.broker.release(&key, &won[0]).await.expect("release"));
    assert!(a.broker.try_acquire(&key, "late", 5, ttl).await.expect("acquire after release"));
    assert_eq!(a.broker.renew(&key, &won[1..], ttl).await.expect("renew"), 4);
    let mut live: Vec<String> = won[1..].to_vec();
    live.push("late".to_owned());
    live.sort();
    assert_eq!(b.broker.holders(&key).await.expect("holders"), live, "every live holder, seen from any node");

    // All-or-nothing over several quotas (keys hash-tagged into one slot for Redis Cluster).
    let tag = unique("u");
    let (per_endpoint, total) = (format!("lease:{{{tag}}}:endpoint"), format!("lease:{{{tag}}}:total"));
    let slots = [(per_endpoint.clone(), 2), (total.clone(), 3)];
    assert!(a.broker.try_acquire_all(&slots, "c1", ttl).await.expect("acquire all"));
    assert!(b.broker.try_acquire_all(&slots, "c2", ttl).await.expect("acquire all"));
    assert!(!a.broker.try_acquire_all(&slots, "c3", ttl).await.expect("acquire all"), "the per-endpoint quota is full");
    assert!(a.broker.try_acquire(&total, "other", 3, ttl).await.expect("acquire"), "a refused call took nothing");
    assert!(!a.broker.try_acquire(&total, "more", 3, ttl).await.expect("acquire"));
    assert!(a.broker.release(&per_endpoint, "c1").await.expect("release"));
    assert!(!a.broker.try_acquire_all(&slots, "c3", ttl).await.expect("acquire all"), "the total quota is full");

    // Several requests in one call: taken in order, each all-or-nothing, one answer each.
    let (x, y) = (unique("x"), unique("y"));
    let (x_one, x_all, y_one) =
        (format!("lease:{{{x}}}:one"), format!("lease:{{{x}}}:all"), format!("lease:{{{y}}}:one"));
    let request = |holder: &str, slots: &[(&String, u32)]| LeaseRequest {
        slots: slots.iter().map(|(k, l)| ((*k).clone(), *l)).collect(),
        holder: holder.to_owned(),
    };
    let batch = [
        request("x1", &[(&x_one, 1), (&x_all, 5)]),
        request("x2", &[(&x_one, 1), (&x_all, 5)]),
        request("y1", &[(&y_one, 1)]),
        request("x1", &[(&x_one, 1), (&x_all, 5)]),
        request("free", &[]),
    ];
    let answers = a.broker.try_acquire_many(&batch, ttl).await.expect("acquire many");
    assert_eq!(answers, [true, false, true, true, true], "x2 sees x1's slot; x1 again is its own holder");
    assert_eq!(b.broker.holders(&x_all).await.expect("holders"), ["x1"], "the refused x2 took nothing");
    assert!(b.broker.try_acquire_many(&[], ttl).await.expect("nothing to take").is_empty());

    let short = unique("lease");
    assert!(a.broker.try_acquire(&short, "x", 1, Duration::from_millis(150)).await.expect("acquire"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !a.broker.try_acquire(&short, "y", 1, ttl).await.expect("acquire") {
        assert!(tokio::time::Instant::now() < deadline, "an expired lease was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.broker.holders(&short).await.expect("holders"), ["y"], "an expired holder is not listed");
}

/// A user is online from their first connection to their last; joins and leaves say when
/// that changes, across nodes.
pub async fn presence_follows_connections_and_reports_each_transition_once(factory: &dyn NodeFactory) {
    let (a, b) = (TestNode::new(factory).await, TestNode::new(factory).await);
    let (user, other) = (unique("user"), unique("user"));
    let ttl = Duration::from_secs(30);
    assert_eq!(a.broker.presence_online(&[user.clone(), other.clone()]).await.expect("online"), [false, false]);
    assert!(a.broker.presence_join(&user, "a:1", ttl).await.expect("join"), "the first connection brings them online");
    assert!(!b.broker.presence_join(&user, "b:1", ttl).await.expect("join"), "a second, on another node, does not");
    assert!(!a.broker.presence_join(&user, "a:1", ttl).await.expect("join"), "joining twice changes nothing");
    assert_eq!(b.broker.presence_online(&[user.clone(), other.clone()]).await.expect("online"), [true, false]);
    assert!(!a.broker.presence_leave(&user, "a:1").await.expect("leave"), "still online through node b");
    assert!(b.broker.presence_leave(&user, "b:1").await.expect("leave"), "the last connection takes them offline");
    assert!(!b.broker.presence_leave(&user, "b:1").await.expect("leave"), "leaving twice reports nothing");
    assert_eq!(a.broker.presence_online(std::slice::from_ref(&user)).await.expect("online"), [false]);
    let renewed = vec![(user.clone(), "a:2".to_owned()), (other.clone(), "a:3".to_owned())];
    let back = a.broker.presence_renew(&renewed, ttl).await.expect("renew");
    assert!(
        back.contains(&user) && back.contains(&other),
        "renewing entries nobody holds brings them online: {back:?}"
    );
    assert_eq!(b.broker.presence_online(&[other.clone(), user.clone()]).await.expect("online"), [true, true]);
    assert!(a.broker.presence_renew(&renewed, ttl).await.expect("renew").is_empty(), "already online");
    assert!(a.broker.presence_leave(&user, "a:2").await.expect("leave"));
    assert!(a.broker.presence_leave(&other, "a:3").await.expect("leave"));
}

/// Entries that are not renewed expire; the user is then reported offline to exactly one of
/// the nodes sweeping, once; renewing keeps entries alive past their first expiry.
pub async fn presence_of_a_node_that_stops_renewing_expires_and_is_reported_once(factory: &dyn NodeFactory) {
    let (a, b) = (TestNode::new(factory).await, TestNode::new(factory).await);
    let (crashed, kept) = (unique("crashed"), unique("kept"));
    assert!(a.broker.presence_join(&crashed, "dead:1", Duration::from_millis(200)).await.expect("join"));
    assert!(a.broker.presence_join(&kept, "live:1", Duration::from_millis(200)).await.expect("join"));
    a.broker.presence_renew(&[(kept.clone(), "live:1".to_owned())], Duration::from_secs(30)).await.expect("renew");
    let mut reports = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.broker.presence_online(std::slice::from_ref(&crashed)).await.expect("online") == [true] {
        assert!(tokio::time::Instant::now() < deadline, "an entry with a 200 ms lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both nodes sweep until the expiry has been reported, then once more each.
    let deadline = tokio::time::Instant::now() + WAIT;
    while reports == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the expired user was never reported");
        for node in [&a, &b] {
            reports +=
                node.broker.presence_expired(1_000).await.expect("sweep").iter().filter(|u| **u == crashed).count();
        }
    }
    for node in [&a, &b] {
        let again = node.broker.presence_expired(1_000).await.expect("sweep");
        assert!(!again.contains(&crashed) && !again.contains(&kept), "{again:?}");
    }
    assert_eq!(reports, 1, "reported once");
    assert!(!a.broker.presence_leave(&crashed, "dead:1").await.expect("leave"), "already reported offline");
    assert_eq!(b.broker.presence_online(&[kept.clone(), crashed]).await.expect("online"), [true, false]);
    assert!(a.broker.presence_leave(&kept, "live:1").await.expect("leave"));
}

/// A fenced lease has one holder; a holder that stalled past its lease, once another took
/// over, can neither move the cursor (back) nor trim the log; the cursor never moves back even
/// for the current holder.
pub async fn fenced_leases_keep_a_stalled_holder_from_moving_the_cursor_back(factory: &dyn NodeFactory) {
    let (a, b) = (TestNode::new(factory).await, TestNode::new(factory).await);
    let tag = unique("shard");
    let (lease, fence) = (format!("lease:{{{tag}}}"), format!("fence:{{{tag}}}"));
    let (cursor, log) = (format!("cursor:{{{tag}}}"), format!("log:{{{tag}}}"));
    let day = Duration::from_secs(86_400);
    let short = Duration::from_millis(200);
    let first = a.broker.acquire_fenced(&lease, &fence, "a", short).await.expect("acquire").expect("free lease");
    assert_eq!(b.broker.acquire_fenced(&lease, &fence, "b", day).await.expect("acquire"), None, "held by a");
    assert_eq!(a.broker.acquire_fenced(&lease, &fence, "a", short).await.expect("renew"), Some(first), "same holder");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(a.broker.append(&log, Bytes::from(format!("e{i}")), day).await.expect("append"));
    }
    let position = |node: &TestNode| {
        let broker = node.broker.clone();
        let cursor = cursor.clone();
        async move { broker.get(&cursor).await.expect("get").map(|v| String::from_utf8_lossy(&v).into_owned()) }
    };
    let fenced = |holder: &'static str, token: u64| -> crate::Fenced<'_> {
        crate::Fenced { lease: &lease, fence: &fence, holder, token }
    };
    assert!(a.broker.commit_fenced(&fenced("a", first), &cursor, &log, ids[1]).await.expect("commit"));
    assert_eq!(position(&a).await, Some(ids[1].to_string()));
    let left = a.broker.read_after(&log, None, 10).await.expect("read");
    assert_eq!(left.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[2]], "trimmed through the commit");

    // a stalls past its lease: b takes the shard over with a newer token.
    let deadline = tokio::time::Instant::now() + WAIT;
    let second = loop {
        if let Some(t) = b.broker.acquire_fenced(&lease, &fence, "b", day).await.expect("acquire") {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "a 200 ms lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(second > first, "a new holder gets a newer token");
    assert!(b.broker.commit_fenced(&fenced("b", second), &cursor, &log, ids[2]).await.expect("commit"));
    // a resumes and tries to commit what it was doing: refused, nothing written.
    assert!(!a.broker.commit_fenced(&fenced("a", first), &cursor, &log, ids[0]).await.expect("commit"));
    // Nor with b's token (as when a failover lost the increment and handed a's token out
    // again): a is not the holder.
    assert!(!a.broker.commit_fenced(&fenced("a", second), &cursor, &log, ids[0]).await.expect("commit"));
    assert_eq!(position(&b).await, Some(ids[2].to_string()));
    assert_eq!(a.broker.acquire_fenced(&lease, &fence, "a", short).await.expect("acquire"), None, "b holds it");
    // Even the holder cannot move the cursor back.
    assert!(b.broker.commit_fenced(&fenced("b", second), &cursor, &log, ids[0]).await.expect("commit"));
    assert_eq!(position(&b).await, Some(ids[2].to_string()), "never backwards");
    // A holder whose lease lapsed (nobody took it over) cannot commit either: it must take
    // the lease again first.
    assert!(b.broker.release(&lease, "b").await.expect("release"));
    assert!(!b.broker.commit_fenced(&fenced("b", second), &cursor, &log, ids[2]).await.expect("commit"));
}
