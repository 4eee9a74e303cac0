//! One Redis connection handle over either a single server or a cluster, so the broker's
//! operations are written once. Both kinds are multiplexed (concurrent calls share one
//! socket per server and are pipelined) and reconnect on their own; a single server's is a
//! [`Link`], replaced when it misbehaves or its Sentinel master moves. Every socket has
//! `TCP_NODELAY`: a command goes out when it is written, not when Nagle's algorithm lets it
//! (the redis crate leaves it off by default).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{AsyncPushSender, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{Cmd, FromRedisValue, ProtocolVersion, RedisResult, ScriptInvocation, Value};

use super::link::{ClusterLink, Link, OnReplaced};
use super::target::Target;
use super::RedisSettings;
use crate::Topic;

/// A command (or subscriber) connection.
#[derive(Clone)]
pub(super) enum Commands {
    /// A single server (or a Sentinel group's master), through a replaceable link.
    Single(Arc<Link>),
    /// A Redis Cluster, routed by slot, through a connection that can be made anew.
    Cluster(Arc<ClusterLink>),
}

impl Commands {
    /// Connects; with `push`, the connection is a subscriber whose messages go to `push` and
    /// which resubscribes after every reconnect. A single server's connection goes to
    /// `target`, and `on_replaced` hears when it was replaced by a new one.
    pub(super) async fn connect<P: AsyncPushSender>(
        settings: &RedisSettings,
        target: &Arc<Target>,
        push: Option<P>,
        on_replaced: Option<OnReplaced>,
    ) -> RedisResult<Commands> {
        let timeout = settings.command_timeout;
        let tcp = TcpSettings::default().set_nodelay(true);
        if settings.cluster {
            let mut builder = ClusterClientBuilder::new(settings.urls.clone())
                .tcp_settings(tcp)
                .use_protocol(ProtocolVersion::RESP3)
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(3)
                .min_retry_wait(100)
                .max_retry_wait(2_000);
            if let Some(push) = push {
                builder = builder.push_sender(push);
            }
            return Ok(Commands::Cluster(ClusterLink::connect(builder.build()?).await?));
        }
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        if let Some(push) = push {
            config = config.set_push_sender(push).set_automatic_resubscription();
        }
        Ok(Commands::Single(Link::connect(target.clone(), config, on_replaced).await?))
    }

    /// Replaces the connection: a single server's (its socket may have gone silent), or a
    /// cluster's, which then learns the topology afresh from the seeds.
    pub(super) fn reconnect(&self) {
        match self {
            Commands::Single(link) => link.reconnect(),
            Commands::Cluster(link) => link.reconnect(),
        }
    }

