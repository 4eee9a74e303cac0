//! Channel membership: who may subscribe to, and send on, a member-only channel. A user is a
//! member when listed in the channel's member set (the admin API manages it, in the broker so
//! every node sees it) or when their token's `channels` claim has a matching pattern.

use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_protocol::keyspace::channel_members;
use wildmatch::WildMatch;

use crate::auth::Principal;

/// Membership checks and changes.
#[derive(Clone)]
pub struct Membership {
    broker: SharedBroker,
}

impl Membership {
    /// Membership kept in `broker`.
    pub fn new(broker: SharedBroker) -> Membership {
        Membership { broker }
    }

    /// Whether `principal` is a member of `channel` (API keys never are).
    pub async fn is_member(&self, principal: &Principal, channel: &str) -> Result<bool, BrokerError> {
        let Principal::User(claims) = principal else { return Ok(false) };
        if claims.channels.as_deref().unwrap_or_default().iter().any(|p| WildMatch::new(p).matches(channel)) {
            return Ok(true);
        }
        self.broker.set_contains(&channel_members(channel), &claims.sub).await
    }

    /// The listed members of `channel`.
    pub async fn members(&self, channel: &str) -> Result<Vec<String>, BrokerError> {
        self.broker.set_members(&channel_members(channel)).await
    }

    /// Lists `user` as a member; true if they were not.
    pub async fn add(&self, channel: &str, user: &str) -> Result<bool, BrokerError> {
        self.broker.set_add(&channel_members(channel), user).await
    }

    /// Removes `user` from the list; true if they were listed.
    pub async fn remove(&self, channel: &str, user: &str) -> Result<bool, BrokerError> {
        self.broker.set_remove(&channel_members(channel), user).await
    }
}
