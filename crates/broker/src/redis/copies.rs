//! Copies of events into users' logs under the ingest position they already have, as native
//! commands in a pipeline.
//!
//! A copy is `XADD` under the explicit id (trimming what is older than the retention), then
//! `XTRIM MAXLEN` and `PEXPIRE`. Redis refuses an explicit id that is not above the log's
//! newest, and that refusal is the "already stored" answer: a batch stored again (after a
//! worker's crash, or by one that stalled past its lease) leaves the log as it was. The
//! commands after a refused `XADD` still run and are harmless. This used to be one Lua script
//! per copy; the script cost Redis ~3× the CPU of the three commands (BENCHMARKS.md,
//! "The copy into a user's log without Lua").

use std::time::Duration;

use redis::{Cmd, Value};

use super::conn::Commands;
use crate::{BrokerError, LogId, Result};

/// What Redis says when an explicit `XADD` id is not above the stream's newest entry.
const ALREADY_HAS_ID: &str = "equal or smaller";

/// A pipeline of copies and of other commands sent with them, each with the key it touches,
/// remembering which replies answer a copy's `XADD`.
pub(super) struct CopyPipeline {
    cmds: Vec<(String, Cmd)>,
    adds: Vec<usize>,
    min_ms: u64,
    ttl_ms: u64,
    max: Option<u64>,
}

impl CopyPipeline {
    /// An empty pipeline for `copies` copies and `others` other commands. At `now_ms`, entries
    /// older than `retention` are trimmed and a log expires `retention` after its last copy;
    /// a log keeps its newest `max_entries` (`usize::MAX`: no cap).
    pub(super) fn new(copies: usize, others: usize, now_ms: u64, retention: Duration, max_entries: usize) -> Self {
        CopyPipeline {
            cmds: Vec::with_capacity(copies * 3 + others),
            adds: Vec::with_capacity(copies),
            min_ms: now_ms.saturating_sub(retention.as_millis() as u64),
            ttl_ms: retention.as_millis().max(1) as u64,
            max: (max_entries != usize::MAX).then_some(max_entries.max(1) as u64),
        }
    }

    /// Adds the copy of `entry` into `log` under `id`.
    pub(super) fn copy(&mut self, log: &str, id: LogId, entry: &[u8]) {
        self.adds.push(self.cmds.len());
        let mut add = redis::cmd("XADD");
        add.arg(log).arg("MINID").arg(self.min_ms).arg(id.to_string()).arg("d").arg(entry);
        self.cmds.push((log.to_owned(), add));
        if let Some(max) = self.max {
            self.cmds.push((log.to_owned(), redis::cmd("XTRIM").arg(log).arg("MAXLEN").arg(max).clone()));
        }
        self.cmds.push((log.to_owned(), redis::cmd("PEXPIRE").arg(log).arg(self.ttl_ms).clone()));
    }

    /// Adds another command, touching `key`, that must not be refused.
    pub(super) fn push(&mut self, key: String, cmd: Cmd) {
        self.cmds.push((key, cmd));
    }

    /// Sends the pipeline ([`Commands::query_all_replies`]) and reads its replies (see
    /// [`CopyPipeline::outcomes`]).
    pub(super) async fn run(mut self, commands: &Commands) -> Result<Vec<bool>> {
        let cmds = std::mem::take(&mut self.cmds);
        let count = cmds.len();
        let replies = commands.query_all_replies(cmds).await.map_err(super::unavailable)?;
        self.outcomes(count, &replies)
    }

