//! A single server's connection that is replaced when it goes wrong.
//!
//! The redis crate's connection manager reconnects only when its socket fails outright. A
//! socket that stays open but carries nothing (a blackholed route, a half-open TCP
//! connection, a server stopped by SIGSTOP) times out command after command and is never
//! replaced, and neither is a connection to a master that was demoted and answers `READONLY`.
//! A link holds the current manager and makes a new one, in the background and one at a
//! time, when
//! - a command on it timed out or its socket failed, or the server refused it as a non-master
//!   (`READONLY`, `MASTERDOWN`, `LOADING`): [`Link::check`];
//! - its [`Target`] moved (a Sentinel failover): checked on every use.
//!
//! Commands keep going to the old manager until the new one is connected (they fail, as they
//! would anyway, rather than wait). A subscriber link tells its owner when it was replaced:
//! the new connection has no subscriptions until they are restored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, RedisResult, Value};

use super::target::Target;

/// First wait before another try when a new connection could not be made; it doubles up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// What a link's owner is told when the connection was replaced.
pub(super) type OnReplaced = Arc<dyn Fn() + Send + Sync>;

/// A replaceable connection to a single server (or a Sentinel group's master).
pub(super) struct Link {
    target: Arc<Target>,
    config: ConnectionManagerConfig,
    current: RwLock<Current>,
    /// A replacement is under way.
    replacing: AtomicBool,
    /// The connection in use misbehaved: replace it even though the target did not move.
    broken: AtomicBool,
    on_replaced: Option<OnReplaced>,
}

struct Current {
    manager: ConnectionManager,
    /// The target's generation it was made for.
    target_generation: u64,
    /// The server it goes to (`host:port`; shared, so a caller's copy costs no allocation).
    addr: Arc<str>,
}

/// Why an error means the connection (or its server) should be given up.
fn gives_up(error: &RedisError) -> bool {
    error.is_io_error() || error.is_timeout() || error.code().is_some_and(refuses_as_non_master)
}

/// Server error codes of a node that is not (or not yet) a working master.
fn refuses_as_non_master(code: &str) -> bool {
    matches!(code, "READONLY" | "MASTERDOWN" | "LOADING")
}

impl Link {
    /// Connects to `target` (failing if it cannot be reached now) with `config`.
    pub(super) async fn connect(
        target: Arc<Target>,
        config: ConnectionManagerConfig,
        on_replaced: Option<OnReplaced>,
    ) -> RedisResult<Arc<Link>> {
        let current = open(&target, &config).await?;
        Ok(Arc::new(Link {
            target,
            config,
            current: RwLock::new(current),
            replacing: AtomicBool::new(false),
            broken: AtomicBool::new(false),
            on_replaced,
        }))
    }

    /// The connection to use now; when the target moved, a replacement is started (this
    /// call still gets the old connection).
    pub(super) fn manager(self: &Arc<Self>) -> ConnectionManager {
        self.current().manager.clone()
    }

    /// [`Link::manager`], and the server it goes to (`host:port`).
    pub(super) fn manager_at(self: &Arc<Self>) -> (ConnectionManager, Arc<str>) {
        let current = self.current();
        (current.manager.clone(), current.addr.clone())
    }