    /// Whether this is a cluster connection.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Commands::Cluster(_))
    }

    /// `PUBLISH`, or `SPUBLISH` (sharded pub/sub) on a cluster.
    pub(super) fn publish_command(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Runs one command.
    pub(super) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Commands::Single(link) => {
                let result = cmd.query_async(&mut link.manager()).await;
                link.check(&result);
                result
            }
            Commands::Cluster(link) => {
                let result = cmd.query_async(&mut link.connection()).await;
                link.check(&result);
                result
            }
        }
    }

    /// Runs several commands, each with the key it touches, and returns their replies in
    /// the order given: one pipeline on a single server; on a cluster, one pipeline per key,
    /// concurrently (commands on one key keep their order). A command the server refuses
    /// fails the call.
    pub(super) async fn query_all(&self, cmds: Vec<(String, Cmd)>) -> RedisResult<Vec<Value>> {
        let replies = self.query_all_replies(cmds).await?;
        match replies.iter().find(|v| matches!(v, Value::ServerError(_))) {
            Some(Value::ServerError(e)) => Err(e.clone().into()),
            _ => Ok(replies),
        }
    }

    /// [`Commands::query_all`] for callers that expect some commands to be refused: a refusal
    /// stays in its place among the replies (`Value::ServerError`) and the others still run.
    pub(super) async fn query_all_replies(&self, cmds: Vec<(String, Cmd)>) -> RedisResult<Vec<Value>> {
        self.query_groups(cmds, None).await.map(|(replies, ..)| replies)
    }

    /// [`Commands::query_all_replies`] (refusals in place) for writes that must reach
    /// `replicas` replicas before they are acknowledged: each pipeline (one per key on a cluster, sent to that key's master) ends
    /// with `WAIT replicas timeout`, which answers once the replicas have every write the
    /// connection sent before it. Returns the replies and the fewest replicas any pipeline
    /// reached. `WAIT` holds up its connection: use one that nothing else waits behind.
    pub(super) async fn query_all_replicated(
        &self,
        cmds: Vec<(String, Cmd)>,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<(Vec<Value>, i64)> {
        let wait = redis::cmd("WAIT").arg(replicas).arg(timeout.as_millis().max(1) as u64).clone();
        let (replies, waits, ran_on) = self.query_groups(cmds, Some(&wait)).await?;
        let mut fewest = i64::MAX;
        for reply in waits {
            fewest = fewest.min(redis::from_redis_value::<i64>(reply)?);
        }
        let acked = if fewest == i64::MAX { 0 } else { fewest };
        // Through Sentinel: a server that is no longer the master may still confirm (a zombie).
        if let (Commands::Single(link), Some(addr)) = (self, ran_on) {
            if acked >= i64::from(replicas) && !link.still_master(&addr).await {
                return Ok((replies, 0));
            }
        }
        Ok((replies, acked))
    }

    /// Runs `cmds` as pipelines (one on a single server, one per key on a cluster), each
    /// ended by `trailer` if given; refusals stay in place. The replies of `cmds` in their
    /// order, each pipeline's trailer reply, and (single server) the server they ran on.
    async fn query_groups(
        &self,
        cmds: Vec<(String, Cmd)>,
        trailer: Option<&Cmd>,
    ) -> RedisResult<(Vec<Value>, Vec<Value>, Option<std::sync::Arc<str>>)> {
        if cmds.is_empty() {
            return Ok((Vec::new(), Vec::new(), None));
        }
        match self {
            Commands::Single(link) => {
                let (mut manager, addr) = link.manager_at();
                let count = cmds.len();
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for (_, cmd) in cmds {
                    pipe.add_command(cmd);
                }
                if let Some(trailer) = trailer {
                    pipe.add_command(trailer.clone());
                }
                let replies: RedisResult<Vec<Value>> = pipe.query_async(&mut manager).await;
                link.check(&replies);
                let mut replies = replies?;
                link.check_replies(&replies);
                let trailers = replies.split_off(count.min(replies.len()));
                Ok((replies, trailers, Some(addr)))
            }
            Commands::Cluster(link) => {
                let c = &link.connection();
                // Group by key, remembering where each command's reply goes.
                let count = cmds.len();
                let mut groups: Vec<(redis::Pipeline, Vec<usize>)> = Vec::new();
                let mut by_key: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
                for (n, (key, cmd)) in cmds.into_iter().enumerate() {
                    let g = *by_key.entry(key).or_insert_with(|| {
                        let mut pipe = redis::pipe();
                        pipe.ignore_errors();
                        groups.push((pipe, Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].0.add_command(cmd);
                    groups[g].1.push(n);
                }
                if let Some(trailer) = trailer {
                    // A command without a key: each pipeline goes where its first key lives.
                    for (pipe, _) in &mut groups {
                        pipe.add_command(trailer.clone());
                    }
                }
                let calls = groups.iter().map(|(pipe, _)| {
                    let mut c = c.clone();
                    async move {
                        let mut values = match pipe.query_async::<Vec<Value>>(&mut c).await {
                            Ok(values) => values,
                            // The whole pipeline sent elsewhere (the client gave up following
                            // it): each command is redone on its own.
                            Err(e) if e.code().is_some_and(redirects) => {
                                let Some(refused) = e.clone().into_server_errors().and_then(|r| r.first().cloned())
                                else {
                                    return Err(e);
                                };
                                vec![Value::ServerError(refused.1); pipe.cmd_iter().count()]
                            }
                            Err(e) => return Err(e),
                        };
                        let redirected = follow_redirects(&mut c, pipe, &mut values).await?;
                        RedisResult::Ok((values, redirected))
                    }
                });
                let mut replies = vec![Value::Nil; count];
                let mut trailers = Vec::new();
                for (result, (_, slots)) in futures_util::future::join_all(calls).await.into_iter().zip(&groups) {
                    link.check(&result);
                    let (values, redirected) = result?;
                    let mut values = values.into_iter();
                    // `slots` first: zip stops at the end of it without taking the trailer's
                    // reply from `values`.
                    for (n, value) in slots.iter().zip(values.by_ref()) {
                        replies[*n] = value;
                    }
                    // A command redone on another node is not covered by the trailer (a
                    // `WAIT`) that ran on the first one.
                    trailers.extend(values.map(|v| if redirected { Value::Int(0) } else { v }));
                }
                Ok((replies, trailers, None))
            }
        }
    }

    /// Runs a Lua script (`EVALSHA`, loading it on first use).
    pub(super) async fn invoke<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Commands::Single(link) => {
                let result = inv.invoke_async(&mut link.manager()).await;
                link.check(&result);
                result
            }
            Commands::Cluster(link) => {
                let result = inv.invoke_async(&mut link.connection()).await;
                link.check(&result);
                result
            }
        }
    }

    /// Subscribes (sharded on a cluster).
    pub(super) async fn subscribe(&self, topics: &[Topic]) -> RedisResult<()> {
        match self {
            Commands::Single(link) => {
                let result = link.manager().subscribe(names(topics)).await;
                link.check(&result);
                result
            }
            Commands::Cluster(link) => {
                per_topic(&link.connection(), topics, |mut c, t| async move { c.ssubscribe(t).await }).await
            }
        }
    }

    /// Unsubscribes (sharded on a cluster).
    pub(super) async fn unsubscribe(&self, topics: &[Topic]) -> RedisResult<()> {
        match self {
            Commands::Single(link) => {
                let result = not_subscribed_is_done(link.manager().unsubscribe(names(topics)).await);
                link.check(&result);
                result
            }
            Commands::Cluster(link) => {
                per_topic(&link.connection(), topics, |mut c, t| async move {
                    not_subscribed_is_done(c.sunsubscribe(t).await)
                })
                .await
            }
        }
    }
}

/// Valkey 8 refuses an unsubscribe on a connection that is subscribed to nothing (`NoSub`;
/// Redis answers it): on a cluster that is any node the other topics are not on. Either way
/// the topic is not subscribed, which is what was asked.
fn not_subscribed_is_done(result: RedisResult<()>) -> RedisResult<()> {
    match result {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoSub) => Ok(()),
        other => other,
    }
}

