//! Every deadline of one connection behind a single timer: the heartbeat (ping, then the
//! answer's deadline), the idle and unsubscribed timeouts, credential expiry and the drain
//! point. The connection task sleeps until [`Timers::next`] and calls [`Timers::fire`]; one
//! timer entry per connection instead of five keeps idle connections small.
//!
//! What a heartbeat sends and what answers it is the dialect's ([`HeartbeatStyle`]): WebSocket
//! ping frames, the dialect's own ping message, or nothing (the client sends heartbeats and the
//! idle timeout catches silence). The timing is the endpoint's ([`Heartbeat`]). The timer only
//! asks both.

use std::time::Duration;

use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::{CloseReason, HeartbeatStyle, Reply};
use switchboard_wsframe::Opcode;
use tokio::time::Instant;

use super::handle::{ClosePlan, ConnHandle};
use crate::endpoint::{EndpointRuntime, Heartbeat};

/// Stands in for "no deadline" (a sleep has to end somewhere).
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);
/// The furthest a relative deadline is kept, in milliseconds after the base (49 days): a
/// timeout configured longer counts as this long.
const MAX_OFFSET_MS: u64 = u32::MAX as u64 - 1;
/// The base moves up to now once it is this far behind, so offsets stay small.
const REBASE_AFTER_MS: u64 = 1 << 30;

/// A deadline in milliseconds after [`Timers`]' base, or none: 4 bytes where an
/// `Option<Instant>` takes 16, for every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadline(u32);

impl Deadline {
    const NONE: Deadline = Deadline(u32::MAX);

    fn is_set(self) -> bool {
        self != Deadline::NONE
    }
}

/// The deadlines of one connection. The durations are read from the endpoint where needed
/// rather than copied here, so this stays small.
pub struct Timers {
    /// What the deadlines count from: the connection's start, moved up now and then.
    base: Instant,
    /// When the next ping is due, or its answer overdue; none when the server never pings.
    heartbeat: Deadline,
    idle: Deadline,
    unsubscribed: Deadline,
    drain: Deadline,
    /// Credential expiry in milliseconds after the base, exact (it may be years away);
    /// `u64::MAX`: none.
    expiry_ms: u64,
    /// When the ping awaiting its answer was sent (unix ms); 0 when none is.
    ping_sent_ms: u64,
    pings: u32,
    missed: u32,
}

impl Timers {
    /// The deadlines of a connection to `endpoint` accepted now, whose credentials expire at
    /// `expires_at` (unix seconds; a time too far to represent is no deadline).
    pub fn new(endpoint: &EndpointRuntime, expires_at: Option<u64>) -> Timers {
        let now = Instant::now();
        let limits = endpoint.limits();
        let pings = endpoint.heartbeat.style != HeartbeatStyle::ClientHeartbeat;
        let mut timers = Timers {
            base: now,
            heartbeat: Deadline::NONE,
            idle: Deadline::NONE,
            unsubscribed: Deadline::NONE,
            drain: Deadline::NONE,
            expiry_ms: expires_at.map_or(u64::MAX, |exp| exp.saturating_sub(now_millis() / 1000).saturating_mul(1000)),
            ping_sent_ms: 0,
            pings: 0,
            missed: 0,
        };
        if pings {
            timers.heartbeat = timers.after(now, endpoint.heartbeat.interval);
        }
        timers.idle = timers.after_unless_zero(now, limits.idle_timeout);
        timers.unsubscribed = timers.after_unless_zero(now, limits.unsubscribed_timeout);
        timers
    }

    /// The earliest deadline.
    pub fn next(&self) -> Instant {
        let expiry = (self.expiry_ms != u64::MAX)
            .then(|| self.base.checked_add(Duration::from_millis(self.expiry_ms)))
            .flatten();
        [self.heartbeat, self.idle, self.unsubscribed, self.drain]
            .into_iter()
            .filter_map(|d| self.instant(d))
            .chain(expiry)
            .min()
            .unwrap_or_else(|| Instant::now() + FAR_FUTURE)
    }

    /// A client message arrived: the idle timeout starts over, and an endpoint that pings only
    /// when idle need not ping yet.
    pub fn message_received(&mut self, endpoint: &EndpointRuntime) {
        let now = Instant::now();
        let idle_timeout = endpoint.limits().idle_timeout;
        if !idle_timeout.is_zero() {
            self.idle = self.after(now, idle_timeout);
        }
        let hb = &endpoint.heartbeat;
        if hb.when_idle && self.ping_sent_ms == 0 && self.heartbeat.is_set() {
            self.heartbeat = self.after(now, hb.interval);
        }
    }

    /// The node drains: close after `delay`.
    pub fn drain_after(&mut self, delay: Duration) {
        self.drain = self.after(Instant::now(), delay);
    }

