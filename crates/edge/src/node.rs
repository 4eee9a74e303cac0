//! The node: the composition root. It builds every service of an edge from the config and the
//! broker, wires them together, and hands each part only what it needs (the connection actor a
//! [`ConnContext`], sessions their [`SessionServices`], the HTTP handlers the node itself).
//! Nothing below it imports it.

use std::sync::{Arc, OnceLock};

use switchboard_broker::memory::MemoryHub;
use switchboard_broker::redis::RedisBroker;
use switchboard_broker::{BrokerError, DeliverySink, SharedBroker, Topic};
use switchboard_protocol::keyspace::CONTROL_TOPIC;

use crate::auth::{ApiKeyStore, Authenticator, JwtVerifier, TicketStore};
use crate::config::Config;
use crate::connection::ConnContext;
use crate::control::ControlHandler;
use crate::endpoint::EndpointRuntime;
use crate::fanout::{Dispatcher, TopicRegistry, TopicSync};
use crate::inbox::Inbox;
use crate::index::ConnectionIndex;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::presence::{PresenceAnnouncer, PresenceCounter, PresenceListener, PresenceTracker};
use crate::publish::PublishService;
use crate::quota::QuotaKeeper;
use crate::replay::Replayer;
use crate::session::SessionServices;

/// Everything shared by the connections and handlers of one node.
pub struct Node {
    id: String,
    config: Arc<Config>,
    broker: SharedBroker,
    endpoints: Vec<Arc<EndpointRuntime>>,
    auth: Authenticator,
    sessions: Arc<SessionServices>,
    conns: Arc<ConnContext>,
    announcers: OnceLock<Vec<Arc<PresenceAnnouncer>>>,
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

/// The parts of a node that exist before its broker: the broker delivers into the inbox.
struct Core {
    metrics: Arc<Metrics>,
    registry: Arc<TopicRegistry>,
    inbox: Arc<Inbox>,
}

impl Core {
    fn new() -> Core {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(TopicRegistry::default());
        let dispatcher = Dispatcher::new(registry.clone(), metrics.clone());
        let inbox = Arc::new(Inbox::new(dispatcher));
        Core { metrics, registry, inbox }
    }
}

/// Connects to the broker the config names: Redis (single server, cluster, or a Sentinel
/// group's master) when one is configured, else a fresh in-process one. Its deliveries go to
/// `sink`.
pub async fn connect_broker(config: &Config, sink: Arc<dyn DeliverySink>) -> Result<SharedBroker, BrokerError> {
    match config.redis_settings() {
        None => Ok(Arc::new(MemoryHub::new().node(sink))),
        Some(settings) => Ok(Arc::new(RedisBroker::connect(&settings, sink).await?)),
    }
}

impl Node {
    /// A node on the in-process broker (`switchboard serve` without Redis).
    pub fn embedded(config: Config) -> Result<Arc<Node>, NodeError> {
        let hub = MemoryHub::new();
        Self::with_broker(config, |sink| Arc::new(hub.node(sink)))
    }

    /// A node on the broker the config names. Fails if Redis cannot be reached now.
    pub async fn connect(config: Config) -> Result<Arc<Node>, NodeError> {
        let jwt = JwtVerifier::from_config(&config)?;
        let core = Core::new();
        let broker = connect_broker(&config, core.inbox.clone()).await?;
        Ok(Self::assemble(config, core, broker, jwt))
    }

    /// A node whose broker is made by `make_broker` from the node's delivery sink.
    pub fn with_broker(
        config: Config,
        make_broker: impl FnOnce(Arc<dyn DeliverySink>) -> SharedBroker,
    ) -> Result<Arc<Node>, NodeError> {
        let jwt = JwtVerifier::from_config(&config)?;
        let core = Core::new();
        let broker = make_broker(core.inbox.clone());
        Ok(Self::assemble(config, core, broker, jwt))
    }

