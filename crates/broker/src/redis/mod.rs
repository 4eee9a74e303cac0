//! The Redis broker: the same semantics as the in-process one, on a single Redis server or a
//! Redis Cluster.
//!
//! Two connections per node (per master in cluster mode, handled by the client): one
//! multiplexed command connection that pipelines concurrent calls, and one dedicated
//! subscriber connection (RESP3 push messages) whose messages go straight to the node's
//! [`DeliverySink`]. A worker's blocking reads of its ingest shards get connections of their
//! own ([`blocking`]), made on first use. Both reconnect with backoff on their own; the subscriber resubscribes to
//! every topic it held, so open client WebSockets receive events again once Redis is back.
//! In cluster mode fan-out uses sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`), routed to the
//! topic's slot owner and followed across `MOVED` and failover by the cluster client.
//!
//! Atomic multi-step operations (leases, presence) are Lua scripts kept in `scripts/`, loaded
//! once and run by hash.

mod blocking;
mod conn;
mod copies;
mod link;
mod logs;
mod presence;
mod probe;
mod replicated;
mod resubscribe;
mod target;
mod witnesses;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{PushKind, Script, Value};

use crate::clock::{Clock, SystemClock};
use crate::{Broker, BrokerError, DeliverySink, Fenced, KeyValue, LeaseRequest, Leases, LogId, PubSub, Result, Topic};
use conn::Commands;
use copies::CopyPipeline;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL for a single server; the seed nodes for a cluster; nothing with `sentinel`.
    pub urls: Vec<String>,
    /// Whether `urls` name a Redis Cluster.
    pub cluster: bool,
    /// The master of a group that Redis Sentinel watches, instead of `urls`.
    pub sentinel: Option<SentinelSettings>,
    /// Timeout of one command.
    pub command_timeout: Duration,
    /// Replicas that must have a persistent event before its publish is acknowledged (0: the
    /// master's answer is enough); see [`RedisSettings::with_replicas_ack`].
    pub replicas_ack: u32,
    /// How long an acknowledgement waits for those replicas.
    pub ack_timeout: Duration,
}

/// A Redis master found, and followed across failovers, through Redis Sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// The group's name at the sentinels (`mymaster`).
    pub master: String,
    /// The sentinels, `host:port` or `redis://[:password@]host:port` (a sentinel's own auth).
    pub sentinels: Vec<String>,
    /// The master's (and replicas') user, if ACLs are on.
    pub username: Option<String>,
    /// The master's (and replicas') password (`requirepass`), if any.
    pub password: Option<String>,
    /// The database number.
    pub db: i64,
}

impl RedisSettings {
    /// Parses `redis_url` as configured: one URL, or several separated by commas (cluster
    /// seeds).
    pub fn new(redis_url: &str, cluster: bool) -> Self {
        RedisSettings {
            urls: redis_url.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            cluster,
            sentinel: None,
            command_timeout: Duration::from_secs(5),
            replicas_ack: 0,
            ack_timeout: Duration::from_millis(100),
        }
    }

    /// The master of a Sentinel group.
    pub fn sentinel(sentinel: SentinelSettings) -> Self {
        RedisSettings { sentinel: Some(sentinel), ..RedisSettings::new("", false) }
    }

    /// Acknowledges appends to logs (persistent publishes) only once `replicas` replicas have
    /// them, waiting at most `timeout` (`WAIT`, on a connection of its own): a failover then
    /// loses no acknowledged event. Fewer in time is [`BrokerError::NotReplicated`].
    pub fn with_replicas_ack(mut self, replicas: u32, timeout: Duration) -> Self {
        self.replicas_ack = replicas;
        self.ack_timeout = timeout;
        self
    }
}

