//! A crowd of clients: connected, subscribed (the subscribe messages, then a ping whose pong
//! proves the server processed them: [`Connection::send_confirmed`]), then listening, each
//! recording the publish→deliver latency of every event that carries a publish time. Every
//! scenario is built on it. The clients live in this process or, with `--processes N`, in
//! child processes ([`crate::split`]); the scenario sees the same crowd either way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use switchboard_client::{ClientMessage, Connection, Dialect, Incoming};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinHandle;

use crate::client::{connect, now_micros, Entry};
use crate::dialect::DialectArg;
use crate::plot::{self, Sample};
use crate::split::{self, SplitArgs};
use crate::Target;

/// Where the clients are.
enum Members {
    /// In this process: one task each.
    Local { tasks: Vec<JoinHandle<Vec<Sample>>>, stop: broadcast::Sender<()>, started_unix_ms: u64 },
    /// In child processes.
    Children(split::Children),
}

/// The clients of a run.
pub struct Crowd {
    members: Members,
    /// Events received so far, by all clients.
    pub delivered: Arc<AtomicU64>,
    /// Clients that connected and subscribed.
    pub connected: usize,
    /// Clients that failed to.
    pub failed: usize,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// How long connecting everybody took.
    pub connect_seconds: f64,
}

/// Extracts the `"t":<micros>` publish time from a delivered frame without parsing it all (a
/// text frame, or a binary one whose payload is the JSON: brl).
pub fn publish_micros(frame: &[u8]) -> Option<u64> {
    let start = frame.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits = &frame[start..];
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// What a scenario's crowd is made of: `n` clients, at most `concurrency` handshakes at a
/// time per process; client `i` connects to `plan(i).0` and subscribes with `plan(i).1`.
/// With `--processes` above 1, each child runs `sb-load <scenario> <count_flag> <its share>
/// --concurrency C --dialect D <extra>` and so the same `plan`.
pub struct Recipe<'a, P> {
    /// Clients in all.
    pub n: usize,
    /// Concurrent handshakes per process.
    pub concurrency: usize,
    /// Path and subscriptions of client `i`.
    pub plan: P,
    /// The scenario's name on the command line.
    pub scenario: &'static str,
    /// Its flag for the number of clients (`--connections`, `--subscribers`).
    pub count_flag: &'static str,
    /// The dialect the clients speak.
    pub dialect: DialectArg,
    /// More scenario arguments a child needs.
    pub extra: Vec<String>,
    /// The scenario's `--processes`, `--child`, `--first`.
    pub split: &'a SplitArgs,
}

