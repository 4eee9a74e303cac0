//! `switchboard`: the one binary. `serve`, `edge` and `worker` run a node in one of its roles;
//! `token` mints a development JWT; `check-config` validates a config and prints the effective
//! endpoints; `publish` and `inspect` talk to a running node's admin API.

mod remote;

/// jemalloc instead of glibc's malloc: a node's memory is mostly many small long-lived
/// allocations per connection, two of them 128-byte aligned (tokio's task cell and IO
/// registration), and jemalloc keeps them in size classes without a per-allocation header or
/// alignment gaps: ~370 bytes less per idle connection on an edge (BENCHMARKS.md, "jemalloc").
/// Built without the `jemalloc` feature, the binary uses the system allocator, which is what
/// `valgrind --tool=massif` and heaptrack see into.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::future::Future;
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use switchboard_edge::config::{
    AuthMethod, BrokerKind, ClientPublishAudience, Config, JwtAlgorithm, Loaded, LogFormat, DEV_ADMIN_KEY,
};
use switchboard_edge::server::{Role, WorkerProcess};
use switchboard_edge::Node;
use switchboard_protocol::token::mint_hs256;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "A horizontally scaled real-time WebSocket gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: every configured endpoint, the publish/admin API and the playground; on
    /// the embedded in-process broker, or on Redis when `redis_url` is set.
    Serve {
        /// Config file (default: the built-in config with all example endpoints).
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<String>,
        /// Listen address (overrides the config and SWITCHBOARD_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run a persistence worker of a cluster (Redis required): stores persistent events for
    /// replay and publishes them; serves /metrics, /healthz and /readyz.
    Worker {
        /// Config file (default: the built-in config).
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<String>,
        /// Listen address (overrides the config and SWITCHBOARD_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run an edge node of a cluster: like `serve` without the worker; Redis is required
    /// (SWITCHBOARD_REDIS_URL).
    Edge {
        /// Config file (default: the built-in config with all example endpoints).
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<String>,
        /// Listen address (overrides the config and SWITCHBOARD_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print a JWT signed with the configured HS256 secret, for trying things out.
    Token {
        /// The user id (`sub` claim).
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Extra claim, KEY=VALUE (VALUE parsed as JSON when it is valid JSON). Repeatable.
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
        /// Config file whose JWT secret to use.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<String>,
    },
    /// Validate a config (the built-in default when no file is given), with the environment
    /// overrides applied, and print the effective endpoints.
    CheckConfig {
        /// The file to check.
        file: Option<String>,
    },
    /// Publish an event through a running node: a JSON event (`{"user":"alice","type":...,
    /// "payload":{...}}`) or a batch (`{"events":[...]}`); `-` reads it from stdin.
    Publish {
        /// The event, or `-`.
        event: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Look inside a running cluster: connections, API keys, channel members.
    Inspect {
        #[command(subcommand)]
        what: remote::Inspect,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// How to reach a running node.
#[derive(clap::Args)]
struct RemoteArgs {
    /// The node's base URL (default: the config's `listen` address).
    #[arg(long, env = "SWITCHBOARD_URL", global = true)]
    url: Option<String>,
    /// Config file whose `listen` and admin key to use.
    #[arg(long, env = "SWITCHBOARD_CONFIG", global = true)]
    config: Option<String>,
}

impl RemoteArgs {
    /// The node and admin key: `--url` or the config's listen address; the config's admin key
    /// (SWITCHBOARD_ADMIN_KEY) or the development one.
    fn remote(&self) -> Result<remote::Remote> {
        let cfg = load(self.config.as_deref(), None)?.config;
        let tls = !cfg.tls_cert.is_empty();
        let url =
            self.url.clone().unwrap_or_else(|| format!("{}://{}", if tls { "https" } else { "http" }, cfg.listen));
        let admin_key = if cfg.admin_key.is_empty() { DEV_ADMIN_KEY.to_owned() } else { cfg.admin_key };
        let trusted_pem = match tls {
            true => Some(std::fs::read(&cfg.tls_cert).with_context(|| format!("reading {}", cfg.tls_cert))?),
            false => None,
        };
        Ok(remote::Remote { url, admin_key, trusted_pem })
    }
}

/// Runs a client call to completion.
fn run_client(call: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?.block_on(call)
}

/// The role a process runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Process {
    Node(Role),
    Worker,
}

fn load(config: Option<&str>, listen: Option<SocketAddr>) -> Result<Loaded> {
    let mut loaded = Config::load(config, std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(listen) = listen {
        loaded.config.listen = listen;
        let problems = loaded.config.problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
    }
    Ok(loaded)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => serve(load(config.as_deref(), listen)?, Process::Node(Role::All)),
        Command::Edge { config, listen } => {
            serve(clustered(load(config.as_deref(), listen)?, "edge")?, Process::Node(Role::Edge))
        }
        Command::Worker { config, listen } => {
            serve(clustered(load(config.as_deref(), listen)?, "worker")?, Process::Worker)
        }
        Command::Token { sub, ttl, claims, config } => {
            let cfg = load(config.as_deref(), None)?.config;
            if cfg.jwt.algorithm != JwtAlgorithm::HS256 {
                bail!("`token` mints HS256 tokens, but the config uses {:?}", cfg.jwt.algorithm);
            }
            let mut extra = serde_json::Map::new();
            for c in claims {
                let (k, v) = c.split_once('=').with_context(|| format!("--claim `{c}` is not KEY=VALUE"))?;
                let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_owned()));
                extra.insert(k.to_owned(), value);
            }
            println!("{}", mint_hs256(cfg.jwt_secret(), &sub, ttl, extra)?);
            Ok(())
        }
        Command::Publish { event, remote } => {
            let body = if event == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the event from stdin")?
            } else {
                event
            };
            let remote = remote.remote()?;
            run_client(async move { remote.publish(&body).await })
        }
        Command::Inspect { what, remote } => {
            let remote = remote.remote()?;
            run_client(async move { remote.inspect(&what).await })
        }
        Command::CheckConfig { file } => {
            let loaded = Config::load(file.as_deref(), std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let cfg = &loaded.config;
            println!("{}: OK", loaded.origin);
            for warning in &loaded.warnings {
                println!("warning: {warning}");
            }
            let broker = match cfg.broker_kind() {
                BrokerKind::Embedded => "embedded",
                BrokerKind::RedisSentinel => "redis (sentinel)",
                BrokerKind::Redis | BrokerKind::RedisCluster => "redis",
            };
            println!("listen {}; broker: {broker}", cfg.listen);
            if cfg.broker_kind() == BrokerKind::Embedded {
                println!("state in this process only (embedded broker): a restart loses keys, channels and logs");
            }
            for e in &cfg.endpoints {
                let types = if e.event_types.is_empty() { "any".to_owned() } else { e.event_types.join(", ") };
                println!(
                    "  {:<20} {:<6} auth={:<8} types=[{types}]",
                    e.path,
                    e.dialect.name(),
                    auth_name(e.auth.method)
                );
                let channels = channel_summary(e);
                if !channels.is_empty() {
                    println!("  {:<20} {channels}", "");
                }
            }
            Ok(())
        }
    }
}

fn auth_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Jwt => "jwt",
        AuthMethod::ApiKey => "api_key",
        AuthMethod::Ticket => "ticket",
        AuthMethod::JwtOrApiKey => "jwt_or_api_key",
    }
}

