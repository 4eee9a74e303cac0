//! Publishing at a fixed rate. Each message carries the time it was *due*, not the time it
//! went out: when the server pushes back (a publish request takes longer than the period) the
//! publisher falls behind, and that wait is part of the latency the clients measure instead of
//! vanishing from it (no "coordinated omission"). The publisher runs on a thread of its own, so
//! that the clients in the same process (thousands of tasks woken by deliveries) cannot hold it
//! up either.
//!
//! The publisher must also not be late by itself: tokio's timers have millisecond granularity
//! and fired a tick up to 2 ms after it was due, which every latency then counted. A tick now
//! sleeps on tokio's timer until shortly before it is due, lets the runtime's other tasks (the
//! HTTP connection) run, and sleeps the rest on the thread, to within the kernel's timer slack.

use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde_json::Value;

use crate::client::now_micros;

/// How long before a tick is due the publisher leaves tokio's timer (which may wake it up to
/// 2 ms late) for a sleep of the thread.
const TOKIO_TIMER_SLACK: Duration = Duration::from_micros(2_500);

/// A fixed-rate schedule.
pub struct Pace {
    started_micros: u64,
    period_micros: f64,
    ticks: u64,
    /// The furthest behind schedule a tick was taken, in µs.
    pub behind_max_micros: u64,
    /// The slowest request sent through [`Pace::send`], in µs: when it is about as long as
    /// `behind_max_micros`, the server held the publisher up; when it is much shorter, the
    /// load tool itself stalled.
    pub slowest_send_micros: u64,
}

impl Pace {
    /// A schedule with one tick every `period`, the first one now.
    pub fn new(period: Duration) -> Pace {
        Pace {
            started_micros: now_micros(),
            period_micros: period.as_secs_f64() * 1e6,
            ticks: 0,
            behind_max_micros: 0,
            slowest_send_micros: 0,
        }
    }

    /// Waits for the next tick; returns when it was due (µs since the epoch). A publisher
    /// that is behind gets its ticks at once until it has caught up, as an open-loop load
    /// generator must. Blocks the (publisher's own) thread for the last few milliseconds.
    pub async fn tick(&mut self) -> u64 {
        let due = self.started_micros + (self.ticks as f64 * self.period_micros) as u64;
        let early = |now: u64| Duration::from_micros(due.saturating_sub(now));
        let coarse = early(now_micros()).saturating_sub(TOKIO_TIMER_SLACK);
        if !coarse.is_zero() {
            tokio::time::sleep(coarse).await;
        }
        // The HTTP connection's own task finishes the last exchange before the thread sleeps.
        tokio::task::yield_now().await;
        let rest = early(now_micros());
        if !rest.is_zero() {
            std::thread::sleep(rest);
        }
        self.ticks += 1;
        self.behind_max_micros = self.behind_max_micros.max(now_micros().saturating_sub(due));
        due
    }

    /// Sends one publish request, timing it.
    pub async fn send<T>(&mut self, request: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let outcome = request.await;
        self.slowest_send_micros = self.slowest_send_micros.max(started.elapsed().as_micros() as u64);
        outcome
    }
}

/// Where and what to publish.
pub struct Schedule {
    /// The publish API URL (`http://127.0.0.1:8080/v1/publish`).
    pub url: String,
    /// The admin key.
    pub admin_key: String,
    /// Time between two requests.
    pub period: Duration,
    /// Requests in all.
    pub requests: u64,
}

/// What a publishing run did.
pub struct Published {
    /// Requests the server accepted.
    pub ok: u64,
    /// Which requests failed (0-based, in the order sent).
    pub failed_requests: Vec<u64>,
    /// See [`Pace::behind_max_micros`].
    pub behind_max_micros: u64,
    /// See [`Pace::slowest_send_micros`].
    pub slowest_send_micros: u64,
}

impl Published {
    /// How many requests failed.
    pub fn failed(&self) -> u64 {
        self.failed_requests.len() as u64
    }
}

/// Posts `schedule.requests` bodies, one every period, each made by `body(due)` from the time
/// it was due (µs since the epoch), on a thread and runtime of its own.
pub async fn publish(schedule: Schedule, mut body: impl FnMut(u64) -> Value + Send + 'static) -> Result<Published> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| {
                rt.block_on(async move {
                    let http = crate::tls::http_client();
                    let mut pace = Pace::new(schedule.period);
                    let (mut ok, mut failed_requests) = (0, Vec::new());
                    let bar = ProgressBar::new(schedule.requests).with_message("publishing");
                    for i in 0..schedule.requests {
                        let due = pace.tick().await;
                        let request = http.post(&schedule.url).bearer_auth(&schedule.admin_key).json(&body(due));
                        match pace.send(request.send()).await {
                            Ok(r) if r.status().is_success() => ok += 1,
                            _ => failed_requests.push(i),
                        }
                        bar.inc(1);
                    }
                    bar.finish_and_clear();
                    Published {
                        ok,
                        failed_requests,
                        behind_max_micros: pace.behind_max_micros,
                        slowest_send_micros: pace.slowest_send_micros,
                    }
                })
            });
            let _ = done_tx.send(outcome);
        })
        .context("starting the publisher thread")?;
    Ok(done_rx.await.context("the publisher thread ended early")??)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_are_stamped_when_due_and_a_stall_shows_as_lag() {
        let mut pace = Pace::new(Duration::from_millis(10));
        let first = pace.tick().await;
        // The publisher is held up for 35 ms (as by a slow publish request).
        std::thread::sleep(Duration::from_millis(35));
        let late: Vec<u64> = [pace.tick().await, pace.tick().await, pace.tick().await].into();
        assert_eq!(late, [first + 10_000, first + 20_000, first + 30_000], "stamped when due, not when sent");
        assert!(pace.behind_max_micros >= 25_000, "the stall shows: {} µs behind", pace.behind_max_micros);
    }

    #[tokio::test]
    async fn no_tick_comes_before_it_is_due() {
        let mut pace = Pace::new(Duration::from_micros(3_700));
        for _ in 0..20 {
            let due = pace.tick().await;
            let now = now_micros();
            assert!(now >= due, "a tick came {} µs early", due - now);
        }
    }
}
