//! Per-connection message rate limit: a token bucket refilled at `rate` per second up to
//! `burst` tokens.

use std::time::{Duration, Instant};

/// What a frame that is not a whole message (ping, pong, a fragment before the last) costs, in
/// messages.
pub const FRAME_COST: f64 = 0.1;

/// A token bucket.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `rate` 0 means unlimited.
    pub fn new(rate: f64, burst: u32) -> Self {
        TokenBucket { rate, burst: f64::from(burst), tokens: f64::from(burst), last: Instant::now() }
    }

    /// Takes one token; on failure returns how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        self.take_cost(now, 1.0)
    }

    /// Takes `cost` tokens (a fraction for frames that are not whole messages: pings, pongs,
    /// fragments, so that floods of them are bounded too without charging a normal client's
    /// occasional ping as a message); on failure returns how long until they are available.
    pub fn take_cost(&mut self, now: Instant, cost: f64) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((cost - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3);
        assert!((0..3).all(|_| b.take(t0).is_ok()));
        let wait = b.take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(TokenBucket::new(0.0, 1).take(t0).is_ok(), "rate 0 is unlimited");
    }

    #[test]
    fn small_frames_cost_a_fraction_and_are_bounded_too() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 2);
        let passed = (0..100).take_while(|_| b.take_cost(t0, FRAME_COST).is_ok()).count();
        assert_eq!(passed, 19, "a burst of 2 messages is about 20 pings (floating point keeps one back)");
    }
}
