//! `--processes N`: a crowd split over N child processes of `sb-load`, each under its own
//! descriptor limit (RLIMIT_NOFILE is per process: 20,000 on the reference machine).
//!
//! A child runs the same scenario with `--child --first F` and its share of the clients. It
//! speaks to the parent over its stdout, one line at a time:
//! 1. `{"connected":..,"failed":..,"first_error":..,"connect_seconds":..,"started_unix_ms":..}`
//!    once its clients are connected and subscribed;
//! 2. `delivered N` (a running total) while it listens;
//! 3. after the parent closes the child's stdin: `{"samples":[[arrival_ms,latency_us],...]}`,
//!    then it disconnects and exits.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::plot::Sample;
use crate::Target;

/// The split arguments every crowd scenario takes.
#[derive(Args, Clone, Debug)]
pub struct SplitArgs {
    /// Split the clients over this many child processes (at most 64), each under its own
    /// descriptor limit.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Number of this process's first client (a child's share of a split run).
    #[arg(long, default_value_t = 0, hide = true)]
    pub first: usize,
    /// Run as a child of a split run (see the module docs).
    #[arg(long, hide = true)]
    pub child: bool,
}

/// Set on children, whose progress bars would garble the parent's.
pub const CHILD_ENV: &str = "SB_LOAD_CHILD";

/// A child's first line: its clients are connected.
#[derive(Serialize, Deserialize)]
pub struct Ready {
    /// Clients connected and subscribed.
    pub connected: usize,
    /// Clients that failed to.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// How long connecting took.
    pub connect_seconds: f64,
    /// When the child's clients started (its samples' arrival times count from here).
    pub started_unix_ms: u64,
}

/// A child's last line.
#[derive(Serialize, Deserialize)]
pub struct Samples {
    /// Every delivery its clients saw.
    pub samples: Vec<Sample>,
}

/// Says `ready` on stdout, reports deliveries until stdin closes, then hands the samples
/// `collect` gathers to the parent.
pub async fn serve_as_child<F>(ready: Ready, delivered: Arc<AtomicU64>, collect: F) -> Result<()>
where
    F: std::future::Future<Output = Result<Vec<Sample>>>,
{
    let say = |line: String| -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        Ok(out.flush()?)
    };
    say(serde_json::to_string(&ready)?)?;
    let mut closed = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()));
    let mut reported = 0;
    loop {
        tokio::select! {
            _ = &mut closed => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let now = delivered.load(Ordering::Relaxed);
        if now != reported {
            reported = now;
            say(format!("delivered {now}"))?;
        }
    }
    let samples = collect.await?;
    say(serde_json::to_string(&Samples { samples })?)
}

/// One child of a split run, connected.
struct ChildProc {
    child: Child,
    /// Closing it tells the child to stop.
    stdin: Option<ChildStdin>,
    /// Its samples, once it sends them.
    end: mpsc::Receiver<Result<Samples>>,
    /// When its clients started (its samples count from here).
    started_unix_ms: u64,
}

/// The children of a split run, connected.
pub struct Children {
    procs: Vec<ChildProc>,
}

/// What all children reported when they got ready, added up.
pub struct Gathered {
    /// The children.
    pub children: Children,
    /// Their clients, added up.
    pub ready: Ready,
}

