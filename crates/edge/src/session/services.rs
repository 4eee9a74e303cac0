//! What a session may use of its node: a narrow context built once per node, so the session
//! never sees the node itself (and tests build one from an in-process broker).

use std::sync::Arc;

use crate::fanout::{TopicRegistry, TopicSync};
use crate::index::ConnectionIndex;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::presence::PresenceTracker;
use crate::publish::PublishService;
use crate::quota::QuotaKeeper;
use crate::replay::Replayer;

/// The node's services a session uses.
pub struct SessionServices {
    /// Local topic → connections.
    pub registry: Arc<TopicRegistry>,
    /// Keeps the node's broker subscriptions equal to the registry.
    pub topics: Arc<TopicSync>,
    /// Cluster-wide connection quotas.
    pub quotas: Arc<QuotaKeeper>,
    /// Replay of missed events.
    pub replayer: Replayer,
    /// Client publish (chat).
    pub publisher: Arc<PublishService>,
    /// Channel membership.
    pub membership: Membership,
    /// Connections by user and session.
    pub index: Arc<ConnectionIndex>,
    /// Who is online.
    pub presence: Arc<PresenceTracker>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Connections one user may hold across all endpoints (0: no limit).
    pub total_per_user: u32,
}