impl Crowd {
    /// Connects the crowd of `recipe`: here, or split over child processes. In a child of a
    /// split run (`recipe.n` is then its share, numbered from `--first`), serves the parent
    /// instead (see [`split`]) and returns `None`: the scenario has nothing left to do.
    pub async fn assemble<P>(target: &Target, recipe: Recipe<'_, P>) -> Result<Option<Crowd>>
    where
        P: Fn(usize) -> (Entry, Vec<ClientMessage>),
    {
        let Recipe { n, concurrency, plan, scenario, count_flag, dialect, extra, split } = recipe;
        if split.processes > 1 && !split.child {
            let child_args = |count: usize| {
                let mut args: Vec<String> = [scenario, count_flag].map(String::from).to_vec();
                args.extend([count.to_string(), "--concurrency".into(), concurrency.to_string()]);
                args.extend(["--dialect".to_string(), dialect.name().into()]);
                args.extend(extra.iter().cloned());
                args
            };
            let delivered = Arc::new(AtomicU64::new(0));
            let gathered = split::spawn(target, n, split.processes, child_args, delivered.clone()).await?;
            let ready = gathered.ready;
            return Ok(Some(Crowd {
                members: Members::Children(gathered.children),
                delivered,
                connected: ready.connected,
                failed: ready.failed,
                first_error: ready.first_error,
                connect_seconds: ready.connect_seconds,
            }));
        }
        let crowd = Crowd::gather(target, split.first, n, concurrency, dialect.kind(), plan).await;
        if split.child {
            crowd.serve_as_child().await?;
            return Ok(None);
        }
        Ok(Some(crowd))
    }

    /// Connects clients `first..first + n` in this process.
    async fn gather(
        target: &Target,
        first: usize,
        n: usize,
        concurrency: usize,
        dialect: Dialect,
        plan: impl Fn(usize) -> (Entry, Vec<ClientMessage>),
    ) -> Crowd {
        let delivered = Arc::new(AtomicU64::new(0));
        let (stop, _) = broadcast::channel::<()>(1);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n.max(1));
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let bar = if std::env::var_os(split::CHILD_ENV).is_some() {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(n as u64).with_message("connecting")
        };
        let (started, started_unix_ms) = (Instant::now(), now_micros() / 1000);
        let since_start = move || started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        let mut tasks = Vec::with_capacity(n);
        for i in first..first + n {
            let (target, gate, ready, delivered) = (target.clone(), gate.clone(), ready_tx.clone(), delivered.clone());
            let (mut stop, (path, subscriptions)) = (stop.subscribe(), plan(i));
            tasks.push(tokio::spawn(async move {
                let permit = gate.acquire_owned().await;
                let mut conn: Connection = match connect(&target, i, &path).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = ready.send(Err(format!("{e:#}"))).await;
                        return Vec::new();
                    }
                };
                let subscribed = conn.send_confirmed(dialect, &subscriptions).await;
                drop(permit);
                let ok = subscribed.is_ok();
                let _ = ready.send(subscribed.map(drop).map_err(|e| format!("{e:#}"))).await;
                let mut latencies = Vec::new();
                if ok {
                    loop {
                        tokio::select! {
                            _ = stop.recv() => break,
                            m = conn.next() => match m {
                                Incoming::Text(_) | Incoming::Binary(_) => {
                                    let frame = match &m {
                                        Incoming::Text(t) => t.as_bytes(),
                                        Incoming::Binary(b) => &b[..],
                                        _ => &[],
                                    };
                                    if let Some(sent_at) = publish_micros(frame) {
                                        let latency = now_micros().saturating_sub(sent_at).min(u64::from(u32::MAX)) as u32;
                                        latencies.push((since_start(), latency));
                                        delivered.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Incoming::Closed(_) => break,
                                Incoming::Pong(_) => {}
                            }
                        }
                    }
                }
                conn.close().await;
                latencies
            }));
        }
        drop(ready_tx);
        let (mut connected, mut failed, mut first_error) = (0, 0, None);
        for _ in 0..n {
            let Some(r) = ready_rx.recv().await else { break };
            match r {
                Ok(()) => connected += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Crowd {
            members: Members::Local { tasks, stop, started_unix_ms },
            delivered,
            connected,
            failed,
            first_error,
            connect_seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// Waits until `expected` events were received, or `bound` passed.
    pub async fn wait_for(&self, expected: u64, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Disconnects everybody; returns every delivery's arrival (ms since the clients started)
    /// and latency (µs), in arrival order.
    async fn collect(self) -> Result<Vec<Sample>> {
        let mut samples = match self.members {
            Members::Local { tasks, stop, .. } => {
                let _ = stop.send(());
                let mut all = Vec::new();
                for t in tasks {
                    all.extend(t.await.unwrap_or_default());
                }
                all
            }
            Members::Children(children) => children.collect().await?,
        };
        samples.sort_unstable();
        Ok(samples)
    }

    /// In a child of a split run: reports to the parent until it says stop (see [`split`]).
    async fn serve_as_child(self) -> Result<()> {
        let started_unix_ms = match &self.members {
            Members::Local { started_unix_ms, .. } => *started_unix_ms,
            Members::Children(_) => anyhow::bail!("a child does not split further"),
        };
        let ready = split::Ready {
            connected: self.connected,
            failed: self.failed,
            first_error: self.first_error.clone(),
            connect_seconds: self.connect_seconds,
            started_unix_ms,
        };
        let delivered = self.delivered.clone();
        split::serve_as_child(ready, delivered, self.collect()).await
    }

    /// Disconnects everybody and returns the latency percentiles in ms; with `--plot` and a
    /// `title` (scenarios that measure deliveries), also draws the latencies (see [`plot`]).
    pub async fn finish(self, target: &Target, title: Option<&str>) -> Result<Value> {
        let samples = self.collect().await?;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for &(_, l) in &samples {
            let _ = hist.record(u64::from(l).max(1));
        }
        if let (Some(path), Some(title)) = (&target.plot, title) {
            plot::render(path, title, &samples)?;
        }
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        Ok(json!({
            "latency_ms_p50": ms(0.5),
            "latency_ms_p99": ms(0.99),
            "latency_ms_p999": ms(0.999),
            "latency_ms_max": hist.max() as f64 / 1000.0,
        }))
    }
}

/// Merges `extra`'s fields into `report`.
pub fn merge(mut report: Value, extra: Value) -> Value {
    if let (Some(r), Value::Object(e)) = (report.as_object_mut(), extra) {
        r.extend(e);
    }
    report
}
