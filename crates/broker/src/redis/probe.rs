//! Whether Redis works for this node end to end, beyond "it answers PING".
//!
//! A demoted master answers PING, and so does a subscriber connection that Redis no longer
//! delivers to (centrifugo#1189: silent delivery loss after a Sentinel failover, health
//! green). So every [`INTERVAL`] the node
//! - asks the server it writes to for its `ROLE` (single server and Sentinel): a replica, or
//!   a master that was demoted, is not writable and the node is not ready;
//! - publishes a probe of its own on a topic only it subscribes to, and expects it back
//!   through its own subscriptions within [`DEADLINE`]. On a Redis Cluster there is one such
//!   topic per master (its hash tag chosen to fall into that master's slots), because each
//!   master's subscriptions ride a connection of their own.
//!
//! A probe that does not come back means the subscriptions are lost even though no
//! connection said so: they are restored like after any loss (and a single server's
//! subscriber connection is replaced, in case its socket went silent), and the node is not
//! ready until the probes come back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Value;

use super::conn::Commands;
use super::resubscribe::Wanted;
use crate::Topic;

/// Every probe topic starts with this (no client topic can: they start with `u:` or `c:`).
pub(super) const PREFIX: &str = "sys:probe:";
/// How often the probes go out (and the role is asked).
const INTERVAL: Duration = Duration::from_secs(1);
/// A probe not back within this means delivery is failing.
const DEADLINE: Duration = Duration::from_secs(3);
/// How often a cluster's probe topics are chosen again (slots move between masters).
const REFRESH: Duration = Duration::from_secs(30);
/// Hash slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// One probe topic and what happened to its probes.
struct ProbeTopic {
    name: Topic,
    /// The oldest probe not back yet: its number and when it went out.
    pending: Option<(u64, Instant)>,
    /// The newest probe back: one can come back before its publish is answered (the
    /// subscriber connection is another socket), and must not count as out afterwards.
    newest_seen: Option<u64>,
}

impl ProbeTopic {
    fn new(name: String) -> ProbeTopic {
        ProbeTopic { name: Topic::from(name), pending: None, newest_seen: None }
    }

    /// Whether its oldest probe still out has time to come back.
    fn delivering(&self, now: Instant) -> bool {
        self.pending.is_none_or(|(_, at)| now.duration_since(at) < DEADLINE)
    }

    /// Probe `seq` went out.
    fn sent(&mut self, seq: u64, now: Instant) {
        if self.newest_seen.is_none_or(|seen| seen < seq) {
            self.pending.get_or_insert((seq, now));
        }
    }

    /// Probe `seq` came back: it and every earlier one are accounted for.
    fn seen(&mut self, seq: u64) {
        self.newest_seen = Some(self.newest_seen.map_or(seq, |seen| seen.max(seq)));
        if self.pending.is_some_and(|(oldest, _)| seq >= oldest) {
            self.pending = None;
        }
    }
}

/// The probes' state, shared with the subscriber's push handler.
pub(super) struct Probe {
    /// This node's part of the probe topics' names.
    nonce: String,
    topics: Mutex<Vec<ProbeTopic>>,
    next: AtomicU64,
    delivering: AtomicBool,
    writable: AtomicBool,
    reachable: AtomicBool,
}

impl Probe {
    /// A probe with nothing sent yet (healthy until shown otherwise).
    pub(super) fn new() -> Arc<Probe> {
        let nonce = format!("{:x}{:x}", std::process::id(), rand_part());
        Arc::new(Probe {
            nonce,
            topics: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
            delivering: AtomicBool::new(true),
            writable: AtomicBool::new(true),
            reachable: AtomicBool::new(true),
        })
    }

    /// Whether `topic` is a probe topic (its messages are the probe's, not the node's).
    pub(super) fn owns(topic: &[u8]) -> bool {
        topic.starts_with(PREFIX.as_bytes())
    }

    /// A probe came back on `topic`.
    pub(super) fn seen(&self, topic: &[u8], payload: &[u8]) {
        let Some(seq) = std::str::from_utf8(payload).ok().and_then(|p| p.parse::<u64>().ok()) else { return };
        let mut topics = self.topics.lock();
        if let Some(t) = topics.iter_mut().find(|t| t.name.as_bytes() == topic) {
            t.seen(seq);
        }
    }

    /// Whether the probes come back.
    pub(super) fn delivering(&self) -> bool {
        self.delivering.load(Ordering::Acquire)
    }