/// Logs to stderr: the filter from `SWITCHBOARD_LOG` (already in `log_level`), else `RUST_LOG`,
/// else the config's `log_level`; text, coloured only on a terminal, or JSON lines
/// (`log_format = "json"`, `SWITCHBOARD_LOG_FORMAT=json`).
fn init_logging(cfg: &Config) -> Result<()> {
    let level = match (std::env::var("SWITCHBOARD_LOG"), std::env::var("RUST_LOG")) {
        (Ok(_), _) | (_, Err(_)) => cfg.log_level.clone(),
        (Err(_), Ok(rust_log)) => rust_log,
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&level).with_context(|| format!("log level `{level}`"))?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => logs.json().with_current_span(false).with_span_list(false).init(),
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    Ok(())
}

/// Starts exporting traces when an OTLP endpoint is configured (`otlp_endpoint`, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT`); service `switchboard`, `switchboard-edge` or
/// `switchboard-worker` by role.
fn init_tracing(cfg: &Config, process: Process) -> Result<Option<switchboard_telemetry::Telemetry>> {
    let endpoint = match cfg.otlp_endpoint.as_str() {
        "" => std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
        configured => configured.to_owned(),
    };
    let service_name = match process {
        Process::Node(Role::All) => "switchboard",
        Process::Node(Role::Edge) => "switchboard-edge",
        Process::Worker => "switchboard-worker",
    };
    let settings = switchboard_telemetry::Settings {
        endpoint,
        sample_ratio: cfg.trace_sample_ratio,
        service_name: service_name.to_owned(),
    };
    let telemetry = switchboard_telemetry::init(&settings)?;
    if telemetry.is_some() {
        tracing::info!(endpoint = settings.endpoint, ratio = settings.sample_ratio, "exporting traces over OTLP/HTTP");
    }
    Ok(telemetry)
}

