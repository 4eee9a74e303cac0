//! Which ingest shard a user's events go to.

/// The ingest log shard of `user`: the same shard for every event of a user, so one worker
/// handles them in order.
pub fn shard_for(user: &str, shards: u32) -> u32 {
    // FNV-1a: stable across processes and versions, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_always_lands_on_the_same_shard() {
        assert_eq!(shard_for("alice", 4), shard_for("alice", 4));
        let spread: std::collections::HashSet<u32> = (0..100).map(|i| shard_for(&format!("u{i}"), 4)).collect();
        assert_eq!(spread.len(), 4, "users spread over every shard");
        assert_eq!(shard_for("alice", 0), 0, "no shards configured means one");
    }
}
