//! Per-connection message rate limit: a token bucket refilled at `rate` per second up to
//! `burst` tokens. The rate and burst are the endpoint's, passed in rather than copied into
//! every connection's bucket.

use std::time::{Duration, Instant};

/// What a frame that is not a whole message (ping, pong, a fragment before the last) costs, in
/// messages.
pub const FRAME_COST: f64 = 0.1;

/// The endpoint's limit: `rate` tokens a second up to `burst`; `rate` 0 means unlimited.
#[derive(Clone, Copy)]
pub struct Rate {
    /// Tokens added per second.
    pub rate: f64,
    /// Most tokens held.
    pub burst: u32,
}

/// A token bucket.
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate`.
    pub fn new(rate: Rate) -> Self {
        TokenBucket { tokens: f64::from(rate.burst), last: Instant::now() }
    }

    /// Takes one token; on failure returns how long until one is available.
    pub fn take(&mut self, now: Instant, rate: Rate) -> Result<(), Duration> {
        self.take_cost(now, rate, 1.0)
    }

    /// Takes `cost` tokens (a fraction for frames that are not whole messages: pings, pongs,
    /// fragments, so that floods of them are bounded too without charging a normal client's
    /// occasional ping as a message); on failure returns how long until they are available.
    pub fn take_cost(&mut self, now: Instant, rate: Rate, cost: f64) -> Result<(), Duration> {
        let Rate { rate, burst } = rate;
        if rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - self.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let rate = Rate { rate: 10.0, burst: 3 };
        let mut b = TokenBucket::new(rate);
        assert!((0..3).all(|_| b.take(t0, rate).is_ok()));
        let wait = b.take(t0, rate).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(b.take(t0 + Duration::from_millis(100), rate).is_ok());
        let unlimited = Rate { rate: 0.0, burst: 1 };
        assert!(TokenBucket::new(unlimited).take(t0, unlimited).is_ok(), "rate 0 is unlimited");
    }

    #[test]
    fn small_frames_cost_a_fraction_and_are_bounded_too() {
        let t0 = Instant::now();
        let rate = Rate { rate: 10.0, burst: 2 };
        let mut b = TokenBucket::new(rate);
        let passed = (0..100).take_while(|_| b.take_cost(t0, rate, FRAME_COST).is_ok()).count();
        assert_eq!(passed, 19, "a burst of 2 messages is about 20 pings (floating point keeps one back)");
    }
}
