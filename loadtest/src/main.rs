//! `sb-load`: load generator for Switchboard.
//!
//! Scenarios (each bounded in count and time, loopback targets only):
//! - `connect`: a connection storm at a fixed rate; connect latency and failures by cause.
//! - `idle`: N subscribed connections held open; reports the server's RSS per connection.
//! - `fanout`: N subscribers on one channel, a publisher at R events/s through the publish
//!   API; reports deliveries/s, drops, publish→deliver latency and deliveries per second of
//!   server CPU.
//! - `many`: N connections each on its own user stream, persisted notifications to random
//!   users through the batch API; publish→deliver latency through the persistence worker.
//! - `replay`: N clients miss M events each and reconnect at once; time to all replayed.
//! - `failover`: N reconnecting clients on the first of two servers, which is killed with
//!   SIGKILL while events are published; time until all are back on the second and caught
//!   up, failed connect attempts by cause, events lost.
//! - `typing`: N members of one ocvr channel, T of them typing; `typing_start` delivery and
//!   latency.
//! - `bare-server`: not a scenario but the baseline for `fanout`: a one-thread server that
//!   writes pre-encoded frames straight to its sockets.
//!
//! The server's memory and CPU are read from `/proc/<pid>` (`--server-pid`); `--plot FILE`
//! draws the latencies of a run (SVG or PNG).

mod bare;
mod client;
mod crowd;
mod dialect;
mod failover;
mod fanout;
mod idle;
mod many;
mod pace;
mod plot;
mod procstat;
mod replay;
mod split;
mod storm;
mod tls;
mod typing;

use std::net::SocketAddr;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sb-load", about = "Load generator for Switchboard")]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Where and how to connect.
#[derive(Args, Clone)]
pub struct Target {
    /// Server address (loopback only); several, comma-separated, spread the clients over
    /// several nodes round-robin.
    #[arg(long, default_value = "127.0.0.1:8080", value_delimiter = ',', global = true)]
    pub server: Vec<SocketAddr>,
    /// HS256 secret used to mint client tokens.
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", default_value = switchboard_protocol::token::DEV_JWT_SECRET, global = true)]
    pub secret: String,
    /// Admin key for the publish API.
    #[arg(long, env = "SWITCHBOARD_ADMIN_KEY", default_value = switchboard_protocol::token::DEV_ADMIN_KEY, global = true)]
    pub admin_key: String,
    /// PID of the server process, for memory and CPU readings.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Number of 127.0.0.x source addresses to spread connections over (beyond one
    /// address's ephemeral ports).
    #[arg(long, default_value_t = 4, global = true)]
    pub sources: u8,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Speak TLS (`wss://`, `https://`) to the server, trusting the certificate(s) in this
    /// PEM file (a node with `tls_cert`).
    #[arg(long, global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With `--tls-ca`: a full handshake for every connection (no session resumption).
    #[arg(long, global = true)]
    pub tls_no_resume: bool,
    /// Draw the publish→deliver latency (per second p50/p99/max, and a histogram) into this
    /// file: `.svg` or `.png` (fanout and many).
    #[arg(long, global = true)]
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N connections at a fixed rate; connect latency and failures.
    Connect(storm::StormArgs),
    /// Hold N subscribed idle connections and report server memory per connection.
    Idle(idle::IdleArgs),
    /// N subscribers on one channel; publish at a fixed rate; measure delivery.
    Fanout(fanout::FanoutArgs),
    /// N connections on their own user streams; persisted events to random users.
    Many(many::ManyArgs),
    /// N clients miss M events each, then reconnect at once.
    Replay(replay::ReplayArgs),
    /// Kill -9 the first of two servers under N reconnecting clients: time until all are
    /// back and caught up, failed attempts, events lost.
    Failover(failover::FailoverArgs),
    /// Typing indicators in one ocvr channel of N members: delivery and latency.
    Typing(typing::TypingArgs),
    /// The fan-out baseline: a bare one-thread server writing pre-encoded frames (run
    /// `fanout` against it as against the gateway).
    BareServer(bare::BareArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.target.server.is_empty() || cli.target.server.iter().any(|s| !s.ip().is_loopback()) {
        bail!("sb-load only targets loopback addresses (127.0.0.0/8)");
    }
    tls::init(cli.target.tls_ca.as_deref(), cli.target.tls_no_resume)?;
    let limit = client::raise_fd_limit();
    if let Scenario::BareServer(args) = cli.scenario {
        let report = bare::run(args)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        match cli.scenario {
            Scenario::Connect(args) => storm::run(&cli.target, args, limit).await,
            Scenario::Idle(args) => idle::run(&cli.target, args, limit).await,
            Scenario::Fanout(args) => fanout::run(&cli.target, args, limit).await,
            Scenario::Many(args) => many::run(&cli.target, args, limit).await,
            Scenario::Replay(args) => replay::run(&cli.target, args, limit).await,
            Scenario::Failover(args) => failover::run(&cli.target, args, limit).await,
            Scenario::Typing(args) => typing::run(&cli.target, args, limit).await,
            Scenario::BareServer(_) => bail!("bare-server runs on its own one-thread runtime"),
        }
    })?;
    if report.is_null() {
        // A child of a split run: it spoke to its parent already.
        return Ok(());
    }
    if cli.target.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:>28}: {v}");
        }
    }
    Ok(())
}