    /// Reads the replies to the pipeline's `sent` commands (refusals in place, as
    /// `Value::ServerError`): for each
    /// copy in order, whether it was stored (`false`: the log had that id or a later one).
    /// Any other refusal (out of memory, a key of another type) fails the whole batch: it must
    /// not pass for "already stored".
    fn outcomes(&self, sent: usize, replies: &[Value]) -> Result<Vec<bool>> {
        if replies.len() != sent {
            return Err(BrokerError::Protocol(format!("{} replies to a pipeline of {sent} commands", replies.len())));
        }
        let mut stored = Vec::with_capacity(self.adds.len());
        let mut adds = self.adds.iter().peekable();
        for (n, reply) in replies.iter().enumerate() {
            let is_add = adds.next_if(|&&a| a == n).is_some();
            match reply {
                Value::ServerError(e) if is_add && e.details().is_some_and(|d| d.contains(ALREADY_HAS_ID)) => {
                    stored.push(false)
                }
                Value::ServerError(e) => return Err(BrokerError::Unavailable(format!("redis refused a write: {e}"))),
                _ if is_add => stored.push(true),
                _ => {}
            }
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal as Redis sends it (`-ERR …` / `-OOM …`).
    fn refusal(line: &str) -> Value {
        let value = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).expect("an error reply");
        assert!(matches!(value, Value::ServerError(_)), "{value:?}");
        value
    }

    fn pipeline() -> CopyPipeline {
        let mut p = CopyPipeline::new(2, 1, 10_000, Duration::from_millis(4_000), 101);
        p.copy("user:{a}", LogId { ms: 9_000, seq: 0 }, b"one");
        p.push("idx".to_owned(), redis::cmd("SET").arg("idx").arg("x").clone());
        p.copy("user:{b}", LogId { ms: 9_001, seq: 0 }, b"two");
        p
    }

    #[test]
    fn each_copy_is_an_xadd_under_its_id_then_the_cap_and_the_expiry() {
        let p = pipeline();
        let packed: Vec<String> =
            p.cmds.iter().map(|(_, c)| String::from_utf8_lossy(&c.get_packed_command()).into_owned()).collect();
        assert_eq!(packed.len(), 7);
        let words = |s: &str| {
            s.split("\r\n").filter(|w| !w.starts_with(['*', '$']) && !w.is_empty()).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(words(&packed[0]), "XADD user:{a} MINID 6000 9000-0 d one");
        assert_eq!(words(&packed[1]), "XTRIM user:{a} MAXLEN 101");
        assert_eq!(words(&packed[2]), "PEXPIRE user:{a} 4000");
        assert_eq!(words(&packed[3]), "SET idx x");
        assert_eq!(words(&packed[4]), "XADD user:{b} MINID 6000 9001-0 d two");
        let keys: Vec<&str> = p.cmds.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["user:{a}", "user:{a}", "user:{a}", "idx", "user:{b}", "user:{b}", "user:{b}"]);
    }

    #[test]
    fn without_a_cap_there_is_no_trim() {
        let mut p = CopyPipeline::new(1, 0, 10_000, Duration::from_millis(4_000), usize::MAX);
        p.copy("user:{a}", LogId { ms: 9_000, seq: 0 }, b"one");
        assert_eq!(p.cmds.len(), 2);
    }

    #[test]
    fn a_refused_id_is_already_stored_and_any_other_refusal_fails_the_batch() {
        let p = pipeline();
        let ok = Value::Okay;
        let id = Value::BulkString(b"9000-0".to_vec());
        let dup = refusal("ERR The ID specified in XADD is equal or smaller than the target stream top item");
        let int = Value::Int(1);
        let replies = [id.clone(), int.clone(), int.clone(), ok.clone(), dup.clone(), int.clone(), int.clone()];
        assert_eq!(p.outcomes(p.cmds.len(), &replies).expect("outcomes"), [true, false]);

        let oom = refusal("OOM command not allowed when used memory > 'maxmemory'.");
        let replies = [oom, int.clone(), int.clone(), ok.clone(), id.clone(), int.clone(), int.clone()];
        assert!(p.outcomes(p.cmds.len(), &replies).is_err(), "out of memory is not 'already stored'");

        let wrong = refusal("ERR equal or smaller");
        let replies = [id.clone(), int.clone(), int.clone(), wrong, id.clone(), int.clone(), int.clone()];
        assert!(p.outcomes(p.cmds.len(), &replies).is_err(), "only an XADD's refusal means 'already stored'");

        assert!(p.outcomes(p.cmds.len(), &replies[..3]).is_err(), "missing replies");
    }
}
