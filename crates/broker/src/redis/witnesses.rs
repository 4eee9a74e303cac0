//! The sentinels as witnesses of a replicated write: before a write that `WAIT` confirmed is
//! acknowledged, the sentinels are asked whether the server that took it is still the master.
//!
//! `WAIT` counts the replicas that have a write, not whether the server is still the master.
//! A master stopped past the election (a zombie) that resumes still calls itself master: the
//! commands queued on its sockets run, a replica that has not been moved to the new master
//! yet takes them and confirms them, and moments later that replica resynchronizes from the
//! new master and they are gone (fault matrix F6). The sentinels elected the new master
//! before the zombie resumed, so asking them closes that window: a write confirmed by a
//! server that any sentinel no longer names as master is not acknowledged (`503
//! not_replicated`: it may still appear; a retry with the same id is safe).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo};

/// How long one sentinel may take to answer (on loopback or in one zone, well under 1 ms).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a sentinel that did not answer is left out before it is asked again.
const REST: Duration = Duration::from_secs(1);

/// The sentinels of one group, each on a connection kept open.
pub(super) struct Witnesses {
    master: String,
    sentinels: Vec<Sentinel>,
}

struct Sentinel {
    info: ConnectionInfo,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    connection: Option<MultiplexedConnection>,
    /// Left out until then after failing to answer.
    resting_until: Option<Instant>,
}

impl Witnesses {
    /// The sentinels at `sentinels` watching the group named `master`; nothing is dialled yet.
    pub(super) fn new(master: &str, sentinels: &[ConnectionInfo]) -> Witnesses {
        let sentinels =
            sentinels.iter().map(|info| Sentinel { info: info.clone(), state: Default::default() }).collect();
        Witnesses { master: master.to_owned(), sentinels }
    }

    /// Whether no sentinel names a server other than `addr` (`host:port`) as the master. All
    /// are asked at once (one round trip). One that does not answer is not counted; if none
    /// does, none can have promoted another server either, and the answer is yes.
    pub(super) async fn still_master(&self, addr: &str) -> bool {
        let named = join_all(self.sentinels.iter().map(|s| s.master_named(&self.master))).await;
        let mut others = named.into_iter().flatten().filter(|named| named != addr).peekable();
        match others.peek() {
            None => true,
            Some(other) => {
                tracing::warn!(took_it = addr, master = %other, "a write was confirmed by a server the sentinels no longer name as master; not acknowledged");
                false
            }
        }
    }
}

impl Sentinel {
    /// The master this sentinel names for `group` (`host:port`), or `None` if it did not
    /// answer in time (it then rests a while).
    async fn master_named(&self, group: &str) -> Option<String> {
        let mut state = self.state.lock().await;
        if state.resting_until.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let asked = tokio::time::timeout(ANSWER_TIMEOUT, async {
            if state.connection.is_none() {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(ANSWER_TIMEOUT))
                    .set_response_timeout(Some(ANSWER_TIMEOUT));
                let client = redis::Client::open(self.info.clone())?;
                state.connection = Some(client.get_multiplexed_async_connection_with_config(&config).await?);
            }
            let Some(connection) = state.connection.as_mut() else { return Ok(None) };
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(group)
                .query_async::<Option<(String, u16)>>(connection)
                .await
        })
        .await;
        match asked {
            Ok(Ok(named)) => {
                state.resting_until = None;
                named.map(|(host, port)| format!("{host}:{port}"))
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, sentinel = %self.info.addr(), "a sentinel did not say where the master is");
                state.connection = None;
                state.resting_until = Some(Instant::now() + REST);
                None
            }
            Err(_) => {
                state.connection = None;
                state.resting_until = Some(Instant::now() + REST);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::IntoConnectionInfo;
    use switchboard_testkit::sentinel::{SentinelGroup, SENTINEL_MASTER};

    fn witnesses_of(group: &SentinelGroup) -> Witnesses {
        let sentinels: Vec<ConnectionInfo> = group
            .sentinel_addrs()
            .split(',')
            .map(|a| format!("redis://{a}").into_connection_info().expect("a sentinel address"))
            .collect();
        Witnesses::new(SENTINEL_MASTER, &sentinels)
    }

    #[tokio::test]
    async fn only_the_server_the_sentinels_name_is_confirmed_and_no_answer_is_no_veto() {
        let mut group = SentinelGroup::start(1);
        let witnesses = witnesses_of(&group);
        let master = group.master().expect("a master");
        let (at_master, at_replica) = (
            format!("127.0.0.1:{}", group.servers[master].port),
            format!("127.0.0.1:{}", group.servers[1 - master].port),
        );
        assert!(witnesses.still_master(&at_master).await, "the master is the master");
        assert!(!witnesses.still_master(&at_replica).await, "a replica (or a demoted master) is not");
        // Sentinels that cannot answer veto nothing: none of them can have elected another.
        for sentinel in &mut group.sentinels {
            sentinel.kill();
        }
        assert!(witnesses.still_master(&at_replica).await);
    }
}
