//! The broker's logs on Redis: streams (`XADD`, `XRANGE`, `XREAD`), each entry's body in
//! field `d`. Ingest appends go where `replicas_ack` says ([`RedisBroker::write_all`]); copies
//! into users' logs go as one pipeline ([`super::copies`]); a worker's blocking reads go on
//! connections of their own ([`super::blocking`]).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Value;

use super::copies::CopyPipeline;
use super::{blocking, unavailable, RedisBroker};
use crate::{BrokerError, Log, LogId, Result};

fn parse_id(id: &str) -> Result<LogId> {
    LogId::parse(id).ok_or_else(|| BrokerError::Protocol(format!("bad stream id {id}")))
}

/// A stream's entries as `XRANGE` and `XREAD` give them, with the body in field `d`.
type RawEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

fn entries(raw: RawEntries) -> Result<Vec<(LogId, Bytes)>> {
    raw.into_iter()
        .map(|(id, fields)| {
            let body = fields.into_iter().find(|(k, _)| k == "d").map(|(_, v)| Bytes::from(v)).unwrap_or_default();
            Ok((parse_id(&id)?, body))
        })
        .collect()
}

/// The reply of an `XREAD` of `reads`: each log's entries, in the order of `reads` (nil, after
/// a timeout, is no entries anywhere).
fn xread_reply(reply: Value, reads: &[(String, Option<LogId>)]) -> Result<Vec<Vec<(LogId, Bytes)>>> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Nil => Vec::new(),
        Value::Map(pairs) => pairs,
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    Ok((kv.next().unwrap_or(Value::Nil), kv.next().unwrap_or(Value::Nil)))
                }
                other => Err(BrokerError::Protocol(format!("unexpected XREAD row {other:?}"))),
            })
            .collect::<Result<_>>()?,
        other => return Err(BrokerError::Protocol(format!("unexpected XREAD reply {other:?}"))),
    };
    let mut out = vec![Vec::new(); reads.len()];
    for (key, raw) in pairs {
        let key: String = redis::from_redis_value(key).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        let raw: RawEntries = redis::from_redis_value(raw).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        if let Some(n) = reads.iter().position(|(log, _)| *log == key) {
            out[n] = entries(raw)?;
        }
    }
    Ok(out)
}

#[async_trait]
impl Log for RedisBroker {
    async fn append(&self, log: &str, entry: Bytes, retention: Duration) -> Result<LogId> {
        let ids = self.append_many(&[(log.to_owned(), entry)], retention).await?;
        ids.first().copied().ok_or_else(|| BrokerError::Protocol("no id for an append".into()))
    }

    async fn append_many(&self, entries: &[(String, Bytes)], retention: Duration) -> Result<Vec<LogId>> {
        let min_ms = self.clock.now_ms().saturating_sub(retention.as_millis() as u64);
        let ttl = retention.as_millis().max(1) as u64;
        // Each log's expiry is pushed out once, after its last entry of the batch.
        let mut cmds: Vec<(String, redis::Cmd)> = Vec::with_capacity(entries.len() + 4);
        let mut is_add = Vec::with_capacity(entries.len() + 4);
        let last: std::collections::HashMap<&str, usize> =
            entries.iter().enumerate().map(|(n, (log, _))| (log.as_str(), n)).collect();
        for (n, (log, entry)) in entries.iter().enumerate() {
            let add = redis::cmd("XADD").arg(log).arg("MINID").arg(min_ms).arg("*").arg("d").arg(&entry[..]).clone();
            cmds.push((log.clone(), add));
            is_add.push(true);
            if last.get(log.as_str()) == Some(&n) {
                cmds.push((log.clone(), redis::cmd("PEXPIRE").arg(log).arg(ttl).clone()));
                is_add.push(false);
            }
        }
        let replies = self.write_all(super::Ack::Replicas, cmds).await?;
        replies
            .iter()
            .zip(is_add)
            .filter(|(_, add)| *add)
            .map(|(v, _)| {
                let id: String =
                    redis::from_redis_value(v.clone()).map_err(|e| BrokerError::Protocol(e.to_string()))?;
                parse_id(&id)
            })
            .collect()
    }

