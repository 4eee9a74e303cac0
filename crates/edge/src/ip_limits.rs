//! Per-IP admission at the TCP accept: how many connections one address may hold open, and how
//! fast it may open new ones. Checked before a byte of HTTP is read, so a single host cannot
//! exhaust the node's descriptors or its handshake work.
//!
//! A connection that is admitted holds an [`IpSlot`]; the slot travels with the connection (in
//! the request's extensions, then in the WebSocket's task after the upgrade) and gives its
//! place back when the last holder drops it. Off by default: behind a proxy that does not
//! preserve client addresses every client shares one address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::IpLimitsConfig;

/// Sweep idle entries after this many admissions.
const SWEEP_EVERY: u32 = 1024;

/// What one address has: open connections and its new-connection token bucket.
struct Entry {
    open: u32,
    tokens: f64,
    last: Instant,
}

/// The node's per-address table.
pub struct IpLimits {
    config: IpLimitsConfig,
    table: Mutex<(HashMap<IpAddr, Entry>, u32)>,
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpRefusal {
    /// It holds `max_connections` already.
    TooManyOpen,
    /// It opened connections faster than `connects_per_second` (after the burst).
    TooFast,
}

impl IpRefusal {
    /// The metric label and error code.
    pub fn code(self) -> &'static str {
        match self {
            IpRefusal::TooManyOpen => "ip_connection_limit",
            IpRefusal::TooFast => "ip_rate_limited",
        }
    }
}

/// A connection's place in its address's count; released when dropped.
pub struct IpSlot {
    limits: Arc<IpLimits>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut table = self.limits.table.lock();
        if let Some(entry) = table.0.get_mut(&self.ip) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

impl IpLimits {
    /// The table for `config`; `None` when both limits are off.
    pub fn new(config: &IpLimitsConfig) -> Option<Arc<IpLimits>> {
        (config.max_connections > 0 || config.connects_per_second > 0.0)
            .then(|| Arc::new(IpLimits { config: config.clone(), table: Mutex::default() }))
    }

    /// Admits a new connection from `ip` at `now`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<IpSlot, IpRefusal> {
        let c = &self.config;
        let burst = f64::from(c.connect_burst.max(1));
        let mut table = self.table.lock();
        let (entries, admitted) = &mut *table;
        *admitted += 1;
        if *admitted >= SWEEP_EVERY {
            *admitted = 0;
            // Forget addresses with nothing open whose bucket has refilled.
            entries.retain(|_, e| e.open > 0 || refill(e, now, c.connects_per_second, burst) < burst);
        }
        let entry = entries.entry(ip).or_insert(Entry { open: 0, tokens: burst, last: now });
        if c.max_connections > 0 && entry.open >= c.max_connections {
            return Err(IpRefusal::TooManyOpen);
        }
        if c.connects_per_second > 0.0 {
            entry.tokens = refill(entry, now, c.connects_per_second, burst);
            entry.last = now;
            if entry.tokens < 1.0 {
                return Err(IpRefusal::TooFast);
            }
            entry.tokens -= 1.0;
        }
        entry.open += 1;
        Ok(IpSlot { limits: self.clone(), ip })
    }

    /// Addresses tracked now (the sweep's bound, in tests).
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.table.lock().0.len()
    }
}

/// The bucket of `e` refilled up to `now`.
fn refill(e: &Entry, now: Instant, rate: f64, burst: f64) -> f64 {
    if rate <= 0.0 {
        return burst;
    }
    (e.tokens + now.saturating_duration_since(e.last).as_secs_f64() * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(max: u32, rate: f64, burst: u32) -> Arc<IpLimits> {
        let config = IpLimitsConfig { max_connections: max, connects_per_second: rate, connect_burst: burst };
        IpLimits::new(&config).expect("on")
    }

    #[test]
    fn off_unless_a_limit_is_set() {
        assert!(IpLimits::new(&IpLimitsConfig::default()).is_none());
    }

    #[test]
    fn open_connections_are_counted_per_address_and_released_on_drop() {
        let l = limits(2, 0.0, 0);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        let first = l.admit(a, now).expect("1st");
        let _second = l.admit(a, now).expect("2nd");
        assert_eq!(l.admit(a, now).err(), Some(IpRefusal::TooManyOpen));
        assert!(l.admit(b, now).is_ok(), "another address has its own count");
        drop(first);
        assert!(l.admit(a, now).is_ok(), "a closed connection gives its place back");
    }

    #[test]
    fn new_connections_are_rate_limited_after_the_burst_and_refill() {
        let l = limits(0, 2.0, 3);
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let t0 = Instant::now();
        let held: Vec<_> = (0..3).map(|_| l.admit(ip, t0).expect("the burst")).collect();
        assert_eq!(l.admit(ip, t0).err(), Some(IpRefusal::TooFast));
        drop(held);
        assert_eq!(l.admit(ip, t0).err(), Some(IpRefusal::TooFast), "closing does not refill the bucket");
        assert!(l.admit(ip, t0 + Duration::from_millis(500)).is_ok(), "2 per second: one more after 0.5 s");
    }

    #[test]
    fn idle_addresses_are_forgotten_so_the_table_stays_bounded() {
        let l = limits(5, 10.0, 1);
        let t0 = Instant::now();
        for i in 0..SWEEP_EVERY {
            let ip = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            drop(l.admit(ip, t0).expect("admitted"));
        }
        assert!(l.tracked() <= SWEEP_EVERY as usize);
        let later = t0 + Duration::from_secs(1);
        drop(l.admit("10.9.9.9".parse().unwrap(), later));
        for _ in 0..SWEEP_EVERY {
            drop(l.admit("10.9.9.9".parse().unwrap(), later + Duration::from_secs(1)));
        }
        assert!(l.tracked() < 10, "refilled, closed addresses were swept: {}", l.tracked());
    }
}
