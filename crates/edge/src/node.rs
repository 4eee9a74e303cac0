//! The node: the process-wide machinery every connection and HTTP handler reaches through one
//! cheap-to-clone handle (`Arc<Node>`): config, broker, local registry, auth, metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchboard_broker::memory::MemoryHub;
use switchboard_broker::redis::{RedisBroker, RedisSettings};
use switchboard_broker::{BrokerError, DeliverySink, SharedBroker};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{ApiKeyStore, JwtVerifier};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::endpoint::EndpointRuntime;
use crate::metrics::Metrics;
use crate::quota::QuotaKeeper;
use crate::registry::TopicRegistry;
use crate::topics::TopicSync;

/// Everything shared by the connections and handlers of one node.
pub struct Node {
    /// The validated config.
    pub config: Arc<Config>,
    /// Shared state.
    pub broker: SharedBroker,
    /// Local topic → connections map.
    pub registry: Arc<TopicRegistry>,
    /// Keeps broker subscriptions equal to local needs.
    pub topics: TopicSync,
    /// Verifies user tokens.
    pub jwt: JwtVerifier,
    /// API keys.
    pub api_keys: ApiKeyStore,
    /// Cluster-wide connection quotas held by this node.
    pub quotas: Arc<QuotaKeeper>,
    /// This node's unique id (quota holders, logs).
    pub id: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Local fan-out (also used by the broker as its delivery sink).
    pub dispatcher: Arc<Dispatcher>,
    /// Configured endpoints.
    pub endpoints: Vec<Arc<EndpointRuntime>>,
    /// Connection tasks, so a drain can wait for them.
    pub connections: TaskTracker,
    /// Cancelled when the node starts draining.
    pub draining: CancellationToken,
    next_conn_id: AtomicU64,
}

/// The parts of a node that exist before its broker: the broker delivers into the dispatcher.
struct Core {
    jwt: JwtVerifier,
    metrics: Arc<Metrics>,
    registry: Arc<TopicRegistry>,
    dispatcher: Arc<Dispatcher>,
}

impl Core {
    fn new(config: &Config) -> Result<Core, NodeError> {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(TopicRegistry::default());
        Ok(Core {
            jwt: JwtVerifier::from_config(config)?,
            dispatcher: Dispatcher::new(registry.clone(), metrics.clone()),
            metrics,
            registry,
        })
    }
}

/// Why a node could not be built.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The JWT settings are unusable.
    #[error(transparent)]
    Jwt(#[from] crate::auth::jwt::JwtConfigError),
    /// The broker could not be reached.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Node {
    /// A node on the in-process broker (`switchboard serve` without Redis).
    pub fn embedded(config: Config) -> Result<Arc<Node>, NodeError> {
        let hub = MemoryHub::new();
        Self::with_broker(config, |sink| Arc::new(hub.node(sink)))
    }

    /// A node on the broker the config names: Redis (single server or cluster) when
    /// `redis_url` is set, else the in-process broker. Fails if Redis cannot be reached now.
    pub async fn connect(config: Config) -> Result<Arc<Node>, NodeError> {
        if config.redis_url.is_empty() {
            return Self::embedded(config);
        }
        let core = Core::new(&config)?;
        let settings = RedisSettings::new(&config.redis_url, config.redis_cluster);
        let broker: SharedBroker = Arc::new(RedisBroker::connect(&settings, core.dispatcher.clone()).await?);
        Ok(Self::assemble(config, core, broker))
    }

    /// A node whose broker is made by `make_broker` from the node's delivery sink.
    pub fn with_broker(
        config: Config,
        make_broker: impl FnOnce(Arc<dyn DeliverySink>) -> SharedBroker,
    ) -> Result<Arc<Node>, NodeError> {
        let core = Core::new(&config)?;
        let broker = make_broker(core.dispatcher.clone());
        Ok(Self::assemble(config, core, broker))
    }

    fn assemble(config: Config, core: Core, broker: SharedBroker) -> Arc<Node> {
        let endpoints = config.endpoints.iter().cloned().map(|e| Arc::new(EndpointRuntime::new(e))).collect();
        let id = format!("node_{}", ulid::Ulid::new());
        Arc::new(Node {
            api_keys: ApiKeyStore::new(broker.clone(), config.api_keys.clone()),
            quotas: Arc::new(QuotaKeeper::new(broker.clone(), config.quota_lease, id.clone())),
            id,
            topics: TopicSync::new(broker.clone(), core.registry.clone()),
            config: Arc::new(config),
            broker,
            registry: core.registry,
            jwt: core.jwt,
            metrics: core.metrics,
            dispatcher: core.dispatcher,
            endpoints,
            connections: TaskTracker::new(),
            draining: CancellationToken::new(),
            next_conn_id: AtomicU64::new(1),
        })
    }

    /// A node-unique connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the node accepts new connections (not draining; `/readyz` also pings the broker).
    pub fn is_accepting(&self) -> bool {
        !self.draining.is_cancelled()
    }
}