/// A node's handle on Redis.
pub struct RedisBroker {
    commands: Commands,
    /// Where appends that wait for replicas go (`replicas_ack`): `WAIT` holds up its
    /// connection, so it gets one of its own.
    replicated: Option<Replicated>,
    subscriber: Commands,
    /// Where a single server's connections go (followed across Sentinel failovers).
    target: Arc<target::Target>,
    /// Follows a Sentinel master (none for a fixed address).
    _watch: Option<Keepalive>,
    _keepalive: Keepalive,
    /// Probes delivery end to end and the server's role (see [`probe`]).
    _prober: Keepalive,
    probe: Arc<probe::Probe>,
    /// Restores subscriptions the connection loses (see [`resubscribe`]).
    _resubscriber: Keepalive,
    wanted: Arc<resubscribe::Wanted>,
    blocking: blocking::BlockingReads,
    clock: Arc<dyn Clock>,
    lease_acquire: Script,
    lease_renew: Script,
    lease_acquire_many: Script,
    lease_acquire_fenced: Script,
    commit_fenced: Script,
    window_counter: Script,
    presence: presence::PresenceScripts,
}

/// The writer and the terms of replicated appends.
struct Replicated {
    writer: replicated::ReplicatedWriter,
    replicas: u32,
}

/// The members of a lease set whose expiry score is still ahead of the server's clock.
const LIVE_HOLDERS: &str = "local t = redis.call('TIME') \
    return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)), '+inf')";

/// How often the subscriber connection is pinged.
const SUBSCRIBER_PING: Duration = Duration::from_millis(500);

/// Aborts a background task (keepalive, resubscription) when the broker is dropped.
struct Keepalive(tokio::task::JoinHandle<()>);

impl Drop for Keepalive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A subscriber connection only sends commands when subscriptions change, so on its own it
/// would notice a lost Redis late, and reconnect (and resubscribe) only at the next change.
/// Pinging it keeps reconnection going with backoff until Redis is back; a failed ping counts
/// as a loss of the subscriptions, restored (and confirmed) once Redis answers again.
async fn keep_subscriber_alive(subscriber: Commands, wanted: Arc<resubscribe::Wanted>) {
    let mut down = false;
    loop {
        tokio::time::sleep(SUBSCRIBER_PING).await;
        match subscriber.query::<Value>(&redis::cmd("PING")).await {
            Ok(_) if down => {
                tracing::info!("Redis subscriber connection is back");
                down = false;
            }
            Ok(_) => {}
            Err(e) if !down => {
                tracing::warn!(error = %e, "Redis subscriber connection lost; reconnecting");
                down = true;
                wanted.mark_lost();
            }
            Err(_) => {}
        }
    }
}

/// A Redis Cluster node given as a single server answers commands for its own slots only: every
/// other one fails (`MOVED`), and so would every client connect. Refused at the start instead.
async fn refuse_a_cluster_node(commands: &Commands) -> Result<()> {
    let info: String = commands.query(redis::cmd("INFO").arg("cluster")).await.map_err(unavailable)?;
    if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        return Err(BrokerError::Misconfigured(
            "the server is a Redis Cluster node (INFO cluster says cluster_enabled:1): set \
             SWITCHBOARD_REDIS_CLUSTER=true (redis_cluster = true) and give the cluster's nodes as seeds"
                .into(),
        ));
    }
    Ok(())
}