/// Redoes, one by one and in their order, the commands of a cluster pipeline that a node sent
/// elsewhere (`MOVED`, `ASK` while its slot migrates, `TRYAGAIN` for keys split between the
/// two nodes, `CLUSTERDOWN` while a failover settles). A pipeline that keeps refusals in
/// place returns those as replies instead of following them; a single command is routed and
/// redirected, and retried, by the cluster client. A refusal on the redo stays in place too.
/// True if any command was redone.
async fn follow_redirects(
    c: &mut ClusterConnection,
    pipe: &redis::Pipeline,
    values: &mut [Value],
) -> RedisResult<bool> {
    let mut redone = false;
    for (cmd, value) in pipe.cmd_iter().zip(values.iter_mut()) {
        let Value::ServerError(e) = value else { continue };
        if !redirects(e.code()) {
            continue;
        }
        redone = true;
        let mut wait = REDIRECT_RETRY;
        *value = loop {
            match cmd.query_async::<Value>(c).await {
                Ok(v) => break v,
                // While a slot changes hands the nodes may disagree a moment longer than the
                // client's own retries last.
                Err(e) if e.code().is_some_and(redirects) && wait <= MAX_REDIRECT_RETRY => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => match e.clone().into_server_errors() {
                    Some(refused) if !refused.is_empty() => break Value::ServerError(refused[0].1.clone()),
                    _ => return Err(e),
                },
            }
        };
    }
    Ok(redone)
}

/// First wait before a command that was redirected again is redone; it doubles up to
/// [`MAX_REDIRECT_RETRY`] (about 1.5 s in all).
const REDIRECT_RETRY: Duration = Duration::from_millis(50);
const MAX_REDIRECT_RETRY: Duration = Duration::from_millis(800);

/// Whether a cluster node's refusal means "ask another node, or again shortly".
fn redirects(code: &str) -> bool {
    matches!(code, "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")
}

/// Sharded (un)subscriptions are per slot: one call per topic, all concurrently.
async fn per_topic<'a, F, Fut>(c: &ClusterConnection, topics: &'a [Topic], call: F) -> RedisResult<()>
where
    F: Fn(ClusterConnection, &'a str) -> Fut,
    Fut: std::future::Future<Output = RedisResult<()>>,
{
    futures_util::future::join_all(topics.iter().map(|t| call(c.clone(), t))).await.into_iter().collect()
}

/// The topics as arguments of one command.
fn names(topics: &[Topic]) -> Vec<&str> {
    topics.iter().map(|t| &**t).collect()
}
