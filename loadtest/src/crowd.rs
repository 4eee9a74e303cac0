//! A crowd of clients: connected, subscribed (the subscribe messages, then a ping whose pong
//! proves the server processed them: [`Connection::send_confirmed`]), then listening, each recording the publish→deliver
//! latency of every event that carries a publish time. Every scenario is built on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use switchboard_client::{Connection, Incoming};
use tokio::sync::{broadcast, Semaphore};
use tokio::task::JoinHandle;

use crate::client::{connect, now_micros};
use crate::plot::{self, Sample};
use crate::Target;

/// The clients of a run.
pub struct Crowd {
    tasks: Vec<JoinHandle<Vec<Sample>>>,
    stop: broadcast::Sender<()>,
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

/// Extracts the `"t":<micros>` publish time from a delivered frame without parsing it all.
pub fn publish_micros(text: &str) -> Option<u64> {
    let start = text.find("\"t\":")? + 4;
    let digits: &str = &text[start..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

impl Crowd {
    /// Connects `n` clients, client `i` to the path `plan(i).0` sending the subscriptions
    /// `plan(i).1`, at most `concurrency` handshakes at a time.
    pub async fn gather(
        target: &Target,
        n: usize,
        concurrency: usize,
        plan: impl Fn(usize) -> (String, Vec<Value>),
    ) -> Crowd {
        let delivered = Arc::new(AtomicU64::new(0));
        let (stop, _) = broadcast::channel::<()>(1);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(n.max(1));
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let bar = ProgressBar::new(n as u64).with_message("connecting");
        let started = Instant::now();
        let since_start = move || started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32;
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
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
                let subscribed = conn.send_confirmed(&subscriptions).await;
                drop(permit);
                let ok = subscribed.is_ok();
                let _ = ready.send(subscribed.map(drop).map_err(|e| format!("{e:#}"))).await;
                let mut latencies = Vec::new();
                if ok {
                    loop {
                        tokio::select! {
                            _ = stop.recv() => break,
                            m = conn.next() => match m {
                                Incoming::Text(t) => {
                                    if let Some(sent_at) = publish_micros(&t) {
                                        let latency = now_micros().saturating_sub(sent_at).min(u64::from(u32::MAX)) as u32;
                                        latencies.push((since_start(), latency));
                                        delivered.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Incoming::Closed(_) => break,
                                Incoming::Binary(_) | Incoming::Pong(_) => {}
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
            tasks,
            stop,
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

    /// Disconnects everybody and returns the latency percentiles in ms; with `--plot` and a
    /// `title` (scenarios that measure deliveries), also draws the latencies (see [`plot`]).
    pub async fn finish(self, target: &Target, title: Option<&str>) -> Result<Value> {
        let _ = self.stop.send(());
        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        let mut samples = Vec::new();
        for t in self.tasks {
            let received = t.await.unwrap_or_default();
            for &(_, l) in &received {
                let _ = hist.record(u64::from(l).max(1));
            }
            if target.plot.is_some() && title.is_some() {
                samples.extend(received);
            }
        }
        if let (Some(path), Some(title)) = (&target.plot, title) {
            samples.sort_unstable();
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