fn unavailable(e: redis::RedisError) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl RedisBroker {
    /// Takes the leases of `requests` with one call of the lease script; requests without
    /// slots are admitted without asking.
    async fn acquire_in_one_call(&self, requests: &[LeaseRequest], ttl: Duration) -> Result<Vec<bool>> {
        if requests.iter().all(|r| r.slots.is_empty()) {
            return Ok(vec![true; requests.len()]);
        }
        let mut inv = self.lease_acquire_many.prepare_invoke();
        inv.arg(ttl.as_millis() as u64);
        for request in requests {
            inv.arg(&request.holder).arg(request.slots.len());
            for (key, limit) in &request.slots {
                inv.key(key).arg(*limit);
            }
        }
        let answers: Vec<i64> = self.commands.invoke(&inv).await.map_err(unavailable)?;
        if answers.len() != requests.len() {
            return Err(BrokerError::Protocol(format!(
                "{} lease answers for {} requests",
                answers.len(),
                requests.len()
            )));
        }
        Ok(answers.into_iter().map(|held| held == 1).collect())
    }

    /// Connects (failing if Redis cannot be reached now); deliveries go to `sink`.
    pub async fn connect(settings: &RedisSettings, sink: Arc<dyn DeliverySink>) -> Result<RedisBroker> {
        let wanted = Arc::new(resubscribe::Wanted::default());
        let watch = wanted.clone();
        let delivery = sink.clone();
        let probe = probe::Probe::new();
        let probed = probe.clone();
        let push = move |info: redis::PushInfo| -> std::result::Result<(), redis::aio::SendError> {
            if matches!(info.kind, PushKind::Message | PushKind::SMessage) {
                if let [Value::BulkString(topic), Value::BulkString(payload)] = &info.data[..] {
                    if probe::Probe::owns(topic) {
                        probed.seen(topic, payload);
                    } else {
                        delivery.deliver(&String::from_utf8_lossy(topic), Bytes::copy_from_slice(payload));
                    }
                }
            } else {
                watch.on_push(&info);
            }
            Ok(())
        };
        let target = target::Target::new(settings).map_err(|e| BrokerError::Misconfigured(e.to_string()))?;
        let commands =
            Commands::connect(settings, &target, None::<blocking::NoPush>, None).await.map_err(unavailable)?;
        if !settings.cluster {
            refuse_a_cluster_node(&commands).await?;
        }
        // A new subscriber connection has no subscriptions: they are restored as after a loss.
        let lost = wanted.clone();
        let replaced: link::OnReplaced = Arc::new(move || lost.mark_lost());
        let subscriber = Commands::connect(settings, &target, Some(push), Some(replaced)).await.map_err(unavailable)?;
        let replicated = match settings.replicas_ack {
            0 => None,
            replicas => {
                let connection =
                    Commands::connect(settings, &target, None::<blocking::NoPush>, None).await.map_err(unavailable)?;
                let writer = replicated::ReplicatedWriter::start(connection, replicas, settings.ack_timeout);
                Some(Replicated { writer, replicas })
            }
        };
        let keepalive = Keepalive(tokio::spawn(keep_subscriber_alive(subscriber.clone(), wanted.clone())));
        let prober =
            Keepalive(tokio::spawn(probe::run(probe.clone(), commands.clone(), subscriber.clone(), wanted.clone())));
        let resubscriber =
            Keepalive(tokio::spawn(resubscribe::keep_subscriptions(subscriber.clone(), wanted.clone(), sink)));
        Ok(RedisBroker {
            commands,
            replicated,
            subscriber,
            _watch: target.watch().map(Keepalive),
            _keepalive: keepalive,
            _prober: prober,
            probe,
            _resubscriber: resubscriber,
            wanted,
            blocking: blocking::BlockingReads::new(settings, target.clone()),
            target,
            clock: Arc::new(SystemClock),
            lease_acquire: Script::new(include_str!("scripts/lease_acquire.lua")),
            lease_renew: Script::new(include_str!("scripts/lease_renew.lua")),
            lease_acquire_many: Script::new(include_str!("scripts/lease_acquire_many.lua")),
            lease_acquire_fenced: Script::new(include_str!("scripts/lease_acquire_fenced.lua")),
            commit_fenced: Script::new(include_str!("scripts/commit_fenced.lua")),
            window_counter: Script::new(include_str!("scripts/window_counter.lua")),
            presence: presence::PresenceScripts::new(),
        })
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.commands.query(cmd).await.map_err(unavailable)
    }

    /// Runs a write: one the caller acknowledges to someone (a key, a member, a ticket taken)
    /// goes, with `replicas_ack`, through the replicated writer, so a failover cannot take it
    /// back (a consumed single-use ticket coming back, a revocation undone); a lossy one, or
    /// any without `replicas_ack`, as any command.
    async fn write<T: redis::FromRedisValue>(&self, ack: Ack, key: &str, cmd: redis::Cmd) -> Result<T> {
        if self.replicated.is_none() || ack == Ack::Master {
            return self.query(&cmd).await;
        }
        let reply = self.write_all(ack, vec![(key.to_owned(), cmd)]).await?.pop().unwrap_or(Value::Nil);
        redis::from_redis_value(reply).map_err(|e| BrokerError::Protocol(e.to_string()))
    }

    /// [`RedisBroker::write`] for several commands (each with its key), in one round trip;
    /// any refusal fails the call.
    async fn write_all(&self, ack: Ack, cmds: Vec<(String, redis::Cmd)>) -> Result<Vec<Value>> {
        let (Some(r), Ack::Replicas) = (&self.replicated, ack) else {
            return self.commands.query_all(cmds).await.map_err(unavailable);
        };
        let (replies, acked) = r.writer.write(cmds).await.map_err(unavailable)?;
        if let Some(Value::ServerError(e)) = replies.iter().find(|v| matches!(v, Value::ServerError(_))) {
            return Err(unavailable(e.clone().into()));
        }
        if acked < i64::from(r.replicas) {
            return Err(BrokerError::NotReplicated { acked: acked.max(0) as u32, wanted: r.replicas });
        }
        Ok(replies)
    }
}

