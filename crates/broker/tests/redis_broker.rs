//! The Redis broker passes the same behavioural suite as the in-process broker, on a single
//! real `redis-server` and on a real local 3-master Redis Cluster.

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_broker::conformance::{self, NodeFactory};
use switchboard_broker::redis::{RedisBroker, RedisSettings};
use switchboard_broker::{DeliverySink, SharedBroker};
use switchboard_testkit::redis::{RedisCluster, RedisServer};

struct Redis(RedisSettings);

#[async_trait]
impl NodeFactory for Redis {
    async fn node(&self, sink: Arc<dyn DeliverySink>) -> SharedBroker {
        Arc::new(RedisBroker::connect(&self.0, sink).await.expect("connect to redis"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_passes_the_behavioural_suite_on_a_single_server() {
    let server = RedisServer::start();
    conformance::run_all(&Redis(RedisSettings::new(&server.url(), false))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_passes_the_behavioural_suite_on_a_redis_cluster() {
    let cluster = RedisCluster::start(3);
    conformance::run_all(&Redis(RedisSettings::new(&cluster.urls(), true))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_redis_refuses_is_an_error_not_already_stored() {
    use switchboard_broker::{Broker, Log, LogId};
    let server = RedisServer::start();
    let broker =
        RedisBroker::connect(&RedisSettings::new(&server.url(), false), Arc::new(switchboard_testkit::NoDeliveries))
            .await
            .expect("connect");
    let day = std::time::Duration::from_secs(86_400);
    let id = LogId { ms: 1_770_552_000_000, seq: 1 };
    let entry = || bytes::Bytes::from_static(b"event");
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    server.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    assert!(broker.append_with_id("events:alice", id, entry(), day, 10).await.is_err(), "out of memory is an error");
    let many = [("events:alice".to_owned(), id, entry())];
    assert!(broker.append_with_id_many(&many, day, 10).await.is_err(), "in a batch too: the worker must retry it");
    let stored = broker.store_and_publish(&many, &[], day, 10, &[]).await;
    assert!(stored.is_err(), "and in the worker's store-and-publish");
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(broker.append_with_id("events:alice", id, entry(), day, 10).await.expect("stored"));
    assert!(!broker.append_with_id("events:alice", id, entry(), day, 10).await.expect("already there"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_wait_for_their_replica_and_are_not_acknowledged_without_it() {
    use switchboard_broker::{BrokerError, Log};
    let master = RedisServer::start();
    let replica = RedisServer::start();
    replica.cli(&["REPLICAOF", "127.0.0.1", &master.port.to_string()]);
    let deadline = std::time::Instant::now() + switchboard_testkit::WAIT;
    while !replica.cli(&["INFO", "replication"]).contains("master_link_status:up") {
        assert!(std::time::Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let settings = RedisSettings::new(&master.url(), false).with_replicas_ack(1, std::time::Duration::from_millis(200));
    let broker = RedisBroker::connect(&settings, Arc::new(switchboard_testkit::NoDeliveries)).await.expect("connect");
    let day = std::time::Duration::from_secs(86_400);
    let entries = [("ingest:{s0}".to_owned(), bytes::Bytes::from_static(b"e1"))];
    let ids = broker.append_many(&entries, day).await.expect("acknowledged once the replica has it");
    let on_replica = replica.cli(&["XRANGE", "ingest:{s0}", "-", "+"]);
    assert!(on_replica.contains(&ids[0].to_string()), "the replica has it already: {on_replica}");
    // A replica that does not answer: the append is refused as not replicated, in bounded time.
    replica.signal("STOP");
    let started = std::time::Instant::now();
    let refused = broker.append_many(&entries, day).await;
    // So is every other write someone relies on: a single-use ticket taken, a revocation set.
    use switchboard_broker::KeyValue;
    let taken = broker.take("ticket:t1").await;
    let set = broker.set("revoked:s1", bytes::Bytes::from_static(b"1"), None).await;
    // What may be lost in a failover does not wait (through the replicated writer it would
    // be refused like the others): a throttle, a saved position.
    let throttle = broker.set_if_absent_lossy("typing:u1", bytes::Bytes::from_static(b"1"), None).await;
    let position = broker.set_lossy("cursor:u1", bytes::Bytes::from_static(b"7"), None).await;
    replica.signal("CONT");
    assert!(matches!(throttle, Ok(true)), "{throttle:?}");
    assert!(position.is_ok(), "{position:?}");
    assert!(matches!(refused, Err(BrokerError::NotReplicated { acked: 0, wanted: 1 })), "{refused:?}");
    assert!(matches!(taken, Err(BrokerError::NotReplicated { .. })), "{taken:?}");
    assert!(matches!(set, Err(BrokerError::NotReplicated { .. })), "{set:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "it waited {:?}", started.elapsed());
    // Refused for lack of a replica, not lost: the write is on the master.
    assert_eq!(master.cli(&["GET", "revoked:s1"]).trim(), "1");
    broker.append_many(&entries, day).await.expect("acknowledged again once the replica is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_appends_wait_for_the_replica_of_their_slots_master() {
    use switchboard_broker::Log;
    let cluster = RedisCluster::start_with_replicas(3, 1);
    let settings =
        RedisSettings::new(&cluster.urls(), true).with_replicas_ack(1, std::time::Duration::from_millis(500));
    let broker = RedisBroker::connect(&settings, Arc::new(switchboard_testkit::NoDeliveries)).await.expect("connect");
    let day = std::time::Duration::from_secs(86_400);
    let entries: Vec<(String, bytes::Bytes)> =
        (0..4).map(|s| (format!("ingest:{{s{s}}}"), bytes::Bytes::from_static(b"e"))).collect();
    let ids = broker.append_many(&entries, day).await.expect("acknowledged once each shard's replica has it");
    assert_eq!(ids.len(), 4);
}
