//! Every name under which the cluster shares state: broker topics, logs, keys and leases.
//!
//! One pure module so that a newcomer finds the whole layout of shared state in one page, and
//! so that edges, workers and tools can never spell a key two ways. Names are built from a
//! fixed prefix and parts; a part that comes from outside (a user id, a channel name, an event
//! id) is escaped so that it cannot contain the separator `:` or a Redis Cluster hash-tag
//! brace: `alice` stays `alice`, `a:b}` becomes `a%3Ab%7D`. Two different parts therefore never
//! make the same name, and a client cannot steer a key into another user's slot or name.
//!
//! Keys that must live in one Redis Cluster slot (all quota keys of one principal, taken in one
//! atomic call) put the principal in a hash tag: `quota:{alice}:/ws/chat`.

use std::borrow::Cow;

/// Escapes `:`, `{`, `}` and `%` in a key part (percent-encoding), borrowing when there is
/// nothing to escape, which is the common case.
pub fn part(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// Escapes `{`, `}` and `%` in the name part of a topic. A topic is one prefix and one name,
/// so a `:` in the name is unambiguous and stays readable (`c:status:eu`); braces are escaped
/// so that a client cannot choose a topic's Redis Cluster slot.
fn topic_part(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

fn escape(s: &str, colon: bool) -> Cow<'_, str> {
    let special = |b: u8| matches!(b, b'{' | b'}' | b'%') || (colon && b == b':');
    if !s.bytes().any(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            ':' if colon => out.push_str("%3A"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

// --- pub/sub topics -----------------------------------------------------------------------

/// The topic of events addressed to one user (every connection of that user listens on it).
pub fn user_topic(user: &str) -> String {
    format!("u:{}", topic_part(user))
}

/// Whether `topic` is a user's topic (see [`user_topic`]).
pub fn is_user_topic(topic: &str) -> bool {
    topic.starts_with("u:")
}

/// The topic of a channel's events.
pub fn channel_topic(channel: &str) -> String {
    format!("c:{}", topic_part(channel))
}

/// The topic on which every edge hears cluster-wide control messages (a member removed from a
/// channel, a session revoked), each acted on by the edges holding the connections concerned.
/// Client topics all start with `u:` or `c:`, so no client can subscribe to it.
pub const CONTROL_TOPIC: &str = "sys:control";

// --- persistence and replay ----------------------------------------------------------------

// The keys of one ingest shard share a hash tag (`{s<shard>}`): a worker's commit of its
// progress checks its lease's fencing token, moves the cursor and trims the log atomically.

/// The ingest log of one shard: persistent events waiting for a worker.
pub fn ingest_log(shard: u32) -> String {
    format!("ingest:{{s{shard}}}")
}

/// How far the workers got in a shard's ingest log.
pub fn ingest_cursor(shard: u32) -> String {
    format!("ingest-cursor:{{s{shard}}}")
}

/// The lease that makes one worker own a shard.
pub fn worker_lease(shard: u32) -> String {
    format!("worker-lease:{{s{shard}}}")
}

/// The fencing token of a shard's lease: it grows with every new owner, and a worker's
/// commits carry the token it got, so one that stalled past its lease writes nothing.
pub fn worker_fence(shard: u32) -> String {
    format!("worker-fence:{{s{shard}}}")
}

/// A user's replay log (their persisted events, kept for the retention period).
pub fn user_log(user: &str) -> String {
    format!("events:{}", part(user))
}

/// Maps a persisted event's id to its position in the user's log (resume by `last_event_id`).
pub fn event_position(user: &str, event_id: &str) -> String {
    format!("event-pos:{}:{}", part(user), part(event_id))
}

/// The last log position delivered to a user on an endpoint, kept across connections.
pub fn delivery_cursor(endpoint_path: &str, user: &str) -> String {
    format!("cursor:{}:{}", part(endpoint_path), part(user))
}

// --- channels, quotas, limits --------------------------------------------------------------

/// The set of a channel's members.
pub fn channel_members(channel: &str) -> String {
    format!("members:{}", part(channel))
}

/// A channel's record: it exists (where endpoints require channels to exist, `PUT
/// /v1/channels/{id}` creates it).
pub fn channel_record(channel: &str) -> String {
    format!("channel:{}", part(channel))
}

/// The set of channels a user is a listed member of (the reverse of [`channel_members`]), so
/// a user's presence reaches their channels.
pub fn user_channels(user: &str) -> String {
    format!("user-channels:{}", part(user))
}

/// A user's status text, shown with their presence (`"Playing OCVR"`).
pub fn presence_status(user: &str) -> String {
    format!("presence-status:{}", part(user))
}

/// A user's connection quota on one endpoint (hash-tagged by user, like [`user_quota_total`]).
pub fn user_quota(user: &str, endpoint_path: &str) -> String {
    format!("quota:{{{}}}:{}", part(user), part(endpoint_path))
}

/// A user's connection quota across all endpoints.
pub fn user_quota_total(user: &str) -> String {
    format!("quota:{{{}}}:total", part(user))
}

/// Lease set of the connections made with one token of `user` (by its digest); tagged with
/// the user so it is taken atomically with the user's other quotas on a Redis Cluster.
pub fn token_quota(user: &str, token_digest: &str) -> String {
    format!("quota:{{{}}}:token:{}", part(user), part(token_digest))
}

/// An API key's connection quota.
pub fn api_key_quota(key_name: &str) -> String {
    format!("quota:{{key:{}}}", part(key_name))
}

/// Throttle of one user's typing indicators in one channel.
pub fn typing_throttle(user: &str, channel: &str) -> String {
    format!("throttle:typing:{}:{}", part(user), part(channel))
}

/// A back end's event id as an idempotency key of the publish API: `pending` while the first
/// publish runs, then its answer, for the retention window.
pub fn published_id(event_id: &str) -> String {
    format!("published:{}", part(event_id))
}

/// Window counter of one user's client-published events.
pub fn publish_rate(user: &str) -> String {
    format!("rate:publish:{}", part(user))
}

/// Marks a revoked session id (a token's `sid`): tokens of that session are refused until the
/// key expires.
pub fn revoked_session(session: &str) -> String {
    format!("revoked-session:{}", part(session))
}

/// A single-use connect ticket: the claims of the token it was issued for, until it is
/// redeemed (read and deleted in one step) or expires.
pub fn connect_ticket(ticket: &str) -> String {
    format!("ticket:{}", part(ticket))
}

/// Window counter of the tickets one user was issued.
pub fn ticket_rate(user: &str) -> String {
    format!("rate:ticket:{}", part(user))
}

// --- API keys -------------------------------------------------------------------------------

/// An API key's record, under the hex SHA-256 of the key.
pub fn api_key_record(sha256_hex: &str) -> String {
    format!("apikey:{}", part(sha256_hex))
}

/// The ids of the edges that published a census (a set; stale ids are dropped by readers).
pub const NODES: &str = "nodes";

/// One edge's census: its open connections per endpoint, refreshed while it runs.
pub fn node_census(node_id: &str) -> String {
    format!("census:{}", part(node_id))
}

/// The names of the API keys created through the admin API (a set, for listing them).
pub const API_KEY_NAMES: &str = "apikey-names";

/// An API key's hash, under its name (to delete a key by name; a name is taken once).
pub fn api_key_name(name: &str) -> String {
    format!("apikey-name:{}", part(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_kept_as_written() {
        assert_eq!(user_topic("alice"), "u:alice");
        assert_eq!(channel_topic("conversation:conv-1"), "c:conversation:conv-1");
        assert_eq!(channel_topic("{hot}"), "c:%7Bhot%7D", "no client-chosen cluster slot");
        assert_eq!(user_quota("alice", "/ws/chat"), "quota:{alice}:/ws/chat");
        assert_eq!(api_key_quota("scanner"), "quota:{key:scanner}");
        assert_eq!(ingest_log(3), "ingest:{s3}");
    }

    #[test]
    fn outside_input_cannot_forge_a_separator_or_a_hash_tag() {
        // Without escaping, user `a:b` + event `c` and user `a` + event `b:c` would share a key.
        assert_ne!(event_position("a:b", "c"), event_position("a", "b:c"));
        // A brace in a user id cannot close the hash tag early and land in another user's slot.
        let key = user_quota_total("bob}x");
        assert_eq!(key, "quota:{bob%7Dx}:total");
        let tag = &key[key.find('{').unwrap() + 1..key.find('}').unwrap()];
        assert_eq!(tag, "bob%7Dx");
        // The escape character itself is escaped, so escaping is one-to-one.
        assert_ne!(user_log("%3A"), user_log(":"));
        assert_eq!(part("100%"), "100%25");
        assert!(matches!(part("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn client_topics_never_collide_with_system_topics() {
        for name in ["sys:control", "control", ""] {
            assert_ne!(user_topic(name), CONTROL_TOPIC);
            assert_ne!(channel_topic(name), CONTROL_TOPIC);
        }
    }
}
