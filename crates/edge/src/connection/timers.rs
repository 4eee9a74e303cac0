//! Every deadline of one connection behind a single timer: the heartbeat (ping, then the pong
//! deadline), the idle and unsubscribed timeouts, token expiry and the drain point. The
//! connection task sleeps until [`Timers::next`] and calls [`Timers::fire`]; one timer entry
//! per connection instead of five keeps idle connections small.

use std::time::Duration;

use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::CloseReason;
use tokio::time::Instant;

use super::handle::{ClosePlan, ConnHandle};
use super::wire::Opcode;
use crate::config::EndpointConfig;

/// The deadlines of one connection. The durations are read from the endpoint's configuration
/// where needed rather than copied here, so this stays small.
pub struct Timers {
    heartbeat: Instant,
    ping_sent_ms: Option<u64>,
    missed: u32,
    idle: Option<Instant>,
    unsubscribed: Option<Instant>,
    expiry: Option<Instant>,
    drain: Option<Instant>,
}

impl Timers {
    /// The deadlines of a connection accepted now, whose credentials expire at `expires_at`
    /// (unix seconds).
    pub fn new(config: &EndpointConfig, expires_at: Option<u64>) -> Timers {
        let now = Instant::now();
        let after = |d: Duration| (!d.is_zero()).then(|| now + d);
        Timers {
            heartbeat: now + config.ping_interval,
            ping_sent_ms: None,
            missed: 0,
            idle: after(config.idle_timeout),
            unsubscribed: after(config.unsubscribed_timeout),
            expiry: expires_at.map(|exp| now + Duration::from_secs(exp.saturating_sub(now_millis() / 1000))),
            drain: None,
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Instant {
        [self.idle, self.unsubscribed, self.expiry, self.drain].into_iter().flatten().fold(self.heartbeat, Instant::min)
    }

    /// A client message arrived: the idle timeout starts over.
    pub fn message_received(&mut self, config: &EndpointConfig) {
        if !config.idle_timeout.is_zero() {
            self.idle = Some(Instant::now() + config.idle_timeout);
        }
    }

    /// The node drains: close after `delay`.
    pub fn drain_after(&mut self, delay: Duration) {
        self.drain = Some(Instant::now() + delay);
    }

    /// Acts on every deadline that has passed: closes the connection for the first reason
    /// due, or sends the next heartbeat ping.
    pub fn fire(&mut self, conn: &ConnHandle, config: &EndpointConfig, subscribed: bool) {
        let now = Instant::now();
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.expiry) {
            return conn.close(CloseReason::AuthExpired);
        }
        if due(self.drain) {
            return conn.close(CloseReason::GoingAway);
        }
        if due(self.idle) {
            return conn.close(CloseReason::Idle);
        }
        if due(self.unsubscribed) {
            if !subscribed {
                return conn.close_with(ClosePlan::Server(CloseReason::Idle, "No subscription".to_owned()));
            }
            self.unsubscribed = Some(now + config.unsubscribed_timeout);
        }
        if self.heartbeat <= now {
            self.heartbeat(conn, config, now);
        }
    }

    fn heartbeat(&mut self, conn: &ConnHandle, config: &EndpointConfig, now: Instant) {
        match self.ping_sent_ms {
            Some(sent) if conn.last_pong_ms() < sent => {
                self.missed += 1;
                if self.missed >= config.max_missed_pongs.max(1) {
                    conn.close(CloseReason::HeartbeatTimeout);
                } else {
                    // Ping again at once; the connection gets `max_missed` chances.
                    self.ping_sent_ms = None;
                    self.heartbeat = now;
                }
            }
            Some(sent) => {
                self.missed = 0;
                self.ping_sent_ms = None;
                let since = Duration::from_millis(now_millis().saturating_sub(sent));
                self.heartbeat = now + config.ping_interval.saturating_sub(since);
            }
            None => {
                self.ping_sent_ms = Some(now_millis());
                conn.send_control(Opcode::Ping, Vec::new());
                self.heartbeat = now + config.pong_timeout;
            }
        }
    }
}