#[async_trait]
impl PubSub for RedisBroker {
    async fn publish(&self, topic: &str, message: Bytes) -> Result<()> {
        let cmd = redis::cmd(self.commands.publish_command()).arg(topic).arg(&message[..]).clone();
        self.query::<Value>(&cmd).await.map(|_| ())
    }

    async fn publish_many(&self, messages: &[(String, Bytes)]) -> Result<()> {
        let name = self.commands.publish_command();
        let cmds: Vec<(String, redis::Cmd)> =
            messages.iter().map(|(t, m)| (t.clone(), redis::cmd(name).arg(t).arg(&m[..]).clone())).collect();
        self.commands.query_all(cmds).await.map(|_| ()).map_err(unavailable)
    }

    async fn subscribe(&self, topics: &[Topic]) -> Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        self.subscriber.subscribe(topics).await.map_err(unavailable)?;
        self.wanted.add(topics);
        Ok(())
    }

    async fn unsubscribe(&self, topics: &[Topic]) -> Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        self.wanted.remove(topics);
        self.subscriber.unsubscribe(topics).await.map_err(unavailable)
    }
}

/// Who must have a write before it counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    /// The master (and, with `replicas_ack`, that many replicas).
    Replicas,
    /// The master alone, whatever `replicas_ack` says: state whose loss costs a repeat.
    Master,
}

/// `SET key value [NX] [PX ttl]`.
fn set_cmd(key: &str, value: &[u8], if_absent: bool, ttl: Option<Duration>) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if if_absent {
        cmd.arg("NX");
    }
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(ttl.as_millis().max(1) as u64);
    }
    cmd
}

impl RedisBroker {
    async fn set_acked(&self, ack: Ack, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.write::<Value>(ack, key, set_cmd(key, value, false, ttl)).await.map(|_| ())
    }

    async fn set_if_absent_acked(&self, ack: Ack, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let stored: Option<String> = self.write(ack, key, set_cmd(key, value, true, ttl)).await?;
        Ok(stored.is_some())
    }

    async fn set_many_acked(&self, ack: Ack, entries: &[(String, Bytes)], ttl: Option<Duration>) -> Result<()> {
        let cmds = entries.iter().map(|(key, value)| (key.clone(), set_cmd(key, value, false, ttl))).collect();
        self.write_all(ack, cmds).await.map(|_| ())
    }

