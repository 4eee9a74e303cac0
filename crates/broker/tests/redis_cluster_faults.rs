//! Sharded pub/sub on a real local Redis Cluster through the faults a cluster operator meets:
//! the subscriber's connections dropped, a master restarted, a slot moved to another master,
//! a master failing over to its replica. After each, every topic the node subscribed to
//! delivers again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_broker::redis::{RedisBroker, RedisSettings};
use switchboard_broker::{DeliverySink, PubSub, Topic};
use switchboard_testkit::redis::RedisCluster;
use switchboard_testkit::WAIT;

/// Records every (topic, message) delivered.
#[derive(Default)]
struct Seen(Mutex<HashSet<(String, Bytes)>>);

impl DeliverySink for Seen {
    fn deliver(&self, topic: &str, message: Bytes) {
        self.0.lock().insert((topic.to_owned(), message));
    }
}

struct Setup {
    cluster: RedisCluster,
    subscriber: RedisBroker,
    publisher: RedisBroker,
    seen: Arc<Seen>,
    topics: Vec<String>,
}

/// A cluster, a node subscribed to `n` topics spread over every master's slots, and a
/// publisher.
async fn setup(masters: usize, replicas: usize, n: usize) -> Setup {
    let cluster = RedisCluster::start_with_replicas(masters, replicas);
    let settings = RedisSettings::new(&cluster.urls(), true);
    let seen = Arc::new(Seen::default());
    let subscriber = RedisBroker::connect(&settings, seen.clone()).await.expect("connect");
    let publisher = RedisBroker::connect(&settings, Arc::new(Seen::default())).await.expect("connect");
    let topics: Vec<String> = (0..n).map(|i| format!("c:fault-topic-{i}")).collect();
    let names: Vec<Topic> = topics.iter().map(|t| Topic::from(t.as_str())).collect();
    subscriber.subscribe(&names).await.expect("subscribe");
    let setup = Setup { cluster, subscriber, publisher, seen, topics };
    setup.every_topic_delivers("before any fault").await;
    setup
}