/// Cluster roles share state through Redis only.
fn clustered(loaded: Loaded, role: &str) -> Result<Loaded> {
    if loaded.config.broker_kind() == BrokerKind::Embedded {
        bail!(
            "`{role}` needs Redis: set SWITCHBOARD_REDIS_URL (or redis_url in the config), or the sentinels \
             (SWITCHBOARD_REDIS_SENTINELS, SWITCHBOARD_REDIS_SENTINEL_MASTER); `serve` runs without it"
        );
    }
    Ok(loaded)
}

fn serve(loaded: Loaded, process: Process) -> Result<()> {
    let cfg = loaded.config;
    init_logging(&cfg)?;
    // Flushes buffered spans when `serve` returns (outside the runtime: the exporter blocks).
    let _traces = init_tracing(&cfg, process)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = switchboard_edge::server::bind(cfg.listen, cfg.listen_backlog)
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        match process {
            Process::Node(role) => {
                let node = retrying(
                    || Node::connect(cfg.clone()),
                    |e| match e {
                        switchboard_edge::node::NodeError::Broker(e) if e.is_transient() => Some(e.to_string()),
                        _ => None,
                    },
                )
                .await?;
                print_banner(&cfg, addr, role);
                switchboard_edge::server::serve_role(node, role, listener, shutdown_signal()).await?;
            }
            Process::Worker => {
                let worker =
                    retrying(|| WorkerProcess::connect(cfg.clone()), |e| e.is_transient().then(|| e.to_string()))
                        .await?;
                print_worker_banner(&cfg, addr);
                worker.serve(listener, shutdown_signal()).await?;
            }
        }
        Ok(())
    })
}

/// Runs `attempt` until it succeeds, waiting with capped exponential backoff while `transient`
/// says the failure is Redis being unreachable (nodes may start before Redis in a compose or
/// Kubernetes rollout); any other failure ends it.
async fn retrying<T, E, F>(mut attempt: impl FnMut() -> F, transient: impl Fn(&E) -> Option<String>) -> Result<T>
where
    F: Future<Output = std::result::Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => match transient(&e) {
                Some(why) => {
                    tracing::warn!(error = why, retry_in = ?delay, "Redis unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(5));
                }
                None => return Err(e.into()),
            },
        }
    }
}

