//! Live traffic for fault tests: one sequential publisher per user (the next publish only
//! after the previous one was answered, so a user's events are numbered in the order they were
//! stored) and one open `/ws/notifications` connection per user reading what it gets, both
//! recorded in a [`History`] for the check.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::history::{History, Outcome};
use crate::{connect_ws, token_with, ADMIN, WAIT};

/// How long one publish may take before its outcome counts as unknown.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishers and clients running against a cluster.
pub struct Traffic {
    /// What they observed.
    pub history: Arc<History>,
    stop: Arc<AtomicBool>,
    publishers: Vec<JoinHandle<()>>,
    readers: Vec<JoinHandle<()>>,
    /// Connections that ended while the traffic ran (each one a broken promise of "open").
    closed: Arc<AtomicU64>,
    /// The first answers that were not 200 (status and body), for the report.
    refusals: Arc<parking_lot::Mutex<Vec<String>>>,
}

/// Refusals kept for the report.
const REFUSALS_KEPT: usize = 20;

impl Traffic {
    /// Connects one client per user (`users` of them, named `user-<n>` after `prefix`) to
    /// `/ws/notifications` on `edges` (round robin), waits for their replay to end, then
    /// starts one publisher per user posting to `publish_to` (round robin), each at most
    /// `per_user_rate` events per second.
    pub async fn start(
        prefix: &str,
        users: usize,
        edges: &[String],
        publish_to: &[String],
        per_user_rate: f64,
    ) -> Traffic {
        let history = Arc::new(History::new());
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicU64::new(0));
        let names: Vec<String> = (0..users).map(|n| format!("{prefix}-user-{n}")).collect();
        let mut readers = Vec::new();
        for (n, user) in names.iter().enumerate() {
            let addr = &edges[n % edges.len()];
            let token = token_with(user, Default::default());
            let mut ws = connect_ws(&format!("ws://{addr}/ws/notifications?token={token}"), &[])
                .await
                .expect("a notifications client connects")
                .ws;
            // The greeting, then the end of the (empty) replay.
            let mut greeted = false;
            while !greeted {
                match tokio::time::timeout(WAIT, ws.next()).await.expect("greeted in time") {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t).expect("JSON");
                        greeted = v["type"] == "replay_complete";
                    }
                    Some(Ok(_)) => {}
                    other => panic!("{user}'s connection ended before its replay: {other:?}"),
                }
            }
            let client = format!("{user}@{n}");
            history.opened(&client, user);
            let (history, closed) = (history.clone(), closed.clone());
            readers.push(tokio::spawn(async move {
                while let Some(message) = ws.next().await {
                    match message {
                        Ok(Message::Text(t)) => {
                            let Ok(v) = serde_json::from_str::<Value>(&t) else { continue };
                            if let Some(id) = v["id"].as_str() {
                                history.received(&client, id);
                            }
                        }
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
            }));
        }
        let refusals: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
        let http = reqwest::Client::builder().timeout(PUBLISH_TIMEOUT).build().expect("an HTTP client");
        let interval = Duration::from_secs_f64(1.0 / per_user_rate.max(0.1));
        let publishers = names
            .iter()
            .enumerate()
            .map(|(n, user)| {
                let url = format!("http://{}/v1/publish", publish_to[n % publish_to.len()]);
                let (http, history, stop, user) = (http.clone(), history.clone(), stop.clone(), user.clone());
                let refusals = refusals.clone();
                tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(interval);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut seq = 0;
                    while !stop.load(Ordering::Relaxed) {
                        ticks.tick().await;
                        seq += 1;
                        let id = format!("{user}-{seq}");
                        let body = json!({"id": id, "user": user, "type": "notification", "payload": {"seq": seq}});
                        let sent = http.post(&url).bearer_auth(ADMIN).json(&body).send().await;
                        let (outcome, refusal) = match sent {
                            Ok(r) if r.status() == 200 => (Outcome::Ok, None),
                            Ok(r) => {
                                let status = r.status();
                                let text = r.text().await.unwrap_or_default();
                                // A 503 may come after the append was sent: it may still appear.
                                let info = status.is_server_error() || status == 409;
                                (if info { Outcome::Info } else { Outcome::Fail }, Some(format!("{status}: {text}")))
                            }
                            Err(e) => (Outcome::Info, Some(format!("no answer: {e}"))),
                        };
                        if let Some(refusal) = refusal {
                            let mut kept = refusals.lock();
                            if kept.len() < REFUSALS_KEPT {
                                kept.push(refusal);
                            }
                        }
                        history.published(&user, &id, seq, outcome);
                    }
                })
            })
            .collect();
        Traffic { history, stop, publishers, readers, closed, refusals }
    }

    /// Stops publishing (each publisher after its publish in flight).
    pub async fn stop_publishing(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for p in self.publishers.drain(..) {
            let _ = tokio::time::timeout(PUBLISH_TIMEOUT * 2, p).await;
        }
    }

    /// Waits until every acknowledged event reached every client that must get it, or `bound`
    /// passed; returns how many were still missing.
    pub async fn await_delivered(&self, bound: Duration) -> usize {
        self.await_delivered_except(&Default::default(), bound).await
    }

    /// [`Traffic::await_delivered`], not waiting for the events in `allowed` (those the fault
    /// may take back).
    pub async fn await_delivered_except(&self, allowed: &std::collections::HashSet<String>, bound: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let missing = self.history.missing_except(allowed);
            if missing == 0 || tokio::time::Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first answers that were not 200 (status and body).
    pub fn refusals(&self) -> Vec<String> {
        self.refusals.lock().clone()
    }

    /// Connections that ended while the traffic ran.
    pub fn closed_connections(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.publishers.iter().chain(&self.readers) {
            task.abort();
        }
    }
}
