//! A Redis Sentinel group on loopback for the tests: data nodes and three sentinels, on
//! `redis-server --sentinel` (or Valkey's, with `SWITCHBOARD_TEST_SERVER=valkey`).

use std::time::{Duration, Instant};

use crate::redis::{free_port, temp_dir, RedisServer, START_ATTEMPTS, START_TIMEOUT};

/// The name of the master every [`SentinelGroup`] watches.
pub const SENTINEL_MASTER: &str = "mymaster";

/// A Sentinel group: a master, its replicas and three sentinels (quorum 2) on loopback,
/// with `down-after-milliseconds 1000` and `failover-timeout 3000`: a killed master is
/// replaced within a few seconds. Killed when dropped.
pub struct SentinelGroup {
    /// The data nodes; the first one starts as the master.
    pub servers: Vec<RedisServer>,
    /// The three sentinels.
    pub sentinels: Vec<RedisServer>,
}

impl SentinelGroup {
    /// Starts a master with `replicas` replicas and three sentinels watching it, and waits
    /// until the replicas are in sync and every sentinel knows the replicas and the other
    /// sentinels (so that a failover can be authorized).
    pub fn start(replicas: usize) -> SentinelGroup {
        Self::start_with(replicas, &[])
    }

    /// [`SentinelGroup::start`] with `extra` arguments for every data node
    /// (`--min-replicas-to-write 1`, say).
    pub fn start_with(replicas: usize, extra: &[&str]) -> SentinelGroup {
        let node_args = |master: Option<u16>| {
            // An append-only file, so a replica killed and started again keeps what it had.
            let mut args =
                vec!["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0", "--appendonly", "yes"]
                    .into_iter()
                    .chain(extra.iter().copied())
                    .map(String::from)
                    .collect::<Vec<_>>();
            if let Some(port) = master {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
            }
            args
        };
        let master = RedisServer::start_with(free_port(), temp_dir("sentinel-node"), node_args(None));
        let mut servers = vec![master];
        for _ in 0..replicas {
            let port = servers[0].port;
            servers.push(RedisServer::start_with(free_port(), temp_dir("sentinel-node"), node_args(Some(port))));
        }
        let sentinels: Vec<RedisServer> = (0..3).map(|_| start_sentinel(servers[0].port)).collect();
        let group = SentinelGroup { servers, sentinels };
        group.await_settled(replicas);
        group
    }

    /// The sentinels, `host:port` separated by commas, as `redis_sentinel.sentinels` takes them.
    pub fn sentinel_addrs(&self) -> String {
        self.sentinels.iter().map(RedisServer::addr).collect::<Vec<_>>().join(",")
    }

    /// The index of the data node the sentinels name as the master now (the first sentinel
    /// that answers), if they name one of them.
    pub fn master(&self) -> Option<usize> {
        self.sentinels.iter().filter(|s| s.is_running()).find_map(|s| {
            let reply = s.cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER]);
            let port: u16 = reply.lines().nth(1)?.trim().parse().ok()?;
            self.servers.iter().position(|n| n.port == port)
        })
    }

    /// Waits until the sentinels name a master other than `old` and that node says it is one;
    /// returns its index.
    pub fn await_new_master(&self, old: usize) -> usize {
        let deadline = Instant::now() + START_TIMEOUT * 2;
        loop {
            if let Some(new) = self.master().filter(|m| *m != old) {
                if self.servers[new].cli(&["ROLE"]).starts_with("master") {
                    return new;
                }
            }
            if Instant::now() >= deadline {
                let roles: Vec<String> = self.servers.iter().map(|n| n.cli(&["ROLE"]).replace('\n', " ")).collect();
                let view = self.sentinels[0].cli(&["SENTINEL", "master", SENTINEL_MASTER]).replace('\n', " ");
                panic!(
                    "the sentinels never promoted a replica of node {old}: roles {roles:?}; a sentinel's view: {view}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes replica `replica` lag: stopped (SIGSTOP), it takes nothing the master writes
    /// from now on, and acknowledges nothing.
    pub fn lag(&self, replica: usize) {
        self.servers[replica].signal("STOP");
    }

    /// Ends a [`SentinelGroup::lag`] the way a crash would: the stopped replica is killed and
    /// started again from its append-only file, with only what it had taken before it
    /// stopped. (Resuming it would not do: what the master sent meanwhile waits in the
    /// kernel's buffers and reaches it, even after the master died.)
    pub fn crash_lagging(&mut self, replica: usize) {
        let node = &mut self.servers[replica];
        node.kill();
        node.spawn();
    }

    /// Asks the sentinels for a failover (the master stays up and is demoted).
    pub fn failover(&self) {
        let reply = self.sentinels[0].cli(&["SENTINEL", "FAILOVER", SENTINEL_MASTER]);
        assert!(reply.trim() == "OK", "SENTINEL FAILOVER answered {reply:?}");
    }

    /// Waits until every running replica is in sync with its master again (after a failover
    /// the old master, once back, resyncs as a replica).
    pub fn await_replicas_in_sync(&self) {
        let deadline = Instant::now() + START_TIMEOUT * 2;
        let running: Vec<&RedisServer> = self.servers.iter().filter(|n| n.is_running()).collect();
        loop {
            let masters: Vec<&&RedisServer> =
                running.iter().filter(|n| n.cli(&["ROLE"]).starts_with("master")).collect();
            let synced = masters.len() == 1 && {
                let info = masters[0].cli(&["INFO", "replication"]);
                let want = format!("connected_slaves:{}", running.len() - 1);
                info.lines().any(|l| l.trim() == want)
                    && running
                        .iter()
                        .filter(|n| n.port != masters[0].port)
                        .all(|n| n.cli(&["INFO", "replication"]).contains("master_link_status:up"))
            };
            if synced {
                return;
            }
            assert!(Instant::now() < deadline, "the replicas never all synced with one master");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn await_settled(&self, replicas: usize) {
        self.await_replicas_in_sync();
        let deadline = Instant::now() + START_TIMEOUT * 2;
        for s in &self.sentinels {
            loop {
                let known_replicas = s.cli(&["SENTINEL", "replicas", SENTINEL_MASTER]).matches("name").count();
                let known_sentinels = s.cli(&["SENTINEL", "sentinels", SENTINEL_MASTER]).matches("name").count();
                if known_replicas >= replicas && known_sentinels >= self.sentinels.len() - 1 {
                    break;
                }
                assert!(Instant::now() < deadline, "the sentinels never learned about each other and the replicas");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A sentinel watching the master on `master_port`.
fn start_sentinel(master_port: u16) -> RedisServer {
    for _ in 0..START_ATTEMPTS {
        let (port, dir) = (free_port(), temp_dir("sentinel"));
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\nsentinel failover-timeout {SENTINEL_MASTER} 3000\n\
             sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
            dir.display()
        );
        std::fs::write(&conf, text).expect("write the sentinel's config");
        let mut sentinel = RedisServer::sentinel(port, dir, conf);
        if sentinel.spawn_once() {
            return sentinel;
        }
    }
    panic!("no sentinel could start");
}
