//! Who is connected where, for operators: every edge publishes its open connections per
//! endpoint to the broker every few seconds (a key that expires if the edge dies), and any
//! edge answers `GET /v1/connections` from all of them. One user's connections are read from
//! the cluster-wide quota slots they hold, which name the node and connection of each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use switchboard_broker::BrokerError;
use switchboard_protocol::keyspace::{node_census, user_quota, user_quota_total, NODES};
use switchboard_protocol::timefmt::now_millis;

use crate::node::Node;

/// How often an edge refreshes its census.
const PERIOD: Duration = Duration::from_secs(5);
/// How long a census outlives its edge.
const TTL: Duration = Duration::from_secs(15);

/// One edge's open connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeCensus {
    /// The edge's id (as in quota slot holders and logs).
    pub node: String,
    /// Open connections per endpoint path.
    pub connections: BTreeMap<String, i64>,
    /// When it was counted (unix ms).
    pub counted_ms: u64,
}

/// This node's census now.
pub fn count(node: &Node) -> NodeCensus {
    let connections = node
        .endpoints()
        .iter()
        .map(|e| (e.path().to_owned(), node.metrics().connections.with_label_values(&[e.path()]).get()))
        .collect();
    NodeCensus { node: node.id().to_owned(), connections, counted_ms: now_millis() }
}

/// Publishes this node's census every [`PERIOD`] until aborted (see [`withdraw`]).
pub fn spawn_publisher(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = publish(&node).await {
                tracing::debug!(error = %e, "could not publish the connection census");
            }
            tokio::time::sleep(PERIOD).await;
        }
    })
}

async fn publish(node: &Node) -> Result<(), BrokerError> {
    // A census always serializes (strings and numbers).
    let body = serde_json::to_vec(&count(node)).unwrap_or_default();
    node.broker().set(&node_census(node.id()), Bytes::from(body), Some(TTL)).await?;
    node.broker().set_add(NODES, node.id()).await.map(|_| ())
}

/// Removes this node's census (it stopped).
pub async fn withdraw(node: &Node) {
    let broker = node.broker();
    let _ = broker.delete(&node_census(node.id())).await;
    let _ = broker.set_remove(NODES, node.id()).await;
}

/// Every live edge's census, this node's counted now; ids whose census expired are dropped.
pub async fn cluster(node: &Node) -> Result<Vec<NodeCensus>, BrokerError> {
    let broker = node.broker();
    let mut all = vec![count(node)];
    let mut ids = broker.set_members(NODES).await?;
    ids.sort();
    for id in ids.into_iter().filter(|id| id != node.id()) {
        match broker.get(&node_census(&id)).await? {
            Some(body) => all.extend(serde_json::from_slice::<NodeCensus>(&body).ok()),
            None => {
                broker.set_remove(NODES, &id).await?;
            }
        }
    }
    Ok(all)
}

/// One of a user's connections, as its quota slots name it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UserConnection {
    /// The edge it is on.
    pub node: String,
    /// Its id on that edge.
    pub connection: String,
    /// The endpoint, when a per-endpoint quota names it.
    pub endpoint: Option<String>,
}

/// A user's open connections anywhere in the cluster, from the quota slots they hold: the
/// account-wide slot (`max_connections_per_user`) covers every endpoint; endpoints with their
/// own limit tell which endpoint each is on.
pub async fn user_connections(node: &Node, user: &str) -> Result<Vec<UserConnection>, BrokerError> {
    let broker = node.broker();
    let mut by_holder: BTreeMap<String, Option<String>> = BTreeMap::new();
    if node.config().max_connections_per_user > 0 {
        for holder in broker.holders(&user_quota_total(user)).await? {
            by_holder.entry(holder).or_default();
        }
    }
    for ep in node.endpoints().iter().filter(|e| e.limits().max_connections_per_user > 0) {
        for holder in broker.holders(&user_quota(user, ep.path())).await? {
            by_holder.insert(holder, Some(ep.path().to_owned()));
        }
    }
    Ok(by_holder
        .into_iter()
        .map(|(holder, endpoint)| {
            let (node, connection) = holder.rsplit_once(':').unwrap_or((holder.as_str(), ""));
            UserConnection { node: node.to_owned(), connection: connection.to_owned(), endpoint }
        })
        .collect())
}