    /// Whether the server written to says it is a master.
    pub(super) fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Whether the last look at the server got an answer.
    pub(super) fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }

    /// The probe topic of a single server.
    fn single_topic(&self) -> String {
        format!("{PREFIX}{}", self.nonce)
    }
}

/// A few random bits for the nonce, from the clock (the process id is the rest).
fn rand_part() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Runs the probes until the broker is dropped.
pub(super) async fn run(probe: Arc<Probe>, commands: Commands, subscriber: Commands, wanted: Arc<Wanted>) {
    let mut chosen_at: Option<Instant> = None;
    loop {
        tokio::time::sleep(INTERVAL).await;
        if chosen_at.is_none_or(|at| commands.is_cluster() && at.elapsed() >= REFRESH) {
            match choose_topics(&probe, &commands).await {
                Ok(names) => {
                    if subscribe_to(&probe, &subscriber, &wanted, names).await {
                        chosen_at = Some(Instant::now());
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not choose the delivery probe's topics yet"),
            }
        }
        if commands.is_cluster() {
            // Writes are routed to the masters; a PING to any node says whether it answers.
            let ping = commands.query::<Value>(&redis::cmd("PING")).await;
            probe.reachable.store(ping.is_ok(), Ordering::Release);
        } else {
            let role = commands.query::<Value>(&redis::cmd("ROLE")).await;
            probe.reachable.store(role.is_ok(), Ordering::Release);
            let master = matches!(&role, Ok(Value::Array(parts)) if matches!(parts.first(), Some(Value::BulkString(r)) if r == b"master"));
            if role.is_ok() && probe.writable.swap(master, Ordering::AcqRel) != master {
                if master {
                    tracing::info!("the Redis server this node writes to is a master again");
                } else {
                    tracing::warn!("the Redis server this node writes to is not a master (a replica, or a demoted master); not ready");
                }
            }
        }
        let now = Instant::now();
        let delivering = probe.topics.lock().iter().all(|t| t.delivering(now));
        if probe.delivering.swap(delivering, Ordering::AcqRel) && !delivering {
            tracing::warn!(
                "the node's delivery probe did not come back; restoring its subscriptions (not ready meanwhile)"
            );
            wanted.mark_lost();
            subscriber.reconnect();
        } else if delivering && !probe.delivering.load(Ordering::Acquire) {
            tracing::info!("the node's delivery probe comes back again");
        }
        send_probes(&probe, &commands).await;
    }
}

/// Publishes the next probe on every probe topic. A probe counts as out once Redis took it:
/// a publish held up by the server (`CLIENT PAUSE`) is a slow server, not lost delivery, and
/// one refused means the broker is unreachable, which readiness reports on its own.
async fn send_probes(probe: &Probe, commands: &Commands) {
    let seq = probe.next.fetch_add(1, Ordering::Relaxed);
    let names: Vec<Topic> = probe.topics.lock().iter().map(|t| t.name.clone()).collect();
    let publishes = names.iter().map(|name| {
        let cmd = redis::cmd(commands.publish_command()).arg(&**name).arg(seq.to_string()).clone();
        async move { (name, commands.query::<Value>(&cmd).await.is_ok()) }
    });
    for (name, taken) in futures_util::future::join_all(publishes).await {
        if taken {
            let now = Instant::now();
            if let Some(t) = probe.topics.lock().iter_mut().find(|t| t.name == *name) {
                t.sent(seq, now);
            }
        }
    }
}

/// The probe topics: one on a single server; one per master on a cluster, each in a slot that
/// master serves.
async fn choose_topics(probe: &Probe, commands: &Commands) -> redis::RedisResult<Vec<String>> {
    if !commands.is_cluster() {
        return Ok(vec![probe.single_topic()]);
    }
    let slots: Value = commands.query(redis::cmd("CLUSTER").arg("SLOTS")).await?;
    let masters = masters_by_slots(&slots);
    Ok(masters
        .iter()
        .filter_map(|ranges| {
            (0..1_000_000u32)
                .find(|n| slot_of(&n.to_string()).is_some_and(|s| ranges.iter().any(|(a, b)| (*a..=*b).contains(&s))))
        })
        .map(|n| format!("{PREFIX}{}:{{{n}}}", probe.nonce))
        .collect())
}

/// The hash slot of a hash tag's content.
fn slot_of(tag: &str) -> Option<u16> {
    Some(crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS)
}

/// A range of hash slots, both ends included.
type SlotRange = (u16, u16);

/// Each master's slot ranges, from a `CLUSTER SLOTS` reply.
fn masters_by_slots(reply: &Value) -> Vec<Vec<SlotRange>> {
    let mut masters: Vec<(Vec<u8>, Vec<SlotRange>)> = Vec::new();
    let Value::Array(rows) = reply else { return Vec::new() };
    for row in rows {
        let Value::Array(fields) = row else { continue };
        let (Some(Value::Int(from)), Some(Value::Int(to)), Some(Value::Array(master))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            continue;
        };
        let id = match (master.first(), master.get(1)) {
            (Some(Value::BulkString(host)), Some(Value::Int(port))) => {
                [host.as_slice(), b":", port.to_string().as_bytes()].concat()
            }
            _ => continue,
        };
        let range = (*from as u16, *to as u16);
        match masters.iter_mut().find(|(m, _)| *m == id) {
            Some((_, ranges)) => ranges.push(range),
            None => masters.push((id, vec![range])),
        }
    }
    masters.into_iter().map(|(_, ranges)| ranges).collect()
}

/// Subscribes to the chosen probe topics (and lets go of earlier ones no longer chosen);
/// true when the subscriptions are in place.
async fn subscribe_to(probe: &Probe, subscriber: &Commands, wanted: &Wanted, names: Vec<String>) -> bool {
    let (new, old): (Vec<Topic>, Vec<Topic>) = {
        let topics = probe.topics.lock();
        let new = names
            .iter()
            .filter(|n| !topics.iter().any(|t| &*t.name == n.as_str()))
            .map(|n| Topic::from(n.as_str()))
            .collect();
        let old =
            topics.iter().filter(|t| !names.iter().any(|n| n.as_str() == &*t.name)).map(|t| t.name.clone()).collect();
        (new, old)
    };
    if !new.is_empty() {
        if let Err(e) = subscriber.subscribe(&new).await {
            tracing::debug!(error = %e, "could not subscribe to the delivery probe's topics yet");
            return false;
        }
        wanted.add(&new);
    }
    {
        let mut topics = probe.topics.lock();
        topics.retain(|t| !old.contains(&t.name));
        topics.extend(new.iter().map(|n| ProbeTopic::new(n.to_string())));
    }
    if !old.is_empty() {
        wanted.remove(&old);
        let _ = subscriber.unsubscribe(&old).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_fall_into_the_slots_redis_gives_them() {
        // `CLUSTER KEYSLOT {0}` is 13907, `{1}` 9842, `{foo}` 12182 (redis-cli).
        assert_eq!(slot_of("0"), Some(13907));
        assert_eq!(slot_of("1"), Some(9842));
        assert_eq!(slot_of("foo"), Some(12182));
    }

    #[test]
    fn masters_and_their_ranges_are_read_from_cluster_slots() {
        let node = |port: i64| Value::Array(vec![Value::BulkString(b"127.0.0.1".to_vec()), Value::Int(port)]);
        let row = |a: i64, b: i64, port: i64| Value::Array(vec![Value::Int(a), Value::Int(b), node(port)]);
        let reply = Value::Array(vec![
            row(0, 5460, 7000),
            row(5461, 10922, 7001),
            row(10923, 16383, 7002),
            row(100, 100, 7001),
        ]);
        let masters = masters_by_slots(&reply);
        assert_eq!(masters, [vec![(0, 5460)], vec![(5461, 10922), (100, 100)], vec![(10923, 16383)]]);
    }

    #[test]
    fn a_probe_is_late_only_past_its_deadline_and_a_later_one_back_answers_for_it() {
        let now = Instant::now();
        let mut t = ProbeTopic::new("sys:probe:x".into());
        assert!(t.delivering(now), "nothing sent yet");
        t.sent(3, now);
        t.sent(4, now + DEADLINE / 2);
        assert!(t.delivering(now + DEADLINE / 2), "still has time");
        assert!(!t.delivering(now + DEADLINE), "the oldest one is late, whatever went out since");
        t.seen(2);
        assert!(!t.delivering(now + DEADLINE), "an older probe is no answer");
        t.seen(4);
        assert!(t.delivering(now + DEADLINE * 2));
    }

    #[test]
    fn a_probe_back_before_its_publish_was_answered_is_not_out() {
        // Otherwise it stays "out" until the next one is back, and a loop held up past the
        // deadline (behind a paused write on the same connection) finds it late.
        let now = Instant::now();
        let mut t = ProbeTopic::new("sys:probe:x".into());
        t.seen(7);
        t.sent(7, now);
        assert!(t.delivering(now + DEADLINE * 2));
        t.sent(8, now);
        assert!(!t.delivering(now + DEADLINE), "a newer one still counts");
    }
}
