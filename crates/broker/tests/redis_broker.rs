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