    /// The connection in use; when the target moved, a replacement is started.
    fn current(self: &Arc<Self>) -> parking_lot::RwLockReadGuard<'_, Current> {
        let current = self.current.read();
        if current.target_generation != self.target.generation() {
            self.replace_soon();
        }
        current
    }

    /// Whether the sentinels still name `addr` the master (always, for a fixed server): see
    /// [`super::witnesses`].
    pub(super) async fn still_master(&self, addr: &str) -> bool {
        self.target.still_master(addr).await
    }

    /// Looks at a command's outcome: an error that says the connection or its server is no
    /// good starts a replacement (and, through Sentinel, a new look for the master).
    pub(super) fn check<T>(self: &Arc<Self>, result: &RedisResult<T>) {
        if let Err(e) = result {
            if gives_up(e) {
                self.give_up(e);
            }
        }
    }

    /// [`Link::check`] for the replies of a pipeline that keeps refusals in place.
    pub(super) fn check_replies(self: &Arc<Self>, replies: &[Value]) {
        let refused = replies.iter().find_map(|v| match v {
            Value::ServerError(e) if refuses_as_non_master(e.code()) => Some(e.clone()),
            _ => None,
        });
        if let Some(e) = refused {
            self.give_up(&e.into());
        }
    }

    fn give_up(self: &Arc<Self>, error: &RedisError) {
        tracing::debug!(error = %error, "a Redis connection misbehaved; replacing it");
        self.reconnect();
    }

    /// Replaces the connection (and looks for the master again, through Sentinel).
    pub(super) fn reconnect(self: &Arc<Self>) {
        self.target.distrust();
        self.broken.store(true, Ordering::Release);
        self.replace_soon();
    }

    /// Starts replacing the connection unless that is under way: a new one is made for the
    /// target's current address, with backoff while that fails, until the connection is for
    /// the current generation and not known broken.
    fn replace_soon(self: &Arc<Self>) {
        if self.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let mut wait = FIRST_RETRY;
            loop {
                let stale = link.current.read().target_generation != link.target.generation();
                if !stale && !link.broken.swap(false, Ordering::AcqRel) {
                    break;
                }
                match open(&link.target, &link.config).await {
                    Ok(current) => {
                        *link.current.write() = current;
                        if let Some(replaced) = &link.on_replaced {
                            replaced();
                        }
                        wait = FIRST_RETRY;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reconnect to Redis yet; retrying");
                        link.broken.store(true, Ordering::Release);
                        link.target.distrust();
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(MAX_RETRY);
                    }
                }
            }
            link.replacing.store(false, Ordering::Release);
            // A trouble report that came in after the last look starts the next round.
            if link.broken.load(Ordering::Acquire) || link.current.read().target_generation != link.target.generation()
            {
                link.replace_soon();
            }
        });
    }
}

/// A connection manager to where `target` is now, for the generation that was.
async fn open(target: &Target, config: &ConnectionManagerConfig) -> RedisResult<Current> {
    let (info, target_generation) = target.address().await?;
    let addr: Arc<str> = info.addr().to_string().into();
    let manager = redis::Client::open(info)?.get_connection_manager_with_config(config.clone()).await?;
    Ok(Current { manager, target_generation, addr })
}

/// A Redis Cluster connection that can be made anew. The cluster client learns a new slot
/// owner from `MOVED`, but a connection whose commands only ever meet a dead master (a
/// subscriber resubscribing to the slots of a master that failed) can keep dialling it
/// long after its replica took over. A new connection asks the seeds for the topology.
pub(super) struct ClusterLink {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    replacing: AtomicBool,
}

impl ClusterLink {
    /// Connects through `client` (failing if no seed answers now).
    pub(super) async fn connect(client: ClusterClient) -> RedisResult<Arc<ClusterLink>> {
        let current = RwLock::new(client.get_async_connection().await?);
        Ok(Arc::new(ClusterLink { client, current, replacing: AtomicBool::new(false) }))
    }

    /// The connection to use now.
    pub(super) fn connection(&self) -> ClusterConnection {
        self.current.read().clone()
    }

    /// Looks at a command's outcome: one that timed out or lost its connection makes a new
    /// cluster connection. The client's own recovery can stall after a failover (a slot
    /// refresh that never ends, every command timing out after it, for good).
    pub(super) fn check<T>(self: &Arc<Self>, result: &RedisResult<T>) {
        if let Err(e) = result {
            if e.is_timeout() || e.is_io_error() || e.kind() == redis::ErrorKind::ClusterConnectionNotFound {
                tracing::debug!(error = %e, "a Redis Cluster command failed; connecting anew");
                self.reconnect();
            }
        }
    }

    /// Makes a new connection in the background (one at a time; at most one every
    /// [`MAX_RETRY`]); commands use the old one until it is there.
    pub(super) fn reconnect(self: &Arc<Self>) {
        if self.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            match link.client.get_async_connection().await {
                Ok(connection) => *link.current.write() = connection,
                Err(e) => tracing::warn!(error = %e, "could not connect to the Redis Cluster anew yet"),
            }
            tokio::time::sleep(MAX_RETRY).await;
            link.replacing.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_say_the_connection_or_its_server_is_no_good() {
        let io: RedisError = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out").into();
        assert!(gives_up(&io));
        let refused: RedisError = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        assert!(gives_up(&refused));
        for code in ["READONLY", "MASTERDOWN", "LOADING"] {
            assert!(refuses_as_non_master(code), "{code}");
        }
        let wrong_type: RedisError = (redis::ErrorKind::UnexpectedReturnType, "not a number").into();
        assert!(!gives_up(&wrong_type), "a reply this code did not expect is not the connection's fault");
        assert!(!refuses_as_non_master("WRONGTYPE") && !refuses_as_non_master("NOREPLICAS"));
    }
}
