//! A small token bucket for the optional server-side rate limit.

use std::time::{Duration, Instant};

use super::RateLimit;

/// Token bucket refilled continuously at `per_second`, holding at most `burst` tokens.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A `burst` of 0 is treated as 1.
    pub(crate) fn new(cfg: &RateLimit, now: Instant) -> Self {
        let capacity = f64::from(cfg.burst.max(1));
        TokenBucket {
            per_second: cfg.per_second.max(0.0),
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Take one token, or say how long until one is available.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        let wait = if self.per_second > 0.0 {
            (missing / self.per_second).min(3600.0)
        } else {
            3600.0
        };
        Err(Duration::from_secs_f64(wait))
    }
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let cfg = RateLimit {
            per_second: 2.0,
            burst: 3,
            send_retry_after: true,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&cfg, t0);
        for _ in 0..3 {
            assert!(b.try_take(t0).is_ok());
        }
        let wait = b.try_take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6);
        assert_eq!(retry_after_secs(wait), 1);
        assert!(b.try_take(t0 + Duration::from_millis(500)).is_ok());
        assert!(b.try_take(t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn slow_rate_rounds_up() {
        let cfg = RateLimit {
            per_second: 0.25,
            burst: 0,
            send_retry_after: true,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::new(&cfg, t0);
        assert!(b.try_take(t0).is_ok());
        assert_eq!(retry_after_secs(b.try_take(t0).unwrap_err()), 4);
    }
}
