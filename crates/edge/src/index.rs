//! This node's connections by user and by session id: how a cluster-wide control message (a
//! member removed from a channel, a session revoked) finds the connections it concerns without
//! visiting every connection.
//!
//! A user's connections are found where the fan-out already keeps them: every connection of
//! a user is registered on the user's topic in the [`TopicRegistry`], so that costs nothing
//! more per connection. Connections whose token names a session (`sid`) are also indexed by it
//! here.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use switchboard_protocol::keyspace::user_topic;

use crate::connection::ConnHandle;
use crate::fanout::TopicRegistry;

/// Connections by user and by session id.
pub struct ConnectionIndex {
    registry: Arc<TopicRegistry>,
    by_session: RwLock<HashMap<Box<str>, Vec<Arc<ConnHandle>>>>,
}

impl ConnectionIndex {
    /// An index over the node's registry.
    pub fn new(registry: Arc<TopicRegistry>) -> ConnectionIndex {
        ConnectionIndex { registry, by_session: RwLock::default() }
    }

    /// Indexes a connection by the session its token names.
    pub fn add_session(&self, session: &str, conn: &Arc<ConnHandle>) {
        let mut map = self.by_session.write();
        let list = map.entry(session.into()).or_default();
        if !list.iter().any(|c| c.id == conn.id) {
            list.push(conn.clone());
        }
    }

    /// Forgets a connection of a session (it ended).
    pub fn remove_session(&self, session: &str, conn_id: u64) {
        let mut map = self.by_session.write();
        if let Some(list) = map.get_mut(session) {
            list.retain(|c| c.id != conn_id);
            if list.is_empty() {
                map.remove(session);
            }
        }
    }

    /// The user's connections on this node.
    pub fn user_connections(&self, user: &str) -> Vec<Arc<ConnHandle>> {
        self.registry.snapshot(&user_topic(user))
    }

    /// The connections of one session (a token's `sid`) on this node.
    pub fn session_connections(&self, session: &str) -> Vec<Arc<ConnHandle>> {
        self.by_session.read().get(session).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::testing::{connection, endpoint_with};

    #[test]
    fn finds_connections_by_user_and_session_and_forgets_them() {
        let registry = Arc::new(TopicRegistry::default());
        let index = ConnectionIndex::new(registry.clone());
        let ep = endpoint_with("/ws", |_| {});
        let (a1, _) = connection(1, ep.clone());
        let (a2, _) = connection(2, ep.clone());
        let (b1, _) = connection(3, ep);
        for (user, conn) in [("alice", &a1), ("alice", &a2), ("bob", &b1)] {
            registry.add(user_topic(user), conn);
        }
        index.add_session("s1", &a1);
        index.add_session("s2", &a2);
        index.add_session("s2", &a2);
        let ids = |v: Vec<Arc<ConnHandle>>| {
            let mut ids: Vec<u64> = v.iter().map(|c| c.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(index.user_connections("alice")), [1, 2]);
        assert_eq!(ids(index.user_connections("bob")), [3]);
        assert_eq!(ids(index.session_connections("s2")), [2]);
        index.remove_session("s2", 2);
        assert!(index.session_connections("s2").is_empty());
        index.remove_session("s1", 1);
        assert!(index.by_session.read().is_empty(), "no empty entries left");
    }
}
