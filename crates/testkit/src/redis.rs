//! Real Redis servers for the tests: single servers and a local Redis Cluster (a Sentinel
//! group is in [`crate::sentinel`]), each on free loopback ports in a temporary directory,
//! killed when dropped.
//! `redis-server` must be installed (`scripts/test.sh` installs it); a missing binary fails
//! the test loudly instead of skipping it.
//!
//! `SWITCHBOARD_TEST_SERVER=valkey` runs every one of them on Valkey instead
//! (`valkey-server`, `valkey-cli`), so the same tests prove both servers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Ports are picked below Linux's ephemeral range (32768 and up), with the cluster bus port
/// (port + 10000) free as well: a port the OS hands out at random could be taken by any
/// client socket before redis-server binds it, and its bus port even more so.
const PORTS: std::ops::Range<u16> = 20_000..22_700;
/// How many times a server that could not bind its port is started again on another.
pub(crate) const START_ATTEMPTS: usize = 5;

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub(crate) fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    // Spread processes over the range (tests run in several processes at once).
    let offset = (std::process::id() as u16).wrapping_mul(97);
    for _ in 0..PORTS.len() {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).wrapping_add(offset);
        let port = PORTS.start + n % (PORTS.end - PORTS.start);
        if bindable(port) && bindable(port + 10_000) {
            return port;
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("addr").port()
}

pub(crate) fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sb-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Sends one inline command and returns the raw reply (enough for PING and CLUSTER INFO).
fn raw_command(port: u16, command: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Which server the tests run: Redis, or Valkey with `SWITCHBOARD_TEST_SERVER=valkey`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `redis-server`, `redis-cli`.
    Redis,
    /// `valkey-server`, `valkey-cli`.
    Valkey,
}

impl Flavor {
    /// The flavor this test run uses.
    pub fn current() -> Flavor {
        match std::env::var("SWITCHBOARD_TEST_SERVER").as_deref() {
            Ok("valkey") => Flavor::Valkey,
            _ => Flavor::Redis,
        }
    }

    /// The server binary.
    pub fn server(self) -> &'static str {
        match self {
            Flavor::Redis => "redis-server",
            Flavor::Valkey => "valkey-server",
        }
    }

    /// The command-line client.
    pub fn cli(self) -> &'static str {
        match self {
            Flavor::Redis => "redis-cli",
            Flavor::Valkey => "valkey-cli",
        }
    }

    /// The name for reports (`redis`, `valkey`).
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Redis => "redis",
            Flavor::Valkey => "valkey",
        }
    }
}

/// One server process (`redis-server`, or `valkey-server`; a data node or a sentinel).
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    /// A sentinel's config file (sentinels need one, and rewrite it).
    sentinel_conf: Option<PathBuf>,
}