/// Starts `processes` children for `n` clients; `scenario(count)` gives the scenario
/// arguments of a child holding `count` of them (it is told its first client's number).
/// Returns once every child has its clients connected; their deliveries are added to
/// `delivered` as they report them.
pub async fn spawn(
    target: &Target,
    n: usize,
    processes: usize,
    scenario: impl Fn(usize) -> Vec<String>,
    delivered: Arc<AtomicU64>,
) -> Result<Gathered> {
    let exe = std::env::current_exe().context("locating sb-load")?;
    let servers: Vec<String> = target.server.iter().map(|s| s.to_string()).collect();
    let mut children = Vec::with_capacity(processes);
    let mut readies = Vec::with_capacity(processes);
    for k in 0..processes {
        let (first, end) = (n * k / processes, n * (k + 1) / processes);
        let mut child = Command::new(&exe)
            .args(["--server", &servers.join(","), "--sources", &target.sources.to_string()])
            .args(target.tls_ca.iter().flat_map(|ca| [std::ffi::OsStr::new("--tls-ca"), ca.as_os_str()]))
            .args(target.tls_no_resume.then_some("--tls-no-resume"))
            .env("SWITCHBOARD_JWT_SECRET", &target.secret)
            .env("SWITCHBOARD_ADMIN_KEY", &target.admin_key)
            .env(CHILD_ENV, "1")
            .args(scenario(end - first))
            .args(["--child", "--first", &first.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a child sb-load")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (end_tx, end_rx) = mpsc::channel();
        let delivered = delivered.clone();
        std::thread::spawn(move || listen(BufReader::new(stdout), ready_tx, end_tx, &delivered));
        readies.push(ready_rx);
        let stdin = child.stdin.take();
        children.push(ChildProc { child, stdin, end: end_rx, started_unix_ms: 0 });
    }
    let readies = tokio::task::spawn_blocking(move || {
        readies.into_iter().map(|r| r.recv().unwrap_or_else(|_| Err(anyhow!("the child ended")))).collect::<Vec<_>>()
    })
    .await?;
    let mut total =
        Ready { connected: 0, failed: 0, first_error: None, connect_seconds: 0.0, started_unix_ms: u64::MAX };
    for (proc, ready) in children.iter_mut().zip(readies) {
        let ready = ready.context("a child sb-load did not get ready (see its errors above)")?;
        total.connected += ready.connected;
        total.failed += ready.failed;
        total.first_error = total.first_error.or(ready.first_error);
        total.connect_seconds = total.connect_seconds.max(ready.connect_seconds);
        total.started_unix_ms = total.started_unix_ms.min(ready.started_unix_ms);
        proc.started_unix_ms = ready.started_unix_ms;
    }
    Ok(Gathered { children: Children { procs: children }, ready: total })
}

/// Reads one child's stdout: the ready line, delivery totals, the samples.
fn listen(
    mut out: BufReader<std::process::ChildStdout>,
    ready: mpsc::Sender<Result<Ready>>,
    end: mpsc::Sender<Result<Samples>>,
    delivered: &AtomicU64,
) {
    let mut line = String::new();
    let first = match out.read_line(&mut line) {
        Ok(0) | Err(_) => Err(anyhow!("the child ended before its clients were connected")),
        Ok(_) => serde_json::from_str::<Ready>(&line).with_context(|| format!("a child said {line:?}")),
    };
    let ok = first.is_ok();
    let _ = ready.send(first);
    if !ok {
        return;
    }
    let mut reported = 0;
    loop {
        line.clear();
        match out.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = end.send(Err(anyhow!("the child ended without its samples")));
                return;
            }
            Ok(_) => {}
        }
        if let Some(n) = line.trim().strip_prefix("delivered ").and_then(|n| n.parse::<u64>().ok()) {
            delivered.fetch_add(n.saturating_sub(reported), Ordering::Relaxed);
            reported = reported.max(n);
        } else {
            let samples = serde_json::from_str::<Samples>(&line).context("a child's samples");
            if let Ok(s) = &samples {
                // The final count, in case the last total was not reported yet.
                let n = s.samples.len() as u64;
                delivered.fetch_add(n.saturating_sub(reported), Ordering::Relaxed);
            }
            let _ = end.send(samples);
            return;
        }
    }
}

impl Children {
    /// Tells every child to stop, and returns all their samples, arrival times counted from
    /// the earliest child's start.
    pub async fn collect(mut self) -> Result<Vec<Sample>> {
        for proc in &mut self.procs {
            drop(proc.stdin.take());
        }
        let earliest = self.procs.iter().map(|p| p.started_unix_ms).min().unwrap_or(0);
        tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for mut proc in self.procs {
                let samples = proc.end.recv().unwrap_or_else(|_| Err(anyhow!("the child ended")));
                let status = proc.child.wait()?;
                let Samples { samples } = samples.with_context(|| format!("a child sb-load (exit {status})"))?;
                let shift = u32::try_from(proc.started_unix_ms.saturating_sub(earliest)).unwrap_or(u32::MAX);
                all.extend(samples.into_iter().map(|(at, latency)| (at.saturating_add(shift), latency)));
            }
            Ok::<_, anyhow::Error>(all)
        })
        .await?
    }
}

/// Fails unless each process's share of `n` clients (plus a margin for the tool's own
/// descriptors) fits under the descriptor limit, naming the limit the run would hit.
pub fn ensure_descriptors(n: usize, processes: usize, what: &str, fd_limit: u64) -> Result<()> {
    if processes == 0 || processes > 64 {
        bail!("--processes must be 1 to 64");
    }
    let share = n.div_ceil(processes);
    if share as u64 + 64 > fd_limit {
        bail!(
            "{share} {what} per process need more descriptors than RLIMIT_NOFILE allows here ({fd_limit}); use fewer, or split them over processes (idle, fanout and many take --processes {})",
            (n as u64).div_ceil(fd_limit.saturating_sub(64).max(1))
        );
    }
    Ok(())
}
