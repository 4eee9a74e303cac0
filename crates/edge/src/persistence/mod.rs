//! Persistence and replay of user-addressed events (SPEC §6).
//!
//! The publish API appends persistent events to a sharded ingest log and answers once the
//! broker holds them. The [`worker`] copies each entry into the addressed user's log under the
//! ingest entry's id (idempotent, so reprocessing after a crash is harmless) and then
//! publishes it for live fan-out carrying that id (`sid`). On connect, [`replay`] sends what a
//! user missed from their log before any live event.

pub mod replay;
pub mod worker;

use switchboard_broker::LogId;

/// The ingest log shard a user's events go to: the same shard for every event of a user,
/// so one worker handles them in order.
pub fn shard_for(user: &str, shards: u32) -> u32 {
    // FNV-1a: stable across processes and versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

/// The broker topic on which edges tell every worker that they appended to the ingest log
/// (an empty message after each append), so that workers in other processes start at once.
/// Client topics all start with `u:` or `c:`, so no client can subscribe to it.
pub const INGEST_WAKE_TOPIC: &str = "sys:ingest-appended";

/// The ingest log of a shard.
pub fn ingest_log(shard: u32) -> String {
    format!("ingest:{shard}")
}

/// How far the worker got in a shard.
pub fn ingest_cursor_key(shard: u32) -> String {
    format!("ingest-cursor:{shard}")
}

/// The lease that makes one worker own a shard.
pub fn worker_lease_key(shard: u32) -> String {
    format!("worker-lease:{shard}")
}

/// A user's replay log.
pub fn user_log(user: &str) -> String {
    format!("events:{user}")
}

/// Maps a persisted event's id to its position in the user's log (resume by `last_event_id`).
pub fn event_position_key(user: &str, event_id: &str) -> String {
    format!("event-sid:{user}:{event_id}")
}

/// The last position delivered to a user on an endpoint, kept across connections.
pub fn delivery_cursor_key(path: &str, user: &str) -> String {
    format!("cursor:{path}:{user}")
}

/// Parses an event's `sid`.
pub fn parse_sid(sid: Option<&str>) -> Option<LogId> {
    sid.and_then(LogId::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_always_lands_on_the_same_shard() {
        assert_eq!(shard_for("alice", 4), shard_for("alice", 4));
        let spread: std::collections::HashSet<u32> = (0..100).map(|i| shard_for(&format!("u{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "users spread over every shard");
    }
}