impl RedisServer {
    /// A sentinel on `port`, not started yet, reading and rewriting `conf` in `dir`.
    pub(crate) fn sentinel(port: u16, dir: PathBuf, conf: PathBuf) -> RedisServer {
        RedisServer { port, dir, extra: Vec::new(), child: None, sentinel_conf: Some(conf) }
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl RedisServer {
    /// Starts a standalone server on a free port.
    pub fn start() -> RedisServer {
        Self::start_with(free_port(), temp_dir("redis"), Vec::new())
    }

    /// Starts a standalone server that syncs its append-only file on every write
    /// (`appendfsync always`): what it acknowledged survives a SIGKILL and [`Self::restart`].
    pub fn start_durable() -> RedisServer {
        let aof = ["--appendonly", "yes", "--appendfsync", "always"].map(String::from).to_vec();
        Self::start_with(free_port(), temp_dir("redis"), aof)
    }

    /// Starts a lone cluster-enabled server (a Redis Cluster node that joined no cluster):
    /// what a node pointed at one of a cluster's nodes as if it were a single server meets.
    pub fn start_cluster_node() -> RedisServer {
        let extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"].map(String::from).to_vec();
        Self::start_with(free_port(), temp_dir("cluster"), extra)
    }

    /// Starts a server whose extra arguments are `extra` (as `redis-server --<name> <value>`).
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        Self::start_with(free_port(), temp_dir("redis"), extra.iter().map(|a| a.to_string()).collect())
    }

    pub(crate) fn start_with(port: u16, dir: PathBuf, extra: Vec<String>) -> RedisServer {
        let mut server = RedisServer { port, dir, extra, child: None, sentinel_conf: None };
        for _ in 1..START_ATTEMPTS {
            if server.spawn_once() {
                return server;
            }
            // It exited: most likely its port was taken meanwhile. Try another.
            server.port = free_port();
        }
        server.spawn();
        server
    }

    pub(crate) fn spawn(&mut self) {
        assert!(self.spawn_once(), "redis-server on port {} exited at start (port taken?)", self.port);
    }

    /// Starts the process and waits until it answers; false if it exited first.
    pub(crate) fn spawn_once(&mut self) -> bool {
        let flavor = Flavor::current();
        let mut cmd = Command::new(flavor.server());
        match &self.sentinel_conf {
            Some(conf) => {
                cmd.arg(conf).arg("--sentinel");
            }
            None => {
                cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&self.dir);
            }
        }
        cmd.args(&self.extra).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start {} ({e}); install it (scripts/test.sh does it with apt-get)", flavor.server())
        });
        let child = self.child.insert(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while raw_command(self.port, "PING").is_none_or(|r| !r.starts_with("+PONG")) {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer PING", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: SIGKILL, no shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty of data unless it keeps an append-only file
    /// (a cluster node keeps its identity and slots: they are in its directory).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts it again after [`Self::kill`], on the same port, with `extra` arguments instead
    /// of the ones it had (a killed master that comes back as a replica, say).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill();
        self.extra = extra.iter().map(|a| a.to_string()).collect();
        self.spawn();
    }

    /// Sends the process a signal by name (`STOP`, `CONT`): a paused server keeps its sockets
    /// open and answers nothing.
    pub fn signal(&self, name: &str) {
        let Some(child) = &self.child else { return };
        let status =
            Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs a command with the command-line client and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let cli = Flavor::current().cli();
        let out = Command::new(cli)
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {cli}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a `CLUSTER NODES` line (split in fields) lists `slot` among its ranges.
fn serves(fields: &[&str], slot: u16) -> bool {
    fields.iter().skip(8).filter(|r| !r.starts_with('[')).any(|range| {
        let (from, to) = range.split_once('-').unwrap_or((range, range));
        from.parse::<u16>().is_ok_and(|f| f <= slot) && to.parse::<u16>().is_ok_and(|t| slot <= t)
    })
}

/// A local Redis Cluster.
pub struct RedisCluster {
    /// Every node, masters and replicas.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers without replicas and joins them.
    pub fn start(masters: usize) -> RedisCluster {
        Self::start_with_replicas(masters, 0)
    }

    /// Starts `masters` masters with `replicas` replicas each and joins them with
    /// `redis-cli --cluster create`.
    pub fn start_with_replicas(masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ]
                .map(String::from)
                .to_vec();
                RedisServer::start_with(free_port(), temp_dir("cluster"), extra)
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new(Flavor::current().cli())
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes };
        cluster.await_ok();
        // A replica that never synced with its master cannot take over from it.
        let deadline = Instant::now() + START_TIMEOUT;
        for n in &cluster.nodes {
            while n.cli(&["ROLE"]).starts_with("slave")
                && !n.cli(&["INFO", "replication"]).contains("master_link_status:up")
            {
                assert!(Instant::now() < deadline, "a replica never synced with its master");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Waits until `slot` is served by a running master other than `old` (after `old` was
    /// killed: its replica has been promoted).
    pub fn await_failover(&self, slot: u16, old: usize) {
        let deadline = Instant::now() + START_TIMEOUT * 2;
        loop {
            if self.try_owner_of(slot).is_some_and(|o| o != old) {
                self.await_ok();
                return;
            }
            assert!(Instant::now() < deadline, "no replica took slot {slot} over from node {old}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node reports the cluster healthy.
    pub fn await_ok(&self) {
        let deadline = Instant::now() + START_TIMEOUT * 2;
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            while !raw_command(n.port, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok")) {
                assert!(Instant::now() < deadline, "cluster never reached state ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// A running node to ask about the cluster.
    fn any_running(&self) -> &RedisServer {
        self.nodes.iter().find(|n| n.child.is_some()).expect("a running node")
    }

    /// The hash slot of `name` (a key or a sharded channel).
    pub fn slot_of(&self, name: &str) -> u16 {
        self.any_running().cli(&["CLUSTER", "KEYSLOT", name]).trim().parse().expect("a slot number")
    }

    /// A node's cluster id.
    pub fn id_of(&self, node: usize) -> String {
        self.nodes[node].cli(&["CLUSTER", "MYID"]).trim().to_owned()
    }

    /// The index of the master serving `slot`, as the running nodes see it.
    pub fn owner_of(&self, slot: u16) -> usize {
        self.try_owner_of(slot).unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The index of the master serving `slot`, if one does.
    pub fn try_owner_of(&self, slot: u16) -> Option<usize> {
        let nodes = self.any_running().cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            if serves(&fields, slot) {
                let port: u16 = fields[1]
                    .split('@')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .expect("a node address");
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }

    /// Moves `slot` (holding no keys) to master `to`, as `redis-cli --cluster reshard` does,
    /// and waits until every master agrees.
    pub fn move_slot(&self, slot: u16, to: usize) {
        let from = self.owner_of(slot);
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let slot = slot.to_string();
        self.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        self.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        let masters: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.cli(&["ROLE"]).starts_with("master")).collect();
        for node in [&self.nodes[to], &self.nodes[from]].into_iter().chain(masters) {
            node.cli(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let slot: u16 = slot.parse().expect("a slot");
        while self.nodes.iter().filter(|n| n.child.is_some()).any(|n| {
            let view = n.cli(&["CLUSTER", "NODES"]);
            !view.lines().any(|l| l.starts_with(&to_id) && serves(&l.split_whitespace().collect::<Vec<_>>(), slot))
        }) {
            assert!(Instant::now() < deadline, "the cluster never agreed that slot {slot} moved");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Moves `slot` and every key in it to master `to` while clients keep using them, as
    /// `redis-cli --cluster reshard` does: the target imports, the owner migrates, the keys go
    /// over with `MIGRATE` (commands on them meanwhile get `ASK`, and `TRYAGAIN` for several
    /// keys split between the two), then every master is told the new owner. Returns how many
    /// keys moved.
    pub fn migrate_slot_with_keys(&self, slot: u16, to: usize) -> usize {
        let from = self.owner_of(slot);
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let slot_text = slot.to_string();
        self.nodes[to].cli(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id]);
        self.nodes[from].cli(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id]);
        let mut moved = 0;
        loop {
            let keys = self.nodes[from].cli(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().map(str::trim).filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = self.nodes[to].port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().copied());
            let out = self.nodes[from].cli(&args);
            assert!(out.contains("OK") || out.contains("NOKEY"), "MIGRATE answered {out:?}");
            moved += keys.len();
        }
        let masters: Vec<&RedisServer> =
            self.nodes.iter().filter(|n| n.child.is_some() && n.cli(&["ROLE"]).starts_with("master")).collect();
        for node in [&self.nodes[to], &self.nodes[from]].into_iter().chain(masters) {
            node.cli(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while self.try_owner_of(slot) != Some(to) {
            assert!(Instant::now() < deadline, "the cluster never agreed that slot {slot} moved");
            std::thread::sleep(Duration::from_millis(50));
        }
        moved
    }

    /// The index of a running replica of master `master`, if it has one.
    pub fn replica_of(&self, master: usize) -> Option<usize> {
        let id = self.id_of(master);
        let nodes = self.any_running().cli(&["CLUSTER", "NODES"]);
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 4 || !fields[2].contains("slave") || fields[3] != id || fields[2].contains("fail") {
                return None;
            }
            let port: u16 = fields[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            self.nodes.iter().position(|n| n.port == port && n.child.is_some())
        })
    }

    /// Waits until node `node` is a master serving `slot` in every running node's view.
    pub fn await_owner(&self, slot: u16, node: usize) {
        let deadline = Instant::now() + START_TIMEOUT * 2;
        while self.try_owner_of(slot) != Some(node) {
            assert!(Instant::now() < deadline, "node {node} never took slot {slot} over");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.await_ok();
    }

    /// Drops every pub/sub client connection of node `node` (`CLIENT KILL TYPE pubsub`).
    pub fn kill_pubsub_clients(&self, node: usize) -> u64 {
        let out = self.nodes[node].cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        out.trim().parse().unwrap_or_else(|_| panic!("CLIENT KILL answered {out:?}"))
    }

    /// The seed URLs, comma-separated, as `redis_url` takes them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(RedisServer::url).collect::<Vec<_>>().join(",")
    }
}
