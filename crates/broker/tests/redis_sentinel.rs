//! The Redis broker on a Sentinel group (a master, a replica, three sentinels): it finds the
//! master through the sentinels, passes the behavioural suite there, and follows failovers
//! for commands and subscriptions without being told anything but the sentinels' addresses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_broker::conformance::{self, NodeFactory};
use switchboard_broker::redis::{RedisBroker, RedisSettings, SentinelSettings};
use switchboard_broker::{Broker, DeliverySink, KeyValue, PubSub, SharedBroker, Topic};
use switchboard_testkit::sentinel::{SentinelGroup, SENTINEL_MASTER};
use switchboard_testkit::WAIT;

fn settings(group: &SentinelGroup) -> RedisSettings {
    RedisSettings::sentinel(SentinelSettings {
        master: SENTINEL_MASTER.into(),
        sentinels: group.sentinel_addrs().split(',').map(str::to_owned).collect(),
        username: None,
        password: None,
        db: 0,
    })
}

struct Sentinel(RedisSettings);

#[async_trait]
impl NodeFactory for Sentinel {
    async fn node(&self, sink: Arc<dyn DeliverySink>) -> SharedBroker {
        Arc::new(RedisBroker::connect(&self.0, sink).await.expect("connect through the sentinels"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_passes_the_behavioural_suite_through_sentinel_with_replicated_writes() {
    let group = SentinelGroup::start(1);
    // Every acknowledged write (appends, keys, members, taken tickets) waits for the replica.
    let settings = settings(&group).with_replicas_ack(1, Duration::from_millis(500));
    conformance::run_all(&Sentinel(settings)).await;
}

/// What a subscriber received.
#[derive(Default)]
struct Seen(Mutex<Vec<(String, Bytes)>>);

impl DeliverySink for Seen {
    fn deliver(&self, topic: &str, message: Bytes) {
        self.0.lock().push((topic.to_owned(), message));
    }
}

/// Publishes `round` on `topic` through `publisher` until `seen` has it (publishes fail while
/// there is no master), failing after a bound.
async fn delivered(publisher: &RedisBroker, seen: &Seen, topic: &str, round: &str) {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    let message = Bytes::from(round.to_owned());
    while !seen.0.lock().iter().any(|(t, m)| t == topic && *m == message) {
        assert!(tokio::time::Instant::now() < deadline, "{round}: nothing delivered");
        let _ = publisher.publish(topic, message.clone()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_subscriptions_follow_the_master_to_its_replica() {
    let mut group = SentinelGroup::start(1);
    let seen = Arc::new(Seen::default());
    let subscriber = RedisBroker::connect(&settings(&group), seen.clone()).await.expect("connect");
    let publisher = RedisBroker::connect(&settings(&group), Arc::new(Seen::default())).await.expect("connect");
    subscriber.subscribe(&[Topic::from("c:sentinel")]).await.expect("subscribe");
    delivered(&publisher, &seen, "c:sentinel", "before").await;
    publisher.set("k", Bytes::from_static(b"v1"), None).await.expect("a write on the first master");

    // A coordinated failover: the old master stays up, demoted to a replica (it answers PING
    // and refuses writes with READONLY).
    let first = group.master().expect("a master");
    group.failover();
    let second = group.await_new_master(first);
    // Until a sentinel demotes it, the old master still takes writes (which its resync then
    // drops: what `replicas_ack` and `min-replicas-to-write` are for); so the write below
    // waits until both brokers moved, on their own, to the new master.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while publisher.health().failovers < 1 || subscriber.health().failovers < 1 {
        assert!(tokio::time::Instant::now() < deadline, "the brokers never followed the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    delivered(&publisher, &seen, "c:sentinel", "after a failover").await;
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while publisher.set("k", Bytes::from_static(b"v2"), None).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "writes never reached the new master");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(group.servers[second].cli(&["GET", "k"]).trim(), "v2", "the write went to the new master");

    // The new master killed: the sentinels promote the old one back.
    group.await_replicas_in_sync();
    group.servers[second].kill();
    let third = group.await_new_master(second);
    assert_eq!(third, first);
    delivered(&publisher, &seen, "c:sentinel", "after the master was killed").await;
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while publisher.get("k").await.ok().flatten().as_deref() != Some(&b"v2"[..]) {
        assert!(tokio::time::Instant::now() < deadline, "reads never reached the promoted replica");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = subscriber.health();
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !(subscriber.health().subscribed && subscriber.health().writable && subscriber.health().delivering) {
        assert!(tokio::time::Instant::now() < deadline, "never healthy again: {health:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