    /// Acts on every deadline that has passed: closes the connection for the first reason
    /// due, or sends the next heartbeat ping.
    pub fn fire(&mut self, conn: &ConnHandle, endpoint: &EndpointRuntime, subscribed: bool) {
        let now = Instant::now();
        self.rebase(now);
        let elapsed = self.offset(now);
        let due = |d: Deadline| d.is_set() && u64::from(d.0) <= elapsed;
        if self.expiry_ms != u64::MAX && self.expiry_ms <= elapsed {
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
            self.unsubscribed = self.after(now, endpoint.limits().unsubscribed_timeout);
        }
        if due(self.heartbeat) {
            self.heartbeat(conn, endpoint, now);
        }
    }

    fn heartbeat(&mut self, conn: &ConnHandle, endpoint: &EndpointRuntime, now: Instant) {
        let hb: &Heartbeat = &endpoint.heartbeat;
        match self.ping_sent_ms {
            0 => {
                self.ping_sent_ms = now_millis().max(1);
                self.pings = self.pings.wrapping_add(1);
                ping(conn, endpoint, self.pings);
                self.heartbeat = self.after(now, hb.timeout);
            }
            sent if conn.last_pong_ms() < sent => {
                self.missed += 1;
                if self.missed >= hb.max_missed {
                    conn.close(CloseReason::HeartbeatTimeout);
                } else {
                    // Ping again at once; the connection gets `max_missed` chances.
                    self.ping_sent_ms = 0;
                    self.heartbeat = self.after(now, Duration::ZERO);
                }
            }
            sent => {
                self.missed = 0;
                self.ping_sent_ms = 0;
                let since = Duration::from_millis(now_millis().saturating_sub(sent));
                self.heartbeat = self.after(now, hb.interval.saturating_sub(since));
            }
        }
    }