    async fn append_with_id(
        &self,
        log: &str,
        id: LogId,
        entry: Bytes,
        retention: Duration,
        max_entries: usize,
    ) -> Result<bool> {
        let mut pipe = CopyPipeline::new(1, 0, self.clock.now_ms(), retention, max_entries);
        pipe.copy(log, id, &entry);
        Ok(pipe.run(&self.commands).await?.first().copied().unwrap_or(false))
    }

    async fn append_with_id_many(
        &self,
        entries: &[(String, LogId, Bytes)],
        retention: Duration,
        max_entries: usize,
    ) -> Result<()> {
        let mut pipe = CopyPipeline::new(entries.len(), 0, self.clock.now_ms(), retention, max_entries);
        for (log, id, entry) in entries {
            pipe.copy(log, *id, entry);
        }
        pipe.run(&self.commands).await.map(|_| ())
    }

    async fn read_last_after(
        &self,
        log: &str,
        after: Option<LogId>,
        limit: usize,
    ) -> Result<(Vec<(LogId, Bytes)>, bool)> {
        let end = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let cmd = redis::cmd("XREVRANGE").arg(log).arg("+").arg(end).arg("COUNT").arg(limit + 1).clone();
        let mut raw: RawEntries = self.query(&cmd).await?;
        let truncated = raw.len() > limit;
        raw.truncate(limit);
        let mut out = entries(raw)?;
        out.reverse();
        Ok((out, truncated))
    }

    async fn newest_ids(&self, logs: &[String]) -> Result<Vec<Option<LogId>>> {
        let cmds: Vec<(String, redis::Cmd)> = logs
            .iter()
            .map(|log| (log.clone(), redis::cmd("XREVRANGE").arg(log).arg("+").arg("-").arg("COUNT").arg(1).clone()))
            .collect();
        let replies = self.commands.query_all(cmds).await.map_err(unavailable)?;
        replies
            .into_iter()
            .map(|reply| {
                let raw: RawEntries =
                    redis::from_redis_value(reply).map_err(|e| BrokerError::Protocol(e.to_string()))?;
                raw.first().map(|(id, _)| parse_id(id)).transpose()
            })
            .collect()
    }

    async fn read_after(&self, log: &str, after: Option<LogId>, limit: usize) -> Result<Vec<(LogId, Bytes)>> {
        let start = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let cmd = redis::cmd("XRANGE").arg(log).arg(start).arg("+").arg("COUNT").arg(limit).clone();
        entries(self.query(&cmd).await?)
    }

    async fn read_after_many(
        &self,
        reads: &[(String, Option<LogId>)],
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<Vec<(LogId, Bytes)>>> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        let block = wait.min(blocking::MAX_BLOCK);
        if !self.commands.is_cluster() {
            let block = (!block.is_zero()).then_some(block);
            let reply = self.blocking.read_all(reads, limit, block).await.map_err(unavailable)?;
            return xread_reply(reply, reads);
        }
        // A cluster: look at every log (concurrently); while all are empty, wait for a blocking
        // read of any of them to end, and look again.
        let deadline = tokio::time::Instant::now() + block;
        loop {
            let found = futures_util::future::try_join_all(
                reads.iter().map(|(log, after)| self.read_after(log, *after, limit)),
            )
            .await?;
            if found.iter().any(|e| !e.is_empty()) || tokio::time::Instant::now() >= deadline {
                return Ok(found);
            }
            self.blocking.wait_any(reads, deadline).await.map_err(unavailable)?;
        }
    }

    async fn trim_through(&self, log: &str, through: LogId) -> Result<()> {
        // MINID keeps the entries at or after the given id: the one right after `through`.
        let keep_from = LogId { ms: through.ms, seq: through.seq.saturating_add(1) };
        let _: i64 = self.query(redis::cmd("XTRIM").arg(log).arg("MINID").arg(keep_from.to_string())).await?;
        Ok(())
    }
}
