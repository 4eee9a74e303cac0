//! Where a single-server broker's connections go: one fixed address, or the master of a
//! Sentinel-watched group, found again whenever it may have moved.
//!
//! The redis crate resolves a Sentinel master once per call and hands back a plain client:
//! nothing follows a failover, a connection manager built from it reconnects to the old
//! address forever, and `READONLY` from a demoted master does not even make it reconnect
//! (redis-rs#1438). So the target is resolved here, and again
//! - when a command says the node it reached is not the master (`READONLY`, `MASTERDOWN`,
//!   `LOADING`) or the connection failed ([`Target::distrust`]),
//! - when a sentinel announces `+switch-master` (a subscription on the sentinels),
//! - every [`POLL`], because an announcement can be missed and a demoted master keeps its
//!   connections alive (what centrifuge learned: centrifugo#1189).
//!
//! A new address bumps the target's generation; every [`super::link::Link`] compares its own
//! with it on use and reconnects when it is behind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::io::tcp::TcpSettings;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo, RedisResult};

use super::witnesses::Witnesses;
use super::RedisSettings;

/// How often the sentinels are asked where the master is, events or not.
const POLL: Duration = Duration::from_secs(5);
/// Fewest time between two lookups that an error asked for.
const LOOKUP_SPACING: Duration = Duration::from_millis(200);

/// Where the connections of a single-server broker go.
pub(super) struct Target {
    place: Place,
    /// Bumped whenever the address changed: links made for an older one reconnect.
    generation: AtomicU64,
    /// A lookup is under way (errors ask for one; one at a time is enough).
    looking: AtomicBool,
    /// Lookups that found the master somewhere else (failovers followed).
    moves: AtomicU64,
}

enum Place {
    /// One server, always there.
    Fixed(ConnectionInfo),
    /// The master of a group the sentinels watch.
    Sentinel(Box<SentinelPlace>),
}

struct SentinelPlace {
    /// The group's name at the sentinels (`mymaster`).
    master: String,
    client: tokio::sync::Mutex<SentinelClient>,
    /// The sentinels, for the `+switch-master` subscription.
    sentinels: Vec<ConnectionInfo>,
    /// The master last found, with the node settings (protocol, auth, TCP) applied.
    current: parking_lot::Mutex<Option<ConnectionInfo>>,
    /// How a connection to a data node is made (RESP3, TCP_NODELAY, auth).
    node: RedisConnectionInfo,
    tcp: TcpSettings,
    /// The sentinels asked after each replicated write.
    witnesses: Witnesses,
}

impl Target {
    /// The target `settings` name: their one URL, or (with `settings.sentinel`) the master
    /// the sentinels know. Nothing is dialled yet.
    pub(super) fn new(settings: &RedisSettings) -> RedisResult<Arc<Target>> {
        let tcp = TcpSettings::default().set_nodelay(true);
        let place = match &settings.sentinel {
            None => {
                let url = settings.urls.first().map(String::as_str).unwrap_or("redis://127.0.0.1:6379");
                let info = url.into_connection_info()?;
                let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                Place::Fixed(info.set_redis_settings(resp3).set_tcp_settings(tcp))
            }
            Some(sentinel) => {
                let sentinels: Vec<ConnectionInfo> = sentinel
                    .sentinels
                    .iter()
                    .map(|s| if s.contains("://") { s.clone() } else { format!("redis://{s}") })
                    .map(|s| s.into_connection_info())
                    .collect::<RedisResult<_>>()?;
                let mut node = RedisConnectionInfo::default().set_protocol(ProtocolVersion::RESP3).set_db(sentinel.db);
                if let Some(user) = &sentinel.username {
                    node = node.set_username(user);
                }
                if let Some(password) = &sentinel.password {
                    node = node.set_password(password);
                }
                let lookup = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(node.clone())
                    .set_tcp_settings(tcp.clone());
                let client = SentinelClient::build(
                    sentinels.clone(),
                    sentinel.master.clone(),
                    Some(lookup),
                    SentinelServerType::Master,
                )?;
                Place::Sentinel(Box::new(SentinelPlace {
                    witnesses: Witnesses::new(&sentinel.master, &sentinels),
                    master: sentinel.master.clone(),
                    client: tokio::sync::Mutex::new(client),
                    sentinels,
                    current: parking_lot::Mutex::new(None),
                    node,
                    tcp,
                }))
            }
        };
        Ok(Arc::new(Target {
            place,
            generation: AtomicU64::new(0),
            looking: AtomicBool::new(false),
            moves: AtomicU64::new(0),
        }))
    }

    /// Whether the target is found through Sentinel.
    pub(super) fn is_sentinel(&self) -> bool {
        matches!(self.place, Place::Sentinel(_))
    }

