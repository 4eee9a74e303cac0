//! Cluster-wide control messages: what one node decides and every node must act on for the
//! connections it holds. They travel on [`CONTROL_TOPIC`], which every edge subscribes to at
//! start, and are acted on by the edges holding connections concerned (found through the
//! [`ConnectionIndex`]).

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchboard_broker::{BrokerError, SharedBroker, Topic};
use switchboard_protocol::keyspace::{channel_topic, CONTROL_TOPIC};
use wildmatch::WildMatch;

use switchboard_protocol::{CloseReason, Reply};

use crate::auth::Principal;
use crate::connection::{ClosePlan, ConnHandle};
use crate::fanout::{TopicRegistry, TopicSync};
use crate::index::ConnectionIndex;

/// A message every edge acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlMessage {
    /// `user` is no longer a listed member of `channel`: their live subscriptions to it end,
    /// where the channel is member-only and their token does not grant it by pattern.
    MemberRemoved {
        /// The channel.
        channel: String,
        /// The user removed.
        user: String,
    },
    /// `channel` was deleted: live subscriptions to it end where the endpoint needs channels to
    /// exist, or needs membership the token does not grant by pattern.
    ChannelDeleted {
        /// The channel.
        channel: String,
    },
    /// A user's connections, or one session's, are revoked: each is told why (where its
    /// dialect has a message for it) and closed.
    Revoke {
        /// Every connection of this user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Every connection of this session (a token's `sid`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        /// Why, as the back end said (`logout_all`).
        reason: String,
    },
}

impl ControlMessage {
    /// Sends the message to every edge of the cluster (this one included).
    pub async fn broadcast(&self, broker: &SharedBroker) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(self).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        broker.publish(CONTROL_TOPIC, Bytes::from(body)).await
    }
}

/// Acts on control messages for this node's connections.
pub struct ControlHandler {
    index: Arc<ConnectionIndex>,
    registry: Arc<TopicRegistry>,
    topics: Arc<TopicSync>,
}

/// Tells the connection its session was revoked (if the dialect can) and closes it.
fn revoke(conn: &ConnHandle, reason: &str) {
    if let Some(notice) = conn.endpoint.codec.encode_reply(&Reply::SessionRevoked { reason }) {
        conn.send(notice);
    }
    conn.close_with(ClosePlan::Server(CloseReason::SessionRevoked, format!("Session revoked: {reason}")));
}

fn granted_by_token(principal: &Principal, channel: &str) -> bool {
    match principal {
        Principal::User(claims) => {
            claims.channels.as_deref().unwrap_or_default().iter().any(|p| WildMatch::new(p).matches(channel))
        }
        Principal::ApiKey(_) => false,
    }
}

impl ControlHandler {
    /// A handler over the node's connections and subscriptions.
    pub fn new(index: Arc<ConnectionIndex>, registry: Arc<TopicRegistry>, topics: Arc<TopicSync>) -> ControlHandler {
        ControlHandler { index, registry, topics }
    }

    /// Acts on one message from [`CONTROL_TOPIC`]; called from the broker's delivery context,
    /// so anything that waits for the broker runs on a task of its own.
    pub fn handle(&self, message: &[u8]) {
        match serde_json::from_slice::<ControlMessage>(message) {
            Ok(ControlMessage::MemberRemoved { channel, user }) => {
                let topic = channel_topic(&channel);
                let conns = self.index.user_connections(&user);
                self.end_subscriptions(conns, &channel, topic, |conn| membership_needed(conn, &channel));
            }
            Ok(ControlMessage::ChannelDeleted { channel }) => {
                let topic = channel_topic(&channel);
                let conns = self.registry.snapshot(&topic);
                self.end_subscriptions(conns, &channel, topic, |conn| {
                    conn.endpoint.config.channels.must_exist || membership_needed(conn, &channel)
                });
            }
            Ok(ControlMessage::Revoke { user, session, reason }) => {
                let mut conns = user.map(|u| self.index.user_connections(&u)).unwrap_or_default();
                conns.extend(session.map(|s| self.index.session_connections(&s)).unwrap_or_default());
                for conn in conns {
                    revoke(&conn, &reason);
                }
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable control message"),
        }
    }

    /// Ends the subscriptions to `channel` of those `conns` for which `ends` holds, and lets
    /// the broker subscription go when no local subscriber is left.
    fn end_subscriptions(
        &self,
        conns: Vec<Arc<ConnHandle>>,
        channel: &str,
        topic: String,
        ends: impl Fn(&ConnHandle) -> bool,
    ) {
        let mut released = false;
        for conn in conns {
            if conn.endpoint.is_own_stream(&topic) || !conn.endpoint.channel_allowed(channel) || !ends(&conn) {
                continue;
            }
            if conn.update_subscriptions(|s| s.remove_channel(&topic)) > 0 {
                self.registry.remove(&topic, conn.id);
                released = true;
            }
        }
        if released {
            let topics = self.topics.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = topics.reconcile(&[Topic::from(topic)]).await {
                        tracing::warn!(error = %e, "could not release a broker subscription");
                    }
                });
            }
        }
    }
}

/// Whether `conn` holds `channel` only as a listed member (the channel is member-only on its
/// endpoint and its token does not grant it by pattern).
fn membership_needed(conn: &ConnHandle, channel: &str) -> bool {
    conn.endpoint.member_only(channel) && !conn.principal.as_deref().is_some_and(|p| granted_by_token(p, channel))
}
