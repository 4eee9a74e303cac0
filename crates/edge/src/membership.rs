//! Channels and their members: which channels exist (where an endpoint requires channels to be
//! created first) and who may subscribe to, and send on, a member-only channel. A user is a
//! member when listed in the channel's member set (the admin API manages it, in the broker so
//! every node sees it) or when their token's `channels` claim has a matching pattern.
//!
//! Each listing is kept in both directions: the channel's member set and the user's channel
//! set (so a user's presence reaches the channels they are in). The two are separate keys
//! (they live in different Redis Cluster slots), written one after the other: a crash between
//! the two writes leaves at most one presence announcement missing or extra, never a member
//! who cannot subscribe.

use bytes::Bytes;
use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_protocol::keyspace::{channel_members, channel_record, user_channels};
use switchboard_protocol::timefmt::now_millis;
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

    /// The channels `user` is a listed member of.
    pub async fn channels_of(&self, user: &str) -> Result<Vec<String>, BrokerError> {
        self.broker.set_members(&user_channels(user)).await
    }

    /// Lists `user` as a member; true if they were not.
    pub async fn add(&self, channel: &str, user: &str) -> Result<bool, BrokerError> {
        let added = self.broker.set_add(&channel_members(channel), user).await?;
        self.broker.set_add(&user_channels(user), channel).await?;
        Ok(added)
    }

    /// Removes `user` from the list; true if they were listed.
    pub async fn remove(&self, channel: &str, user: &str) -> Result<bool, BrokerError> {
        let removed = self.broker.set_remove(&channel_members(channel), user).await?;
        self.broker.set_remove(&user_channels(user), channel).await?;
        Ok(removed)
    }

    /// Whether `channel` was created (and not deleted since).
    pub async fn exists(&self, channel: &str) -> Result<bool, BrokerError> {
        Ok(self.broker.get(&channel_record(channel)).await?.is_some())
    }

    /// Creates `channel` (creating an existing channel keeps its members).
    pub async fn create(&self, channel: &str) -> Result<(), BrokerError> {
        let record = Bytes::from(format!("{{\"created_at\":{}}}", now_millis()));
        self.broker.set(&channel_record(channel), record, None).await
    }

    /// Deletes `channel` and its member list; true if it existed or had members.
    pub async fn delete(&self, channel: &str) -> Result<bool, BrokerError> {
        let members = self.members(channel).await?;
        for user in &members {
            self.broker.set_remove(&user_channels(user), channel).await?;
        }
        let listed = self.broker.delete(&channel_members(channel)).await?;
        let existed = self.broker.delete(&channel_record(channel)).await?;
        Ok(existed || listed)
    }
}
