//! The fault matrix (`../shared/design/ha.md` §4.3): each test runs the real binaries on real
//! Redis (or Valkey, with `SWITCHBOARD_TEST_SERVER=valkey`) under live traffic (one
//! sequential publisher and one open `/ws/notifications` connection per user, [`Traffic`]),
//! injects one fault, and checks the history: no acknowledged event lost on an open
//! connection, in order per user, nothing unexpected. Where the fault may take
//! acknowledgements back by design (no `replicas_ack`), the test says which ones and checks
//! that only those went. Each writes its findings to `target/tmp/fault-matrix/<id>.json`.
//!
//! They take minutes, so they are `#[ignore]`d in a plain `cargo test`; `scripts/test.sh` runs
//! them with `--ignored --test-threads 1`.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_testkit::fault_proxy::{FaultProxy, Mode};
use switchboard_testkit::redis::{Flavor, RedisCluster, RedisServer};
use switchboard_testkit::sentinel::{SentinelGroup, SENTINEL_MASTER};

mod common;

use common::matrix::{
    finish, ms, nodes, readiness_becomes, ready, report, scenario, sentinel_env, traffic_on, Promise, READINESS_BOUND,
};
use common::node_with;

// --- Sentinel: a master that fails over ---------------------------------------------------

/// F1: the master killed with SIGKILL under load. With `replicas_ack = 1` no acknowledged
/// event is lost; without, only events acknowledged in the last moment before the kill may be
/// (asynchronous replication), and the test checks nothing else went.
async fn sentinel_master_killed(id: &str, replicas_ack: u32) {
    let id = scenario(id);
    // Two replicas: after the failover one is left to acknowledge (with one, `replicas_ack =
    // 1` refuses every publish until the old master is back).
    let group = SentinelGroup::start(2);
    let (_worker, edge) = nodes(&id, "", false, &sentinel_env(&group, replicas_ack));
    let traffic = traffic_on(&id, &edge).await;
    let mut group = group;
    let old = group.master().expect("a master");
    let killed_at = Instant::now();
    group.servers[old].kill();
    let dead_at = Instant::now();
    let not_ready = readiness_becomes(&edge, false, &id).await;
    let new = group.await_new_master(old);
    let promoted = killed_at.elapsed();
    readiness_becomes(&edge, true, &id).await;
    // From the kill: the failover's whole outage as the node's clients saw it.
    let ready_again = killed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let extra = json!({
        "replicas_ack": replicas_ack,
        "not_ready_after_ms": ms(not_ready),
        "promoted_after_ms": ms(promoted),
        "ready_after_ms": ms(ready_again),
        "failovers_followed": edge.metric("switchboard_broker_failovers_total"),
        "new_master": new,
    });
    let promise = if replicas_ack > 0 {
        Promise::NoLoss
    } else {
        // What the dead master acknowledged but had not passed on yet; it may have been
        // delivered live before the kill, so none need be lost.
        let allowed = traffic.history.acked_between(killed_at - Duration::from_secs(1), dead_at);
        Promise::LossOnlyOf { allowed, at_least: 0 }
    };
    finish(&id, "Sentinel: the master killed (SIGKILL) under load", traffic, promise, extra).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f1_a_killed_master_loses_no_acknowledged_event_with_replicas_ack() {
    sentinel_master_killed("F1", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f1_without_replicas_ack_only_the_last_acknowledgements_can_go() {
    sentinel_master_killed("F1-no-ack", 0).await;
}

/// F2: a coordinated failover (`SENTINEL FAILOVER`): the old master stays up, is demoted,
/// and answers PING throughout; the node follows the new master and never writes to the old
/// one once it is a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f2_a_coordinated_failover_loses_nothing_and_the_node_follows() {
    let id = scenario("F2");
    let group = SentinelGroup::start(2);
    let (_worker, edge) = nodes(&id, "", false, &sentinel_env(&group, 1));
    let traffic = traffic_on(&id, &edge).await;
    let old = group.master().expect("a master");
    let started = Instant::now();
    group.failover();
    let new = group.await_new_master(old);
    let promoted = started.elapsed();
    // The node follows on its own (an error, +switch-master, or the poll).
    let deadline = Instant::now() + READINESS_BOUND;
    while edge.metric("switchboard_broker_failovers_total") < 1.0 {
        assert!(Instant::now() < deadline, "{id}: the node never followed the failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followed = started.elapsed();
    readiness_becomes(&edge, true, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let extra = json!({
        "replicas_ack": 1,
        "promoted_after_ms": ms(promoted),
        "followed_after_ms": ms(followed),
        "new_master": new,
    });
    finish(
        &id,
        "Sentinel: SENTINEL FAILOVER (the old master demoted, still answering)",
        traffic,
        Promise::NoLoss,
        extra,
    )
    .await;
}

/// F4: the killed master comes back at once, empty and calling itself master, before the
/// sentinels demote it: the node keeps to the master the sentinels name and writes nothing to
/// the stale one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f4_a_stale_master_that_returns_gets_no_writes() {
    let id = scenario("F4");
    let mut group = SentinelGroup::start(2);
    let (_worker, edge) = nodes(&id, "", false, &sentinel_env(&group, 1));
    let traffic = traffic_on(&id, &edge).await;
    let old = group.master().expect("a master");
    group.servers[old].kill();
    let new = group.await_new_master(old);
    // Back as a master with nothing in it (no persistence), as a restarted pod would be.
    group.servers[old].restart_with(&["--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"]);
    let stale_keys_at_restart = group.servers[old].cli(&["DBSIZE"]).trim().parse::<u64>().unwrap_or(0);
    readiness_becomes(&edge, true, &id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Whatever the stale master holds now came from its resync as a replica, not from us:
    // before the sentinels demote it, it must not have taken an ingest entry.
    let extra = json!({
        "replicas_ack": 1,
        "new_master": new,
        "stale_master_keys_at_restart": stale_keys_at_restart,
        "stale_master_role_after": group.servers[old].cli(&["ROLE"]).lines().next().unwrap_or("").to_owned(),
    });
    finish(&id, "Sentinel: the killed master restarted empty as a master", traffic, Promise::NoLoss, extra).await;
}

/// F5: the replica lags (stopped) while the master takes writes, then the master dies, the
/// replica crashes too and comes back with what it had, and is promoted. The worker is stopped too, so nothing is delivered live
/// before the crash. Without `replicas_ack` every event acknowledged meanwhile is lost, and
/// the check must find exactly those; with it, they were never acknowledged (503), and
/// nothing acknowledged is lost.
async fn replica_lag_then_crash(id: &str, replicas_ack: u32) {
    let id = scenario(id);
    let mut group = SentinelGroup::start(1);
    let (worker, edge) = nodes(&id, "", false, &sentinel_env(&group, replicas_ack));
    let traffic = traffic_on(&id, &edge).await;
    let old = group.master().expect("a master");
    let replica = 1 - old;
    let worker_stopped = Instant::now();
    worker.signal("STOP");
    group.lag(replica);
    let lag_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    group.servers[old].kill();
    // Until the kill is done the master still acknowledges.
    let lag_to = Instant::now();
    group.crash_lagging(replica);
    worker.signal("CONT");
    let new = group.await_new_master(old);
    readiness_becomes(&edge, true, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // What the replica cannot have: acknowledged once it had stopped taking anything (the
    // first moments after the stop still saw writes it had taken).
    let certainly_lacked = traffic.history.acked_between(lag_from + Duration::from_millis(200), lag_to);
    // What it may lack: anything acknowledged since the worker stopped delivering live.
    let may_lack = traffic.history.acked_between(worker_stopped, lag_to);
    let extra = json!({
        "replicas_ack": replicas_ack,
        "acked_while_the_replica_lagged": certainly_lacked.len(),
        "new_master": new,
    });
    let promise = if replicas_ack > 0 {
        assert!(certainly_lacked.is_empty(), "{id}: acknowledged without the replica: {certainly_lacked:?}");
        Promise::NoLoss
    } else {
        assert!(!certainly_lacked.is_empty(), "{id}: nothing was acknowledged while the replica lagged");
        Promise::LossOnlyOf { allowed: may_lack, at_least: certainly_lacked.len() }
    };
    let fault = "Sentinel: the replica stopped, the master killed, the replica back from its file and promoted";
    let findings = finish(&id, fault, traffic, promise, extra).await;
    if replicas_ack > 0 {
        // The replica's lag showed: publishes meanwhile were answered 503, not acknowledged.
        assert!(findings["history"]["indeterminate"].as_u64() > Some(0), "{id}: {findings:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f5_a_lagging_replica_promoted_loses_nothing_acknowledged_with_replicas_ack() {
    replica_lag_then_crash("F5", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f5_without_replicas_ack_the_check_finds_what_the_lagging_replica_lacked() {
    replica_lag_then_crash("F5-no-ack", 0).await;
}

/// F6: a zombie master: stopped (SIGSTOP) long enough for the sentinels to promote its
/// replica, then resumed, still calling itself master until it is demoted. With
/// `min-replicas-to-write 1` it refuses writes meanwhile; the node has moved on anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f6_a_zombie_master_takes_no_acknowledged_event_with_it() {
    let id = scenario("F6");
    let group = SentinelGroup::start_with(2, &["--min-replicas-to-write", "1", "--min-replicas-max-lag", "1"]);
    let (_worker, edge) = nodes(&id, "", false, &sentinel_env(&group, 1));
    let traffic = traffic_on(&id, &edge).await;
    let old = group.master().expect("a master");
    let stopped = Instant::now();
    group.servers[old].signal("STOP");
    let new = group.await_new_master(old);
    group.servers[old].signal("CONT");
    readiness_becomes(&edge, true, &id).await;
    let ready_again = stopped.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let extra = json!({"replicas_ack": 1, "new_master": new, "ready_after_ms": ms(ready_again)});
    finish(
        &id,
        "Sentinel: the master stopped past the election, then resumed (a zombie)",
        traffic,
        Promise::NoLoss,
        extra,
    )
    .await;
}

// --- One Redis server: pauses, stalls, lost subscriptions ----------------------------------

/// F8: every pub/sub connection killed on every master five times, 2 s apart, under live
/// persistent traffic: open connections get everything from the users' logs.
async fn subscriptions_killed_under_load(id: &str, redis_url: &str, cluster: bool, masters: &[&RedisServer]) {
    let id = scenario(id);
    let (_worker, edge) =
        nodes(&id, redis_url, cluster, &[("SWITCHBOARD_PERSISTENCE__REPLAY_LIMIT".into(), "100".into())]);
    let traffic = traffic_on(&id, &edge).await;
    let mut killed = 0;
    for _ in 0..5 {
        for master in masters {
            killed += master.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).trim().parse::<u64>().unwrap_or(0);
        }
        // The fault's rhythm, not a wait for an outcome.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let gap_fills = edge.metric("switchboard_gap_fill_reads_total");
    let extra = json!({
        "pubsub_connections_killed": killed,
        "gap_fill_reads": gap_fills,
        "gap_filled_events": edge.metric("switchboard_gap_filled_events_total"),
        "gap_unrecoverable": edge.metric("switchboard_gap_unrecoverable_total"),
        "subscription_losses": edge.metric("switchboard_broker_subscription_losses_total"),
    });
    assert!(killed >= 5, "{id}: the fault did not bite: {extra}");
    let fault = "CLIENT KILL TYPE pubsub on every master, 5 times, 2 s apart";
    finish(&id, fault, traffic, Promise::NoLoss, extra.clone()).await;
    assert!(gap_fills > 0.0, "{id}: no connection was caught up after its node's subscriptions came back: {extra}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f8_killed_subscriptions_lose_nothing_on_open_connections_single_redis() {
    let redis = RedisServer::start();
    subscriptions_killed_under_load("F8-single", &redis.url(), false, &[&redis]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f8_killed_subscriptions_lose_nothing_on_open_connections_redis_cluster() {
    let cluster = RedisCluster::start(3);
    let masters: Vec<&RedisServer> = cluster.nodes.iter().collect();
    subscriptions_killed_under_load("F8-cluster", &cluster.urls(), true, &masters).await;
}

/// F9: the subscriber's socket goes silent (a proxy keeps it open and drops every byte; the
/// command connection keeps working): the node says it is not ready within the probe's
/// deadline, and once the route heals every persistent event published meanwhile reaches the
/// open connections from the users' logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f9_a_silent_subscriber_connection_is_noticed_and_loses_nothing() {
    let id = scenario("F9");
    let redis = RedisServer::start();
    let proxy = FaultProxy::start(([127, 0, 0, 1], redis.port).into());
    let _worker = node_with("worker", &redis.url(), false, &[]);
    let edge = node_with("edge", &proxy.url(), false, &[]);
    let traffic = traffic_on(&id, &edge).await;
    proxy.set(Mode::BlackholeSubscribers);
    let noticed = readiness_becomes(&edge, false, &id).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.heal();
    let recovered = readiness_becomes(&edge, true, &id).await;
    let extra = json!({
        "not_ready_after_ms": ms(noticed),
        "ready_after_heal_ms": ms(recovered),
        "gap_filled_events": edge.metric("switchboard_gap_filled_events_total"),
        "subscription_losses": edge.metric("switchboard_broker_subscription_losses_total"),
    });
    assert!(noticed < Duration::from_secs(7), "{id}: the silent subscriber went unnoticed too long: {extra}");
    let fault = "the subscriber's socket blackholed (open, silent) for ~6 s, then healed";
    finish(&id, fault, traffic, Promise::NoLoss, extra).await;
}

/// F10: `CLIENT PAUSE 3000 WRITE`: writes (and publishes) wait, PING does not. Nothing is
/// refused, nothing lost, and readiness does not flap: a slow server is not a lost one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f10_a_write_pause_delays_but_refuses_and_loses_nothing() {
    let id = scenario("F10");
    let redis = RedisServer::start();
    let (_worker, edge) = nodes(&id, &redis.url(), false, &[]);
    let traffic = traffic_on(&id, &edge).await;
    redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]);
    let paused = Instant::now();
    let mut not_ready = 0;
    while paused.elapsed() < Duration::from_secs(4) {
        if ready(&edge) != 200 {
            not_ready += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let extra = json!({"readyz_not_ready_samples": not_ready});
    let findings = finish(&id, "CLIENT PAUSE 3000 WRITE", traffic, Promise::NoLoss, extra).await;
    assert_eq!(not_ready, 0, "{id}: /readyz flapped during a write pause: {findings:#}");
    let history = &findings["history"];
    assert_eq!((history["failed"].as_u64(), history["indeterminate"].as_u64()), (Some(0), Some(0)), "{findings:#}");
}

/// F11: `DEBUG SLEEP 7`, longer than a command may take (5 s): publishes time out (their
/// outcome unknown), the node is not ready while it lasts, and once the server answers again
/// nothing acknowledged is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f11_a_server_that_stalls_past_the_command_timeout_loses_nothing_acknowledged() {
    let id = scenario("F11");
    let redis = RedisServer::start_with_args(&["--enable-debug-command", "local"]);
    let (_worker, edge) = nodes(&id, &redis.url(), false, &[]);
    let traffic = traffic_on(&id, &edge).await;
    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new(Flavor::current().cli())
            .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "7"])
            .output()
            .expect("run DEBUG SLEEP")
    });
    let stalled = Instant::now();
    let not_ready = readiness_becomes(&edge, false, &id).await;
    let _ = sleeper.join();
    let woke = stalled.elapsed();
    let ready_again = readiness_becomes(&edge, true, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let extra =
        json!({"not_ready_after_ms": ms(not_ready), "stall_ms": ms(woke), "ready_after_stall_ms": ms(ready_again)});
    finish(&id, "DEBUG SLEEP 7 (past the 5 s command timeout)", traffic, Promise::NoLoss, extra).await;
}

// --- Redis Cluster: failovers and slots that move with their keys ---------------------------

/// F12: `CLUSTER FAILOVER` (coordinated) on the replica of the master that holds ingest shard
/// 0, then `CLUSTER FAILOVER FORCE` back, under load, with `replicas_ack = 1`: nothing
/// acknowledged is lost, and every subscription follows its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f12_cluster_failovers_lose_nothing_acknowledged() {
    let id = scenario("F12");
    let cluster = RedisCluster::start_with_replicas(3, 1);
    let env = [("SWITCHBOARD_PERSISTENCE__REPLICAS_ACK".to_owned(), "1".to_owned())];
    let (_worker, edge) = nodes(&id, &cluster.urls(), true, &env);
    let traffic = traffic_on(&id, &edge).await;
    let slot = cluster.slot_of("ingest:{s0}");
    let master = cluster.owner_of(slot);
    let replica = cluster.replica_of(master).expect("the master has a replica");
    let started = Instant::now();
    cluster.nodes[replica].cli(&["CLUSTER", "FAILOVER"]);
    cluster.await_owner(slot, replica);
    let coordinated = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    cluster.nodes[master].cli(&["CLUSTER", "FAILOVER", "FORCE"]);
    cluster.await_owner(slot, master);
    let forced = started.elapsed();
    readiness_becomes(&edge, true, &id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let extra = json!({
        "replicas_ack": 1,
        "coordinated_failover_ms": ms(coordinated),
        "forced_failover_ms": ms(forced),
        "gap_filled_events": edge.metric("switchboard_gap_filled_events_total"),
    });
    let fault = "CLUSTER FAILOVER, then CLUSTER FAILOVER FORCE back, on the master of ingest shard 0";
    finish(&id, fault, traffic, Promise::NoLoss, extra).await;
}

/// F13: slots moved to another master with their keys (an ingest shard with its cursor,
/// lease and fence; a user's log; a user's quota keys; a user's topic) under load: every
/// command follows `ASK`/`MOVED`/`TRYAGAIN`, nothing is refused, nothing lost, and the
/// moved topics' subscribers are caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f13_slots_that_move_with_their_keys_under_load_refuse_and_lose_nothing() {
    let id = scenario("F13");
    let cluster = RedisCluster::start(3);
    let (_worker, edge) = nodes(&id, &cluster.urls(), true, &[]);
    let traffic = traffic_on(&id, &edge).await;
    let user = format!("{id}-user-0");
    let names =
        ["ingest:{s0}".to_owned(), format!("events:{user}"), format!("quota:{{{user}}}:total"), format!("u:{user}")];
    let mut moved = Vec::new();
    for name in &names {
        let slot = cluster.slot_of(name);
        let to = (cluster.owner_of(slot) + 1) % 3;
        let keys = cluster.migrate_slot_with_keys(slot, to);
        moved.push(json!({"name": name, "slot": slot, "keys_moved": keys}));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let extra = json!({"moved": moved, "gap_filled_events": edge.metric("switchboard_gap_filled_events_total")});
    let findings =
        finish(&id, "slots migrated with their keys (MIGRATE) under load", traffic, Promise::NoLoss, extra).await;
    let history = &findings["history"];
    assert_eq!((history["failed"].as_u64(), history["indeterminate"].as_u64()), (Some(0), Some(0)), "{findings:#}");
    assert!(moved.iter().any(|m| m["keys_moved"].as_u64() > Some(0)), "{id}: no key moved: {findings:#}");
}

// --- Fencing across a failover --------------------------------------------------------------

/// F14: a failover loses the increment of a shard's fencing token, and the next worker is
/// handed the same token again: the first worker still cannot commit, because the commit
/// checks who holds the lease, not only the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault matrix: scripts/test.sh runs it"]
async fn f14_a_token_handed_out_twice_lets_only_its_holder_commit() {
    use std::sync::Arc;
    use switchboard_broker::redis::{RedisBroker, RedisSettings, SentinelSettings};
    use switchboard_broker::{Broker, Fenced, Leases, Log};
    let id = scenario("F14");
    let mut group = SentinelGroup::start(1);
    let settings = RedisSettings::sentinel(SentinelSettings {
        master: SENTINEL_MASTER.into(),
        sentinels: group.sentinel_addrs().split(',').map(str::to_owned).collect(),
        username: None,
        password: None,
        db: 0,
    });
    let a =
        RedisBroker::connect(&settings, Arc::new(switchboard_testkit::NoDeliveries)).await.expect("worker A's broker");
    let b =
        RedisBroker::connect(&settings, Arc::new(switchboard_testkit::NoDeliveries)).await.expect("worker B's broker");
    let (lease, fence, cursor, log) =
        ("worker-lease:{f14}", "worker-fence:{f14}", "ingest-cursor:{f14}", "ingest:{f14}");
    let (ttl, day) = (Duration::from_secs(60), Duration::from_secs(86_400));
    // A first owner, replicated: the fence stands at 1 on both servers.
    assert_eq!(b.acquire_fenced(lease, fence, "earlier", Duration::from_millis(1)).await.expect("acquire"), Some(1));
    let position = a.append(log, bytes::Bytes::from_static(b"e"), day).await.expect("append");
    let old = group.master().expect("a master");
    let deadline = Instant::now() + READINESS_BOUND;
    while group.servers[1 - old].cli(&["GET", fence]).trim() != "1" {
        assert!(Instant::now() < deadline, "{id}: the replica never got the fence");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The replica lags; A takes the lease (token 2) on the master alone; the master dies and
    // the replica comes back without it.
    group.lag(1 - old);
    let token = a.acquire_fenced(lease, fence, "A", ttl).await.expect("acquire").expect("free");
    group.servers[old].kill();
    group.crash_lagging(1 - old);
    group.await_new_master(old);
    let deadline = Instant::now() + READINESS_BOUND;
    let reissued = loop {
        let got = b.acquire_fenced(lease, fence, "B", ttl).await;
        if let Ok(Some(t)) = got {
            break t;
        }
        assert!(Instant::now() < deadline, "{id}: B never took the lease on the new master: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (broker_a, broker_b) = (&a, &b);
    let commit = |holder: &'static str, token: u64| {
        let fenced = Fenced { lease, fence, holder, token };
        let broker = if holder == "A" { broker_a } else { broker_b };
        async move { broker.commit_fenced(&fenced, cursor, log, position).await }
    };
    let deadline = Instant::now() + READINESS_BOUND;
    let a_commits = loop {
        match commit("A", token).await {
            Ok(done) => break done,
            Err(_) => assert!(Instant::now() < deadline, "{id}: A's broker never reached the new master"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let b_commits = commit("B", reissued).await.expect("B commits");
    let findings = json!({
        "id": id,
        "server": Flavor::current().name(),
        "fault": "the replica stopped, worker A took the lease, the master killed, the replica back from its file, worker B took the lease on it",
        "token_of_a": token,
        "token_of_b": reissued,
        "token_handed_out_twice": token == reissued,
        "a_committed": a_commits,
        "b_committed": b_commits,
        "failovers_followed": a.health().failovers,
    });
    report(&id, findings.clone());
    assert_eq!(token, reissued, "{id}: the failover did not lose the increment: {findings:#}");
    assert!(!a_commits && b_commits, "{id}: {findings:#}");
}
