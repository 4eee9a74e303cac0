//! Blocking log reads (`XREAD BLOCK`) on connections of their own.
//!
//! A blocked command holds up every command behind it on its connection, so these never go
//! through the node's multiplexed command connection. On a single server one connection
//! serves one `XREAD` over all the logs a worker reads. On a Redis Cluster the logs live in
//! different slots, which one `XREAD` cannot span: each log gets a connection of its own with
//! at most one blocking read in flight, kept across calls (a read that is still blocked is
//! waited on again rather than queued behind), and a caller is woken when any of them ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{RedisResult, Value};
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;

use super::conn::Commands;
use super::target::Target;
use super::RedisSettings;
use crate::LogId;

/// The longest one blocking read blocks; its connections wait this much longer than the
/// command timeout for an answer.
pub(super) const MAX_BLOCK: Duration = Duration::from_secs(30);

/// The connections blocking reads use, made on first use (edges never read this way).
pub(super) struct BlockingReads {
    settings: RedisSettings,
    target: Arc<Target>,
    /// Single server: the one connection.
    single: OnceCell<Commands>,
    /// Cluster: each log's connection and the read in flight on it.
    per_log: Mutex<HashMap<String, LogReader>>,
    /// Signalled when a cluster read in flight ends (data arrived, or it timed out).
    ended: Arc<Notify>,
}

/// One log's blocking connection on a cluster.
struct LogReader {
    conn: Commands,
    in_flight: Option<JoinHandle<()>>,
}

impl Drop for LogReader {
    fn drop(&mut self) {
        if let Some(read) = self.in_flight.take() {
            read.abort();
        }
    }
}

/// `XREAD [BLOCK ms] COUNT limit STREAMS log... id...` (`0-0` for a log read from its start).
fn xread(reads: &[(String, Option<LogId>)], limit: usize, block: Option<Duration>) -> redis::Cmd {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT").arg(limit.max(1));
    if let Some(block) = block {
        // BLOCK 0 would wait forever.
        cmd.arg("BLOCK").arg((block.as_millis() as u64).max(1));
    }
    cmd.arg("STREAMS");
    for (log, _) in reads {
        cmd.arg(log);
    }
    for (_, after) in reads {
        cmd.arg(after.map_or_else(|| "0-0".to_owned(), |a| a.to_string()));
    }
    cmd
}

impl BlockingReads {
    pub(super) fn new(settings: &RedisSettings, target: Arc<Target>) -> Self {
        let mut settings = settings.clone();
        settings.command_timeout += MAX_BLOCK;
        BlockingReads {
            settings,
            target,
            single: OnceCell::new(),
            per_log: Mutex::new(HashMap::new()),
            ended: Arc::new(Notify::new()),
        }
    }

    /// Single server: one `XREAD` of all the logs, blocking up to `block` (if given) when none
    /// has entries. The raw reply (nil when it timed out).
    pub(super) async fn read_all(
        &self,
        reads: &[(String, Option<LogId>)],
        limit: usize,
        block: Option<Duration>,
    ) -> RedisResult<Value> {
        let conn = self
            .single
            .get_or_try_init(|| Commands::connect(&self.settings, &self.target, None::<NoPush>, None))
            .await?;
        conn.query(&xread(reads, limit, block)).await
    }

    /// Cluster: makes sure every log has a blocking read in flight on its own connection and
    /// returns when one of them ends (or at `deadline`). The caller then looks at what arrived;
    /// a read that ended earlier can make this return at once, with nothing new.
    pub(super) async fn wait_any(
        &self,
        reads: &[(String, Option<LogId>)],
        deadline: tokio::time::Instant,
    ) -> RedisResult<()> {
        let block = deadline.saturating_duration_since(tokio::time::Instant::now());
        // Registered before any read starts, so none can end unnoticed.
        let ended = self.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        let missing: Vec<String> = {
            let per_log = self.per_log.lock();
            reads.iter().filter(|(log, _)| !per_log.contains_key(log)).map(|(log, _)| log.clone()).collect()
        };
        for log in missing {
            let conn = Commands::connect(&self.settings, &self.target, None::<NoPush>, None).await?;
            self.per_log.lock().entry(log).or_insert(LogReader { conn, in_flight: None });
        }
        {
            let mut per_log = self.per_log.lock();
            for read in reads {
                let Some(reader) = per_log.get_mut(&read.0) else { continue };
                if reader.in_flight.as_ref().is_some_and(|r| !r.is_finished()) {
                    continue;
                }
                let conn = reader.conn.clone();
                let cmd = xread(std::slice::from_ref(read), 1, Some(block));
                let ended = self.ended.clone();
                reader.in_flight = Some(tokio::spawn(async move {
                    if let Err(e) = conn.query::<Value>(&cmd).await {
                        tracing::debug!(error = %e, "a blocking log read failed");
                        // Not at once again: the caller would spin while the node is away.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    ended.notify_one();
                }));
            }
        }
        let _ = tokio::time::timeout_at(deadline, ended).await;
        Ok(())
    }
}

/// The push handler type of a connection without pushes.
pub(super) type NoPush = fn(redis::PushInfo) -> Result<(), redis::aio::SendError>;
