//! `switchboard`: the one binary. `serve` runs a node; `token` mints a development JWT;
//! `check-config` validates a config file and prints the effective endpoints.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use switchboard_edge::auth::jwt::mint_hs256;
use switchboard_edge::config::{Config, DEV_ADMIN_KEY};
use switchboard_edge::server::Role;
use switchboard_edge::Node;

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
    /// Validate a config file and print the effective endpoints.
    CheckConfig {
        /// The file to check.
        file: String,
    },
}

fn load(config: Option<&str>, listen: Option<SocketAddr>) -> Result<Config> {
    let mut cfg = Config::load(config, std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(listen) = listen {
        cfg.listen = listen;
        let problems = cfg.problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
    }
    Ok(cfg)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => serve(load(config.as_deref(), listen)?, Role::All),
        Command::Edge { config, listen } => serve(clustered(load(config.as_deref(), listen)?, "edge")?, Role::Edge),
        Command::Worker { config, listen } => {
            serve(clustered(load(config.as_deref(), listen)?, "worker")?, Role::Worker)
        }
        Command::Token { sub, ttl, claims, config } => {
            let cfg = load(config.as_deref(), None)?;
            if cfg.jwt.algorithm != "HS256" {
                bail!("`token` mints HS256 tokens, but the config uses {}", cfg.jwt.algorithm);
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
        Command::CheckConfig { file } => {
            let cfg = Config::load(Some(&file), std::env::vars()).map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{file}: OK");
            println!("listen {}; broker: {}", cfg.listen, if cfg.redis_url.is_empty() { "embedded" } else { "redis" });
            for e in &cfg.endpoints {
                println!(
                    "  {:<20} {:<8} auth={:?} types=[{}]",
                    e.path,
                    e.dialect.name(),
                    e.auth,
                    e.event_types.join(", ")
                );
            }
            Ok(())
        }
    }
}

/// Cluster roles share state through Redis only.
fn clustered(cfg: Config, role: &str) -> Result<Config> {
    if cfg.redis_url.is_empty() {
        bail!("`{role}` needs Redis: set SWITCHBOARD_REDIS_URL (or redis_url in the config); `serve` runs without it");
    }
    Ok(cfg)
}

fn serve(cfg: Config, role: Role) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cfg.log_level))
        .context("log_level")?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let node = connect(cfg.clone()).await?;
        print_banner(&cfg, addr, role);
        switchboard_edge::server::serve_role(node, role, listener, shutdown_signal()).await?;
        Ok(())
    })
}

/// Builds the node, waiting for Redis with capped exponential backoff if it is not up yet
/// (edges may start before Redis in a compose or Kubernetes rollout).
async fn connect(cfg: Config) -> Result<std::sync::Arc<Node>> {
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match Node::connect(cfg.clone()).await {
            Ok(node) => return Ok(node),
            Err(switchboard_edge::node::NodeError::Broker(e)) => {
                tracing::warn!(error = %e, retry_in = ?delay, "Redis unreachable; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn print_banner(cfg: &Config, addr: SocketAddr, role: Role) {
    if cfg.uses_dev_credentials() {
        tracing::warn!(
            "using development credentials (set SWITCHBOARD_JWT_SECRET and SWITCHBOARD_ADMIN_KEY for real use)"
        );
    }
    let broker = match (cfg.redis_url.is_empty(), cfg.redis_cluster) {
        (true, _) => "embedded broker",
        (false, false) => "Redis",
        (false, true) => "Redis Cluster",
    };
    if role == Role::Worker {
        println!("switchboard worker listening on http://{addr} ({broker}): /metrics /healthz /readyz");
        println!();
        return;
    }
    println!("switchboard listening on http://{addr} ({broker})");
    for e in &cfg.endpoints {
        let cred = match e.auth {
            switchboard_edge::config::AuthMethod::Jwt => "?token=<JWT>",
            switchboard_edge::config::AuthMethod::ApiKey => "?api_key=<key>",
        };
        println!("  ws://{addr}{}{cred:<14}  {} dialect", e.path, e.dialect.name());
    }
    println!("  playground:  http://{addr}/playground");
    println!("  metrics:     http://{addr}/metrics");
    println!("get a token:   switchboard token --sub alice");
    let admin = if cfg.admin_key.is_empty() { DEV_ADMIN_KEY } else { "<your SWITCHBOARD_ADMIN_KEY>" };
    println!(
        "publish:       curl -H 'Authorization: Bearer {admin}' -d '{{\"user\":\"alice\",\"type\":\"notification\",\"payload\":{{\"title\":\"Hi\"}}}}' http://{addr}/v1/publish"
    );
    println!();
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