/// What an endpoint delivers on channels, in a few words: its broadcast channel and the
/// channels clients may subscribe to (and which need membership).
fn channel_summary(e: &switchboard_edge::config::EndpointConfig) -> String {
    let mut parts = Vec::new();
    if !e.broadcast_channel.is_empty() {
        parts.push(format!("broadcast `{}`", e.broadcast_channel));
    }
    if !e.channels.allowed.is_empty() {
        parts.push(format!("channels {}", e.channels.allowed.join(" ")));
    }
    if !e.channels.member_only.is_empty() {
        let to_members = e.publish.to == ClientPublishAudience::Members && !e.publish.types.is_empty();
        let how = if to_members { "to members" } else { "members only" };
        parts.push(format!("{how}: {}", e.channels.member_only.join(" ")));
    }
    parts.join("; ")
}

fn broker_name(cfg: &Config) -> &'static str {
    cfg.broker_kind().describe()
}

/// Prints a banner line; a closed stdout (a supervisor that does not read it) is no reason to
/// stop serving, so write errors are ignored (`println!` would panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn print_worker_banner(cfg: &Config, addr: SocketAddr) {
    let http = if cfg.tls_cert.is_empty() { "http" } else { "https" };
    say!("switchboard worker listening on {http}://{addr} ({}): /metrics /healthz /readyz", broker_name(cfg));
    say!("");
}

fn print_banner(cfg: &Config, addr: SocketAddr, role: Role) {
    if cfg.uses_dev_credentials() {
        tracing::warn!(
            "using development credentials (set SWITCHBOARD_JWT_SECRET and SWITCHBOARD_ADMIN_KEY for real use)"
        );
    }
    let what = if role == Role::All { "switchboard" } else { "switchboard edge" };
    let (http, ws) = if cfg.tls_cert.is_empty() { ("http", "ws") } else { ("https", "wss") };
    say!("{what} listening on {http}://{addr} ({})", broker_name(cfg));
    let urls: Vec<String> = cfg
        .endpoints
        .iter()
        .map(|e| {
            let cred = match e.auth.method {
                AuthMethod::Jwt => "?token=<JWT>",
                AuthMethod::ApiKey => "?api_key=<key>",
                AuthMethod::Ticket => "?ticket=<ticket>",
                AuthMethod::JwtOrApiKey => "?token=<JWT or key>",
            };
            format!("{ws}://{addr}{}{cred}", e.path)
        })
        .collect();
    let width = urls.iter().map(String::len).max().unwrap_or(0);
    for (e, url) in cfg.endpoints.iter().zip(&urls) {
        say!("  {url:<width$}  {:<6} {}", e.dialect.name(), channel_summary(e));
    }
    if cfg.broker_kind() == BrokerKind::Embedded {
        say!("state:         in this process only: a restart loses API keys, channels, memberships and replay");
        say!("               logs; set SWITCHBOARD_REDIS_URL for anything that must survive one");
    }
    say!("  playground:  {http}://{addr}/playground");
    say!("  metrics:     {http}://{addr}/metrics");
    if !cfg.tls_cert.is_empty() {
        say!("  TLS:         {} (reloaded when it changes)", cfg.tls_cert);
    }
    say!("get a token:   switchboard token --sub alice");
    if cfg.endpoints.iter().any(|e| e.auth.method == AuthMethod::Ticket) {
        say!("get a ticket:  curl -X POST -H \"Authorization: Bearer $(switchboard token --sub 12345)\" {http}://{addr}/v1/auth/ws-ticket");
    }
    let admin = if cfg.admin_key.is_empty() { DEV_ADMIN_KEY } else { "<your SWITCHBOARD_ADMIN_KEY>" };
    say!(
        "publish:       curl -H 'Authorization: Bearer {admin}' -d '{{\"user\":\"alice\",\"type\":\"notification\",\"payload\":{{\"title\":\"Hi\"}}}}' {http}://{addr}/v1/publish"
    );
    say!("");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