    /// Milliseconds from the base to `t`.
    fn offset(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// The deadline `d` after `now` (kept at most [`MAX_OFFSET_MS`] after the base).
    fn after(&mut self, now: Instant, d: Duration) -> Deadline {
        self.rebase(now);
        let at = self.offset(now).saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Deadline(at.min(MAX_OFFSET_MS) as u32)
    }

    /// Like [`Timers::after`]; a zero duration is no deadline.
    fn after_unless_zero(&mut self, now: Instant, d: Duration) -> Deadline {
        if d.is_zero() {
            Deadline::NONE
        } else {
            self.after(now, d)
        }
    }

    /// When `d` is, if it is set.
    fn instant(&self, d: Deadline) -> Option<Instant> {
        d.is_set().then(|| self.base + Duration::from_millis(u64::from(d.0)))
    }

    /// Moves the base up to `now` once it is far behind, so new offsets fit in 32 bits.
    fn rebase(&mut self, now: Instant) {
        let shift = self.offset(now);
        if shift < REBASE_AFTER_MS {
            return;
        }
        self.base += Duration::from_millis(shift);
        for d in [&mut self.heartbeat, &mut self.idle, &mut self.unsubscribed, &mut self.drain] {
            if d.is_set() {
                *d = Deadline(u64::from(d.0).saturating_sub(shift) as u32);
            }
        }
        if self.expiry_ms != u64::MAX {
            self.expiry_ms = self.expiry_ms.saturating_sub(shift);
        }
    }
}

/// Sends the dialect's heartbeat ping.
fn ping(conn: &ConnHandle, endpoint: &EndpointRuntime, n: u32) {
    match endpoint.heartbeat.style {
        HeartbeatStyle::WebSocketPing => conn.send_control(Opcode::Ping, Vec::new()),
        HeartbeatStyle::DialectPing => {
            let request_id = format!("ping_{n}");
            if let Some(frame) = endpoint.codec.encode_reply(&Reply::Ping { request_id: &request_id }) {
                conn.send(frame);
            }
        }
        HeartbeatStyle::ClientHeartbeat => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchboard_protocol::CloseReason;

    use super::super::testing::{connection, endpoint_with};
    use super::*;
    use crate::config::EndpointConfig;

    fn heartbeat(e: &mut EndpointConfig, interval_ms: u64, timeout_ms: u64, max_missed: u32) {
        e.heartbeat.interval = Duration::from_millis(interval_ms);
        e.heartbeat.timeout = Duration::from_millis(timeout_ms);
        e.heartbeat.max_missed = max_missed;
    }

    fn pings(frames: Vec<(u8, Vec<u8>)>) -> usize {
        frames.iter().filter(|(op, _)| *op == 0x9).count()
    }

    /// Sleeps to the next deadline and fires it, as the connection task does.
    async fn step(timers: &mut Timers, conn: &ConnHandle, ep: &EndpointRuntime) {
        tokio::time::sleep_until(timers.next()).await;
        timers.fire(conn, ep, true);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_ping_closes_after_the_allowed_misses() {
        let ep = endpoint_with("/ws", |e| heartbeat(e, 1000, 200, 3));
        let (conn, socket) = connection(1, ep.clone());
        let mut timers = Timers::new(&ep, None);
        step(&mut timers, &conn, &ep).await;
        assert_eq!(pings(socket.take_frames()), 1, "first ping after the interval");
        for missed in 1..3 {
            step(&mut timers, &conn, &ep).await; // the answer is overdue
            step(&mut timers, &conn, &ep).await; // pinged again at once
            assert_eq!(pings(socket.take_frames()), 1, "ping after miss {missed}");
            assert!(!conn.is_closing());
        }
        step(&mut timers, &conn, &ep).await;
        assert!(matches!(conn.close_plan(), Some(ClosePlan::Server(CloseReason::HeartbeatTimeout, _))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answered_ping_keeps_the_connection_and_the_rhythm() {
        let ep = endpoint_with("/ws", |e| heartbeat(e, 1000, 200, 1));
        let (conn, socket) = connection(1, ep.clone());
        let mut timers = Timers::new(&ep, None);
        for _ in 0..5 {
            step(&mut timers, &conn, &ep).await;
            assert_eq!(pings(socket.take_frames()), 1);
            conn.pong_received(now_millis());
            step(&mut timers, &conn, &ep).await; // the answer arrived: next ping scheduled
            assert!(!conn.is_closing());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn when_idle_client_messages_postpone_the_ping() {
        let ep = endpoint_with("/ws", |e| {
            heartbeat(e, 1000, 200, 1);
            e.heartbeat.when_idle = true;
        });
        let (conn, socket) = connection(1, ep.clone());
        let mut timers = Timers::new(&ep, None);
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            timers.message_received(&ep);
            assert!(timers.next() > Instant::now() + Duration::from_millis(900));
        }
        step(&mut timers, &conn, &ep).await;
        assert_eq!(pings(socket.take_frames()), 1, "pinged once the client fell silent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_heartbeat_dialect_is_never_pinged_and_silence_closes_it() {
        let mut ep = endpoint_with("/ws", |e| e.limits.idle_timeout = Duration::from_secs(75));
        Arc::get_mut(&mut ep).expect("unshared").heartbeat.style = HeartbeatStyle::ClientHeartbeat;
        let (conn, socket) = connection(1, ep.clone());
        let mut timers = Timers::new(&ep, None);
        tokio::time::sleep(Duration::from_secs(50)).await;
        timers.message_received(&ep);
        step(&mut timers, &conn, &ep).await;
        assert!(socket.take_frames().is_empty(), "no server pings");
        assert!(matches!(conn.close_plan(), Some(ClosePlan::Server(CloseReason::Idle, _))));
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_stay_exact_on_a_connection_older_than_32_bit_offsets_reach() {
        let mut ep = endpoint_with("/ws", |e| e.limits.idle_timeout = Duration::ZERO);
        Arc::get_mut(&mut ep).expect("unshared").heartbeat.style = HeartbeatStyle::ClientHeartbeat;
        let (conn, _) = connection(1, ep.clone());
        let day = Duration::from_secs(86_400);
        let mut timers = Timers::new(&ep, Some(now_millis() / 1000 + 60 * day.as_secs()));
        // 59 days on: past the 49 days a 32-bit millisecond offset reaches.
        tokio::time::advance(59 * day).await;
        timers.fire(&conn, &ep, true);
        assert!(!conn.is_closing(), "the credentials have a day left");
        let next_in = timers.next().saturating_duration_since(Instant::now());
        assert!(next_in > Duration::ZERO && next_in <= day, "nothing overdue, the expiry at most a day away");
        timers.drain_after(Duration::from_secs(5));
        let drain_in = timers.next().saturating_duration_since(Instant::now());
        assert!(drain_in.abs_diff(Duration::from_secs(5)) <= Duration::from_millis(1), "drain in 5 s: {drain_in:?}");
        step(&mut timers, &conn, &ep).await;
        assert!(matches!(conn.close_plan(), Some(ClosePlan::Server(CloseReason::GoingAway, _))));
        // And an expiry 60 days ahead is where it was put, to the second.
        let (conn, _) = connection(2, ep.clone());
        let mut timers = Timers::new(&ep, Some(now_millis() / 1000 + 60 * day.as_secs()));
        tokio::time::advance(60 * day - Duration::from_secs(10)).await;
        timers.fire(&conn, &ep, true);
        assert!(!conn.is_closing(), "10 s of credentials left");
        tokio::time::advance(Duration::from_secs(10)).await;
        timers.fire(&conn, &ep, true);
        assert!(matches!(conn.close_plan(), Some(ClosePlan::Server(CloseReason::AuthExpired, _))));
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_expire_and_an_absurd_expiry_is_no_deadline() {
        let ep = endpoint_with("/ws", |_| {});
        let (conn, _) = connection(1, ep.clone());
        let never = Timers::new(&ep, Some(u64::MAX));
        assert!(never.next() <= Instant::now() + ep.heartbeat.interval);
        let mut soon = Timers::new(&ep, Some(now_millis() / 1000 + 2));
        step(&mut soon, &conn, &ep).await;
        assert!(matches!(conn.close_plan(), Some(ClosePlan::Server(CloseReason::AuthExpired, _))));
    }
}