impl Setup {
    /// Publishes `round` on every topic until each has delivered it (a topic whose
    /// subscription is lost never does, and the test fails after a bound).
    async fn every_topic_delivers(&self, round: &str) {
        let message = Bytes::from(round.to_owned());
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        loop {
            let missing: Vec<String> = {
                let seen = self.seen.0.lock();
                self.topics.iter().filter(|t| !seen.contains(&((*t).clone(), message.clone()))).cloned().collect()
            };
            if missing.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                // Where the first missing topic stands, for the failure message.
                use switchboard_broker::Broker;
                let t = &missing[0];
                let owner = self.cluster.try_owner_of(self.cluster.slot_of(t));
                let subscribers: Vec<String> = self
                    .cluster
                    .nodes
                    .iter()
                    .map(|n| n.cli(&["PUBSUB", "SHARDNUMSUB", t]).replace('\n', " "))
                    .collect();
                panic!(
                    "{round}: {} of {} topics deliver nothing, e.g. {:?}; {t}'s owner {owner:?}, subscribers per node \
                     {subscribers:?}, the subscriber's health {:?}",
                    missing.len(),
                    self.topics.len(),
                    &missing[..missing.len().min(3)],
                    self.subscriber.health()
                );
            }
            for topic in &missing {
                // A publish may fail while the cluster heals; the next round tries again.
                let _ = self.publisher.publish(topic, message.clone()).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The masters, by index.
    fn masters(&self) -> Vec<usize> {
        let mut masters: Vec<usize> =
            self.topics.iter().map(|t| self.cluster.owner_of(self.cluster.slot_of(t))).collect();
        masters.sort();
        masters.dedup();
        masters
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_subscriptions_come_back_after_their_connections_are_killed() {
    let s = setup(3, 0, 30).await;
    assert_eq!(s.masters().len(), 3, "the topics are spread over every master");
    // Every master holds a subscriber connection of this node before the kills. Killing one
    // makes the cluster client replace its other connections too, so by the time the next
    // master's turn comes its subscriber may already be a fresh one not yet subscribed (not
    // of type pubsub): the kills together, not each, must have hit something.
    let pubsub_clients = |node: usize| s.cluster.nodes[node].cli(&["CLIENT", "LIST", "TYPE", "pubsub"]).lines().count();
    for node in s.masters() {
        assert!(pubsub_clients(node) >= 1, "the subscriber has a connection to master {node}");
    }
    let killed: u64 = s.masters().into_iter().map(|node| s.cluster.kill_pubsub_clients(node)).sum();
    assert!(killed >= 1, "the kills hit the subscriber's connections");
    s.every_topic_delivers("after CLIENT KILL TYPE pubsub on every master").await;
    // And again, so the restored subscriptions are themselves restorable.
    s.cluster.kill_pubsub_clients(0);
    s.every_topic_delivers("after a second kill").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_subscriptions_come_back_after_a_master_restarts() {
    let mut s = setup(3, 0, 30).await;
    let master = s.masters()[0];
    s.cluster.nodes[master].restart();
    s.cluster.await_ok();
    s.every_topic_delivers("after a master restarted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscription_follows_its_slot_to_another_master() {
    let s = setup(3, 0, 12).await;
    let topic = s.topics[0].clone();
    let slot = s.cluster.slot_of(&topic);
    let from = s.cluster.owner_of(slot);
    let to = (from + 1) % 3;
    s.cluster.move_slot(slot, to);
    assert_eq!(s.cluster.owner_of(slot), to);
    s.every_topic_delivers("after the slot moved").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_subscriptions_survive_a_master_failing_over_to_its_replica() {
    let mut s = setup(3, 1, 30).await;
    let master = s.masters()[0];
    let slot = s.topics.iter().map(|t| s.cluster.slot_of(t)).find(|slot| s.cluster.owner_of(*slot) == master);
    s.cluster.nodes[master].kill();
    s.cluster.await_failover(slot.expect("a topic on that master"), master);
    s.every_topic_delivers("after the failover").await;
    drop(s.subscriber);
}

/// Every command path, over and over, while the slot of its keys moves to another master with
/// the keys in it (`ASK` while they migrate, `TRYAGAIN` for scripts whose keys are split,
/// `MOVED` after): ingest appends, copies into a user's log (a pipeline that keeps refusals in
/// place), the index, publishes, quota leases, a fenced commit, reads and a single-use ticket.
/// Not one call may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_path_follows_a_slot_that_moves_with_its_keys() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use switchboard_broker::{Broker, Fenced, KeyValue, Leases, Log, LogId};
    let s = setup(3, 0, 1).await;
    let broker = Arc::new(s.publisher);
    // Everything hash-tagged `{m}`: one slot, moved below.
    let (ingest, user_log, lease, fence, cursor) =
        ("ingest:{m}", "events:{m}", "worker-lease:{m}", "worker-fence:{m}", "ingest-cursor:{m}");
    let day = Duration::from_secs(86_400);
    let token =
        broker.acquire_fenced(lease, fence, "w", Duration::from_secs(600)).await.expect("acquire").expect("free");
    let stop = Arc::new(AtomicBool::new(false));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let runner = {
        let (broker, stop, errors) = (broker.clone(), stop.clone(), errors.clone());
        tokio::spawn(async move {
            let mut n: u64 = 0;
            let failed = |what: &str, e: &dyn std::fmt::Display| errors.lock().push(format!("{what}: {e}"));
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let entry = Bytes::from(format!("e{n}"));
                let ids = match broker.append_many(&[(ingest.to_owned(), entry.clone())], day).await {
                    Ok(ids) => ids,
                    Err(e) => {
                        failed("append", &e);
                        continue;
                    }
                };
                let copies = [(user_log.to_owned(), ids[0], entry.clone())];
                let index = [(format!("event-pos:{{m}}:{n}"), Bytes::from(ids[0].to_string()))];
                let live = [("c:{m}".to_owned(), entry.clone())];
                if let Err(e) = broker.store_and_publish(&copies, &index, day, 100, &live).await {
                    failed("store_and_publish", &e);
                }
                if let Err(e) = broker.newest_ids(&[user_log.to_owned()]).await {
                    failed("newest_ids", &e);
                }
                if let Err(e) = broker.read_after(user_log, None, 5).await {
                    failed("read_after", &e);
                }
                let quota = [("quota:{m}:total".to_owned(), 1000u32), ("quota:{m}:/ws".to_owned(), 1000)];
                match broker.try_acquire_all(&quota, &format!("conn{n}"), Duration::from_secs(60)).await {
                    Ok(_) => {
                        if let Err(e) = broker.release("quota:{m}:total", &format!("conn{n}")).await {
                            failed("release", &e);
                        }
                    }
                    Err(e) => failed("try_acquire_all", &e),
                }
                let fenced = Fenced { lease, fence, holder: "w", token };
                if let Err(e) = broker.commit_fenced(&fenced, cursor, ingest, LogId { ms: ids[0].ms, seq: 0 }).await {
                    failed("commit_fenced", &e);
                }
                let ticket = format!("ticket:{{m}}:{n}");
                if let Err(e) = broker.set(&ticket, Bytes::from_static(b"t"), Some(day)).await {
                    failed("set", &e);
                }
                if let Err(e) = broker.take(&ticket).await {
                    failed("take", &e);
                }
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slot = s.cluster.slot_of("{m}");
    let mut moved = 0;
    for _ in 0..2 {
        let to = (s.cluster.owner_of(slot) + 1) % 3;
        moved += s.cluster.migrate_slot_with_keys(slot, to);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = runner.await.expect("the runner");
    let errors = errors.lock().clone();
    assert!(moved >= 5 && rounds > 10, "the fault did not bite: {moved} keys moved in {rounds} rounds");
    assert!(
        errors.is_empty(),
        "{} failed calls in {rounds} rounds, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}