    fn assemble(config: Config, core: Core, broker: SharedBroker, jwt: JwtVerifier) -> Arc<Node> {
        let Core { metrics, registry, inbox } = core;
        let id = format!("node_{}", ulid::Ulid::new());
        let endpoints = config.endpoints.iter().cloned().map(|e| Arc::new(EndpointRuntime::new(e))).collect();
        let topics = Arc::new(TopicSync::new(broker.clone(), registry.clone()));
        let index = Arc::new(ConnectionIndex::new(registry.clone()));
        inbox.set_control(ControlHandler::new(index.clone(), registry.clone(), topics.clone()));
        let membership = Membership::new(broker.clone());
        let presence = Arc::new(PresenceTracker::new(broker.clone(), config.presence_lease, id.clone()));
        presence.listen(Arc::new(PresenceCounter(metrics.clone())));
        let p = &config.persistence;
        let sessions = Arc::new(SessionServices {
            quotas: Arc::new(QuotaKeeper::new(broker.clone(), config.quota_lease, id.clone())),
            replayer: Replayer::new(broker.clone(), p.retention, p.replay_limit, metrics.clone()),
            publisher: Arc::new(PublishService::new(broker.clone(), p.clone(), membership.clone())),
            membership,
            registry,
            topics,
            index,
            presence,
            metrics: metrics.clone(),
            total_per_user: config.max_connections_per_user,
        });
        let conns = Arc::new(ConnContext::new(metrics.clone(), config.drain_window));
        inbox.set_connections(conns.clone());
        crate::metrics::register_broker_health(metrics.registry(), broker.clone(), conns.draining.clone());
        Arc::new(Node {
            auth: Authenticator::new(
                jwt,
                ApiKeyStore::new(broker.clone(), config.api_keys.clone()),
                TicketStore::new(broker.clone(), config.tickets.clone()),
            ),
            conns,
            config: Arc::new(config),
            id,
            broker,
            endpoints,
            sessions,
            announcers: OnceLock::new(),
        })
    }

    /// Subscribes the node to the cluster's control messages (before it serves).
    pub async fn join_cluster(&self) -> Result<(), BrokerError> {
        self.broker.subscribe(&[Topic::from(CONTROL_TOPIC)]).await
    }

    /// Starts announcing presence transitions, once per dialect and announcement channel
    /// whose endpoints ask for it (`presence.announce`). Runs inside the runtime, before the
    /// node serves; later calls do nothing.
    pub fn start_presence_announcements(&self) {
        self.announcers.get_or_init(|| {
            type Key<'a> = (switchboard_protocol::DialectKind, &'a str);
            let mut announcers: Vec<(Key<'_>, Arc<PresenceAnnouncer>)> = Vec::new();
            for ep in self.endpoints.iter().filter(|e| e.config.presence.announce) {
                let key = (ep.codec.kind(), ep.config.presence.channel.as_str());
                if announcers.iter().any(|(k, _)| *k == key) {
                    continue;
                }
                let s = &self.sessions;
                let channel = (!key.1.is_empty()).then(|| key.1.to_owned());
                let announcer = PresenceAnnouncer::spawn(
                    ep.codec,
                    channel,
                    s.membership.clone(),
                    s.publisher.clone(),
                    self.broker.clone(),
                    s.metrics.clone(),
                );
                s.presence.listen(announcer.clone());
                announcers.push((key, announcer));
            }
            announcers.into_iter().map(|(_, a)| a).collect()
        });
    }

    /// Announces `user` online again (their status changed while online).
    pub(crate) fn reannounce_online(&self, user: &str) {
        for announcer in self.announcers.get().into_iter().flatten() {
            announcer.changed(user, true);
        }
    }

    /// The node's unique id (quota holders, worker leases, logs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The validated config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The paths of the WebSocket endpoints served.
    pub fn endpoint_paths(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.path()).collect()
    }

    /// Whether a local connection is registered on `topic` (for tests and diagnostics).
    pub fn has_local_subscribers(&self, topic: &str) -> bool {
        self.sessions.registry.has(topic)
    }

    /// Whether the node accepts new connections (not draining; `/readyz` also pings the broker).
    pub fn is_accepting(&self) -> bool {
        !self.conns.draining.is_cancelled()
    }

    /// Starts a graceful drain: no new connections, every open one closed within the drain
    /// window.
    pub fn start_draining(&self) {
        self.conns.start_draining();
    }

    pub(crate) fn broker(&self) -> &SharedBroker {
        &self.broker
    }

    pub(crate) fn endpoints(&self) -> &[Arc<EndpointRuntime>] {
        &self.endpoints
    }

    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    pub(crate) fn sessions(&self) -> &Arc<SessionServices> {
        &self.sessions
    }

    pub(crate) fn conns(&self) -> &Arc<ConnContext> {
        &self.conns
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.sessions.metrics
    }

    pub(crate) fn publisher(&self) -> &PublishService {
        &self.sessions.publisher
    }

    pub(crate) fn membership(&self) -> &Membership {
        &self.sessions.membership
    }

    pub(crate) fn quotas(&self) -> &Arc<QuotaKeeper> {
        &self.sessions.quotas
    }

    pub(crate) fn presence(&self) -> &Arc<PresenceTracker> {
        &self.sessions.presence
    }
}
