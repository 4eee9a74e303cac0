//! Presence on Redis. Each user has a hash of their connections' expiry times, and each of
//! [`SHARDS`] shards a sorted set of its users' latest expiry, which expiry sweeps scan. A
//! user's hash and their shard's set share a hash tag (`{p<shard>}`), so every script runs on
//! one Redis Cluster slot; the shard is a hash of the user id, so a client cannot pick it.
//! The scripts (in `scripts/presence_*.lua`) keep time by the Redis server's clock.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{unavailable, RedisBroker};
use crate::{Presence, Result};

/// Shards of the presence deadlines (and of the hash tags users are spread over).
pub(super) const SHARDS: u32 = 16;

/// The presence scripts, loaded once per broker.
pub(super) struct PresenceScripts {
    join: Script,
    leave: Script,
    renew: Script,
    online: Script,
    sweep: Script,
}

impl PresenceScripts {
    pub(super) fn new() -> PresenceScripts {
        PresenceScripts {
            join: Script::new(include_str!("scripts/presence_join.lua")),
            leave: Script::new(include_str!("scripts/presence_leave.lua")),
            renew: Script::new(include_str!("scripts/presence_renew.lua")),
            online: Script::new(include_str!("scripts/presence_online.lua")),
            sweep: Script::new(include_str!("scripts/presence_sweep.lua")),
        }
    }
}

fn shard(user: &str) -> u32 {
    // FNV-1a, stable across processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(SHARDS)) as u32
}

/// The prefix of the connection hashes of a shard's users.
fn user_prefix(shard: u32) -> String {
    format!("presence:{{p{shard}}}:")
}

fn user_key(user: &str) -> String {
    format!("{}{user}", user_prefix(shard(user)))
}

fn deadlines_key(shard: u32) -> String {
    format!("presence-deadlines:{{p{shard}}}")
}

fn millis(ttl: Duration) -> u64 {
    ttl.as_millis().max(1) as u64
}

#[async_trait]
impl Presence for RedisBroker {
    async fn presence_join(&self, user: &str, conn: &str, ttl: Duration) -> Result<bool> {
        let mut inv = self.presence.join.prepare_invoke();
        inv.key(user_key(user)).key(deadlines_key(shard(user))).arg(user).arg(conn).arg(millis(ttl));
        let came: i64 = self.commands.invoke(&inv).await.map_err(unavailable)?;
        Ok(came == 1)
    }

    async fn presence_leave(&self, user: &str, conn: &str) -> Result<bool> {
        let mut inv = self.presence.leave.prepare_invoke();
        inv.key(user_key(user)).key(deadlines_key(shard(user))).arg(user).arg(conn);
        let went: i64 = self.commands.invoke(&inv).await.map_err(unavailable)?;
        Ok(went == 1)
    }

    async fn presence_renew(&self, entries: &[(String, String)], ttl: Duration) -> Result<Vec<String>> {
        let mut by_shard: HashMap<u32, Vec<&(String, String)>> = HashMap::new();
        for entry in entries {
            by_shard.entry(shard(&entry.0)).or_default().push(entry);
        }
        let calls = by_shard.into_iter().map(|(s, pairs)| async move {
            let mut inv = self.presence.renew.prepare_invoke();
            inv.key(deadlines_key(s)).arg(millis(ttl));
            for (user, conn) in pairs {
                inv.key(user_key(user)).arg(user).arg(conn);
            }
            self.commands.invoke::<Vec<String>>(&inv).await
        });
        let mut back = Vec::new();
        for result in futures_util::future::join_all(calls).await {
            back.extend(result.map_err(unavailable)?);
        }
        Ok(back)
    }

    async fn presence_online(&self, users: &[String]) -> Result<Vec<bool>> {
        let mut by_shard: HashMap<u32, Vec<usize>> = HashMap::new();
        for (i, user) in users.iter().enumerate() {
            by_shard.entry(shard(user)).or_default().push(i);
        }
        let calls = by_shard.into_values().map(|indexes| async move {
            let mut inv = self.presence.online.prepare_invoke();
            for i in &indexes {
                inv.key(user_key(&users[*i]));
            }
            self.commands.invoke::<Vec<i64>>(&inv).await.map(|flags| (indexes, flags))
        });
        let mut online = vec![false; users.len()];
        for result in futures_util::future::join_all(calls).await {
            let (indexes, flags) = result.map_err(unavailable)?;
            for (i, flag) in indexes.into_iter().zip(flags) {
                online[i] = flag == 1;
            }
        }
        Ok(online)
    }

    async fn presence_expired(&self, limit: usize) -> Result<Vec<String>> {
        let mut gone = Vec::new();
        for s in 0..SHARDS {
            if gone.len() >= limit {
                break;
            }
            let mut inv = self.presence.sweep.prepare_invoke();
            inv.key(deadlines_key(s)).arg(limit - gone.len()).arg(user_prefix(s));
            let users: Vec<String> = self.commands.invoke(&inv).await.map_err(unavailable)?;
            gone.extend(users);
        }
        Ok(gone)
    }
}