    /// The current generation: links made for an older one reconnect.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the sentinels still name `addr` (`host:port`) the master; always, for a fixed
    /// server. A no also starts a new look for the master.
    pub(super) async fn still_master(self: &Arc<Self>, addr: &str) -> bool {
        let Place::Sentinel(s) = &self.place else { return true };
        let confirmed = s.witnesses.still_master(addr).await;
        if !confirmed {
            self.distrust();
        }
        confirmed
    }

    /// Failovers followed so far (lookups that found the master somewhere else).
    pub(super) fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    /// Where to connect now, and for which generation; a Sentinel target not found yet is
    /// looked up first.
    pub(super) async fn address(&self) -> RedisResult<(ConnectionInfo, u64)> {
        match &self.place {
            Place::Fixed(info) => Ok((info.clone(), self.generation())),
            Place::Sentinel(s) => {
                let found = s.current.lock().clone();
                match found {
                    Some(info) => Ok((info, self.generation())),
                    None => {
                        self.look_up().await?;
                        let info = s.current.lock().clone();
                        info.map(|info| (info, self.generation())).ok_or_else(|| {
                            redis::RedisError::from((redis::ErrorKind::MasterNameNotFoundBySentinel, "no master found"))
                        })
                    }
                }
            }
        }
    }

    /// Asks the sentinels where the master is (a master that says so itself, `ROLE`); a new
    /// address bumps the generation. True if it moved.
    pub(super) async fn look_up(&self) -> RedisResult<bool> {
        let Place::Sentinel(s) = &self.place else { return Ok(false) };
        let client = s.client.lock().await.async_get_client().await?;
        let found =
            client.get_connection_info().clone().set_redis_settings(s.node.clone()).set_tcp_settings(s.tcp.clone());
        let mut current = s.current.lock();
        let moved = current.as_ref().is_none_or(|c| c.addr() != found.addr());
        if moved {
            if current.is_some() {
                self.moves.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(master = %s.master, to = %found.addr(), "the Redis master moved; reconnecting to it");
            } else {
                tracing::info!(master = %s.master, at = %found.addr(), "Redis master found through Sentinel");
            }
            *current = Some(found);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(moved)
    }

    /// A command says the server it reached may not be the master (an error, `READONLY`):
    /// a Sentinel target is looked up again, in the background, one lookup at a time.
    pub(super) fn distrust(self: &Arc<Self>) {
        if !self.is_sentinel() || self.looking.swap(true, Ordering::AcqRel) {
            return;
        }
        let target = self.clone();
        tokio::spawn(async move {
            if let Err(e) = target.look_up().await {
                tracing::warn!(error = %e, "could not ask the sentinels where the Redis master is");
            }
            tokio::time::sleep(LOOKUP_SPACING).await;
            target.looking.store(false, Ordering::Release);
        });
    }

    /// Follows the master for as long as the returned handle lives: polls the sentinels every
    /// [`POLL`] and listens for `+switch-master` on them. Nothing for a fixed target.
    pub(super) fn watch(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let Place::Sentinel(s) = &self.place else { return None };
        let (target, sentinels) = (Arc::downgrade(self), s.sentinels.clone());
        Some(tokio::spawn(async move {
            let listen = listen_for_switches(target.clone(), sentinels);
            let poll = async {
                loop {
                    tokio::time::sleep(POLL).await;
                    let Some(target) = target.upgrade() else { return };
                    if let Err(e) = target.look_up().await {
                        tracing::warn!(error = %e, "could not ask the sentinels where the Redis master is");
                    }
                }
            };
            tokio::join!(listen, poll);
        }))
    }
}

/// Subscribes to `+switch-master` on one sentinel after the other (whichever answers) and
/// looks the master up at each announcement, until the target is gone.
async fn listen_for_switches(target: std::sync::Weak<Target>, sentinels: Vec<ConnectionInfo>) {
    let mut next = 0;
    loop {
        let info = sentinels[next % sentinels.len()].clone();
        next += 1;
        let subscribed = async {
            let mut pubsub = redis::Client::open(info)?.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            let mut messages = pubsub.on_message();
            while messages.next().await.is_some() {
                let Some(target) = target.upgrade() else { return Ok(()) };
                if let Err(e) = target.look_up().await {
                    tracing::warn!(error = %e, "a sentinel announced a new master, which could not be looked up yet");
                    target.distrust();
                }
            }
            RedisResult::Ok(())
        };
        if let Err(e) = subscribed.await {
            tracing::debug!(error = %e, "lost the +switch-master subscription on a sentinel; trying the next");
        }
        if target.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