    async fn delete_acked(&self, ack: Ack, key: &str) -> Result<bool> {
        let n: u64 = self.write(ack, key, redis::cmd("DEL").arg(key).clone()).await?;
        Ok(n > 0)
    }
}

#[async_trait]
impl KeyValue for RedisBroker {
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.set_acked(Ack::Replicas, key, &value, ttl).await
    }

    async fn set_lossy(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.set_acked(Ack::Master, key, &value, ttl).await
    }

    async fn set_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        self.set_if_absent_acked(Ack::Replicas, key, &value, ttl).await
    }

    async fn set_if_absent_lossy(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        self.set_if_absent_acked(Ack::Master, key, &value, ttl).await
    }

    async fn incr_in_window(&self, key: &str, window: Duration) -> Result<u64> {
        let mut inv = self.window_counter.prepare_invoke();
        inv.key(key).arg(window.as_millis().max(1) as u64);
        let n: i64 = self.commands.invoke(&inv).await.map_err(unavailable)?;
        Ok(n.max(0) as u64)
    }

    async fn set_many(&self, entries: &[(String, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.set_many_acked(Ack::Replicas, entries, ttl).await
    }

    async fn set_many_lossy(&self, entries: &[(String, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.set_many_acked(Ack::Master, entries, ttl).await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let v: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(key)).await?;
        Ok(v.map(Bytes::from))
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>> {
        let v: Option<Vec<u8>> = self.write(Ack::Replicas, key, redis::cmd("GETDEL").arg(key).clone()).await?;
        Ok(v.map(Bytes::from))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.delete_acked(Ack::Replicas, key).await
    }

    async fn delete_lossy(&self, key: &str) -> Result<bool> {
        self.delete_acked(Ack::Master, key).await
    }

    async fn set_add(&self, key: &str, member: &str) -> Result<bool> {
        let n: u64 = self.write(Ack::Replicas, key, redis::cmd("SADD").arg(key).arg(member).clone()).await?;
        Ok(n > 0)
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<bool> {
        let n: u64 = self.write(Ack::Replicas, key, redis::cmd("SREM").arg(key).arg(member).clone()).await?;
        Ok(n > 0)
    }

    async fn set_contains(&self, key: &str, member: &str) -> Result<bool> {
        self.query(redis::cmd("SISMEMBER").arg(key).arg(member)).await
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>> {
        self.query(redis::cmd("SMEMBERS").arg(key)).await
    }
}

#[async_trait]
impl Leases for RedisBroker {
    async fn try_acquire(&self, key: &str, holder: &str, limit: u32, ttl: Duration) -> Result<bool> {
        let mut inv = self.lease_acquire.prepare_invoke();
        inv.key(key).arg(holder).arg(limit).arg(ttl.as_millis() as u64);
        let held: i64 = self.commands.invoke(&inv).await.map_err(unavailable)?;
        Ok(held == 1)
    }

    async fn try_acquire_all(&self, slots: &[(String, u32)], holder: &str, ttl: Duration) -> Result<bool> {
        if slots.is_empty() {
            return Ok(true);
        }
        let request = [LeaseRequest { slots: slots.to_vec(), holder: holder.to_owned() }];
        Ok(self.acquire_in_one_call(&request, ttl).await? == [true])
    }

    /// On one Redis server every request goes in one script call; on a Redis Cluster each
    /// request's keys share a slot but different requests' do not, so each is a call of its
    /// own, all sent at once.
    async fn try_acquire_many(&self, requests: &[LeaseRequest], ttl: Duration) -> Result<Vec<bool>> {
        if !self.commands.is_cluster() {
            return self.acquire_in_one_call(requests, ttl).await;
        }
        let answers = futures_util::future::try_join_all(
            requests.iter().map(|r| self.acquire_in_one_call(std::slice::from_ref(r), ttl)),
        )
        .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    async fn renew(&self, key: &str, holders: &[String], ttl: Duration) -> Result<usize> {
        if holders.is_empty() {
            return Ok(0);
        }
        let mut inv = self.lease_renew.prepare_invoke();
        inv.key(key).arg(ttl.as_millis() as u64);
        for h in holders {
            inv.arg(h);
        }
        let n: i64 = self.commands.invoke(&inv).await.map_err(unavailable)?;
        Ok(n.max(0) as usize)
    }

    async fn release(&self, key: &str, holder: &str) -> Result<bool> {
        let n: u64 = self.query(redis::cmd("ZREM").arg(key).arg(holder)).await?;
        Ok(n > 0)
    }

    async fn holders(&self, key: &str) -> Result<Vec<String>> {
        // Expiry scores are on the Redis server's clock, so "live" is decided there.
        let cmd = redis::cmd("EVAL").arg(LIVE_HOLDERS).arg(1).arg(key).clone();
        let mut holders: Vec<String> = self.query(&cmd).await?;
        holders.sort();
        Ok(holders)
    }

    async fn acquire_fenced(&self, key: &str, fence: &str, holder: &str, ttl: Duration) -> Result<Option<u64>> {
        let mut inv = self.lease_acquire_fenced.prepare_invoke();
        inv.key(key).key(fence).arg(holder).arg(ttl.as_millis().max(1) as u64);
        let token: u64 = self.commands.invoke(&inv).await.map_err(unavailable)?;
        Ok((token > 0).then_some(token))
    }

    async fn commit_fenced(&self, fenced: &Fenced<'_>, cursor: &str, log: &str, position: LogId) -> Result<bool> {
        let keep_from = LogId { ms: position.ms, seq: position.seq.saturating_add(1) };
        let mut inv = self.commit_fenced.prepare_invoke();
        inv.key(fenced.fence).key(cursor).key(log).key(fenced.lease);
        inv.arg(fenced.token).arg(position.to_string()).arg(keep_from.to_string()).arg(fenced.holder);
        let done: i64 = self.commands.invoke(&inv).await.map_err(unavailable)?;
        Ok(done == 1)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn store_and_publish(
        &self,
        copies: &[(String, LogId, Bytes)],
        index: &[(String, Bytes)],
        retention: Duration,
        max_entries: usize,
        live: &[(String, Bytes)],
    ) -> Result<()> {
        let ttl = retention.as_millis().max(1) as u64;
        let cluster = self.commands.is_cluster();
        let others = index.len() + if cluster { 0 } else { live.len() };
        let mut stores = CopyPipeline::new(copies.len(), others, self.clock.now_ms(), retention, max_entries);
        for (log, id, entry) in copies {
            stores.copy(log, *id, entry);
        }
        for (key, value) in index {
            stores.push(key.clone(), redis::cmd("SET").arg(key).arg(&value[..]).arg("PX").arg(ttl).clone());
        }
        let name = self.commands.publish_command();
        let publishes = live.iter().map(|(t, m)| (t.clone(), redis::cmd(name).arg(t).arg(&m[..]).clone()));
        if cluster {
            // The stores go to their slots' owners concurrently; the publishes only once all
            // of them are done.
            stores.run(&self.commands).await?;
            let publishes: Vec<(String, redis::Cmd)> = publishes.collect();
            self.commands.query_all(publishes).await.map_err(unavailable)?;
        } else {
            // One connection runs a pipeline in order: every copy is stored before the first
            // publish.
            for (topic, publish) in publishes {
                stores.push(topic, publish);
            }
            stores.run(&self.commands).await?;
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.query::<Value>(&redis::cmd("PING")).await.map(|_| ())
    }

    fn health(&self) -> crate::BrokerHealth {
        crate::BrokerHealth {
            reachable: self.probe.reachable(),
            subscribed: self.wanted.healthy(),
            subscription_losses: self.wanted.losses(),
            delivering: self.probe.delivering(),
            writable: self.probe.writable(),
            failovers: self.target.moves(),
        }
    }

    fn name(&self) -> &'static str {
        if self.commands.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }
}
