//! Appends acknowledged only once replicas have them (`persistence.replicas_ack`), with group
//! commit.
//!
//! `WAIT n timeout` answers once `n` replicas have every write its connection sent before it,
//! and holds up that connection meanwhile: it goes on a connection of its own. One `WAIT` per
//! publish would serialize the publishes behind one replication round trip each (about 200
//! per second here). So the appends that arrive while a batch is out wait for the next
//! batch, which goes as one pipeline (one per slot owner on a cluster) ending in one `WAIT`:
//! at low rates a publish costs one round trip more, at high rates the cost per publish falls.

use std::time::Duration;

use redis::{Cmd, RedisResult, Value};
use tokio::sync::{mpsc, oneshot};

use super::conn::Commands;

/// Appends waiting for a batch at most (more are held back: the publish API slows down
/// rather than queueing without bound).
const QUEUE: usize = 4_096;
/// Commands in one batch at most.
const BATCH: usize = 2_048;

/// What one caller asked for and where its answer goes.
struct Request {
    cmds: Vec<(String, Cmd)>,
    answer: oneshot::Sender<RedisResult<(Vec<Value>, i64)>>,
}

/// The writer of replicated appends: hands requests to its batching task.
pub(super) struct ReplicatedWriter {
    requests: mpsc::Sender<Request>,
    batcher: tokio::task::JoinHandle<()>,
}

impl Drop for ReplicatedWriter {
    fn drop(&mut self) {
        self.batcher.abort();
    }
}

impl ReplicatedWriter {
    /// Starts the batching task on `commands` (a connection of its own), asking `replicas`
    /// replicas to acknowledge within `timeout`.
    pub(super) fn start(commands: Commands, replicas: u32, timeout: Duration) -> ReplicatedWriter {
        let (requests, queue) = mpsc::channel(QUEUE);
        let batcher = tokio::spawn(batches(queue, commands, replicas, timeout));
        ReplicatedWriter { requests, batcher }
    }

    /// Runs `cmds` (in their order, refusals in place) in the next batch; their replies and
    /// how many replicas acknowledged the batch (the fewest of its pipelines).
    pub(super) async fn write(&self, cmds: Vec<(String, Cmd)>) -> RedisResult<(Vec<Value>, i64)> {
        let (answer, answered) = oneshot::channel();
        let gone = || redis::RedisError::from((redis::ErrorKind::Io, "the replicated writer stopped"));
        self.requests.send(Request { cmds, answer }).await.map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

/// Sends the requests in batches: everything waiting when the previous batch is answered.
async fn batches(mut queue: mpsc::Receiver<Request>, commands: Commands, replicas: u32, timeout: Duration) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let mut size = batch[0].cmds.len();
        while size < BATCH {
            match queue.try_recv() {
                Ok(request) => {
                    size += request.cmds.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let mut sizes = Vec::with_capacity(batch.len());
        let mut all = Vec::with_capacity(size);
        let mut answers = Vec::with_capacity(batch.len());
        for Request { cmds, answer } in batch {
            sizes.push(cmds.len());
            all.extend(cmds);
            answers.push(answer);
        }
        match commands.query_all_replicated(all, replicas, timeout).await {
            Ok((replies, acked)) => {
                let mut replies = replies.into_iter();
                for (n, answer) in sizes.into_iter().zip(answers) {
                    let _ = answer.send(Ok((replies.by_ref().take(n).collect(), acked)));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}
