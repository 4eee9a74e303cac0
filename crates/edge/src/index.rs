//! This node's connections by user and by session id: how a cluster-wide control message
//! (a member removed from a channel, a session revoked, an operator asking who is connected)
//! finds the connections it concerns without visiting every connection.
//!
//! Only connections that authenticated as a user are indexed; each entry holds the connection's
//! shared handle and its principal, so the caller can act on it directly.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::auth::Principal;
use crate::connection::ConnHandle;

/// An indexed connection: its handle and who it is.
pub type Indexed = (Arc<ConnHandle>, Arc<Principal>);

type Map = RwLock<HashMap<Box<str>, Vec<Indexed>>>;

/// Connections by user and by session id.
#[derive(Default)]
pub struct ConnectionIndex {
    by_user: Map,
    by_session: Map,
}

fn add(map: &Map, key: &str, entry: &Indexed) {
    let mut map = map.write();
    let list = map.entry(key.into()).or_default();
    if !list.iter().any(|(c, _)| c.id == entry.0.id) {
        list.push(entry.clone());
    }
}

fn remove(map: &Map, key: &str, conn_id: u64) {
    let mut map = map.write();
    if let Some(list) = map.get_mut(key) {
        list.retain(|(c, _)| c.id != conn_id);
        if list.is_empty() {
            map.remove(key);
        }
    }
}

impl ConnectionIndex {
    /// Indexes a user's connection (and its session id, when the token has one).
    pub fn add(&self, user: &str, session: Option<&str>, conn: &Arc<ConnHandle>, principal: &Arc<Principal>) {
        let entry = (conn.clone(), principal.clone());
        add(&self.by_user, user, &entry);
        if let Some(sid) = session {
            add(&self.by_session, sid, &entry);
        }
    }

    /// Forgets a connection (it ended).
    pub fn remove(&self, user: &str, session: Option<&str>, conn_id: u64) {
        remove(&self.by_user, user, conn_id);
        if let Some(sid) = session {
            remove(&self.by_session, sid, conn_id);
        }
    }

    /// The user's connections on this node.
    pub fn user_connections(&self, user: &str) -> Vec<Indexed> {
        self.by_user.read().get(user).cloned().unwrap_or_default()
    }

    /// The connections of one session (a token's `sid`) on this node.
    pub fn session_connections(&self, session: &str) -> Vec<Indexed> {
        self.by_session.read().get(session).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::testing::{connection, endpoint_with};

    #[test]
    fn finds_connections_by_user_and_session_and_forgets_them() {
        let index = ConnectionIndex::default();
        let ep = endpoint_with("/ws", |_| {});
        let (a1, _) = connection(1, ep.clone());
        let (a2, _) = connection(2, ep.clone());
        let (b1, _) = connection(3, ep);
        let who =
            |sub: &str| Arc::new(Principal::User(serde_json::from_value(serde_json::json!({"sub": sub})).unwrap()));
        index.add("alice", Some("s1"), &a1, &who("alice"));
        index.add("alice", Some("s2"), &a2, &who("alice"));
        index.add("alice", Some("s2"), &a2, &who("alice"));
        index.add("bob", None, &b1, &who("bob"));
        let ids = |v: Vec<Indexed>| v.iter().map(|(c, _)| c.id).collect::<Vec<_>>();
        assert_eq!(ids(index.user_connections("alice")), [1, 2]);
        assert_eq!(ids(index.user_connections("bob")), [3]);
        assert_eq!(ids(index.session_connections("s2")), [2]);
        index.remove("alice", Some("s2"), 2);
        assert_eq!(ids(index.user_connections("alice")), [1]);
        assert!(index.session_connections("s2").is_empty());
        index.remove("alice", Some("s1"), 1);
        index.remove("bob", None, 3);
        assert!(index.by_user.read().is_empty() && index.by_session.read().is_empty(), "no empty entries left");
    }
}
