//! Retry schedule: when to try a failed request again, and when to give up.
//!
//! The `backoff` crate supplies only the delay schedule (exponential, with
//! jitter); the loop is ours (`client::ScimClient::send`), because the
//! decision depends on things `backoff::future::retry` cannot see: a cap on
//! attempts per request and per run, Retry-After (which in `backoff` bypasses
//! its elapsed-time limit and so retries forever), and the shared not-before
//! gate. `backoff` is unmaintained (RUSTSEC-2025-0012): it stays behind this
//! module so swapping it for `backon` changes nothing else.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backoff::backoff::Backoff;

/// Per-request retry limits and the delay curve.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Longest Retry-After honoured (longer values are cut to this).
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// A fresh schedule for one request.
    pub fn schedule(&self) -> Schedule {
        let backoff = backoff::ExponentialBackoff {
            current_interval: self.initial,
            initial_interval: self.initial,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: self.max_delay,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        Schedule {
            backoff,
            max_attempts: self.max_attempts,
            max_retry_after: self.max_retry_after,
        }
    }
}

/// The delays of one request's retries.
pub struct Schedule {
    backoff: backoff::ExponentialBackoff,
    max_attempts: u32,
    max_retry_after: Duration,
}

impl Schedule {
    /// The delay before the next attempt, given how many attempts were made and
    /// the server's Retry-After; `None` when the attempts are used up.
    /// A Retry-After spends an attempt like any other retry.
    pub fn next_delay(
        &mut self,
        attempts_made: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempts_made >= self.max_attempts {
            return None;
        }
        let jittered = self
            .backoff
            .next_backoff()
            .unwrap_or(self.backoff.max_interval);
        Some(match retry_after {
            Some(ra) => ra.min(self.max_retry_after),
            None => jittered,
        })
    }
}

/// Retries allowed in one run, shared by all requests.
#[derive(Debug)]
pub struct RetryBudget {
    left: AtomicU32,
}

impl RetryBudget {
    /// A budget of `n` retries.
    pub fn new(n: u32) -> Self {
        RetryBudget {
            left: AtomicU32::new(n),
        }
    }

    /// Take one retry; false when the budget is spent.
    pub fn take(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Parse a Retry-After value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
/// `now` is injected so the date form is testable.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let wait = when.duration_since(now);
    Some(if wait.is_negative() {
        Duration::ZERO
    } else {
        Duration::try_from(wait).unwrap_or(Duration::ZERO)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn gives_up_after_max_attempts_even_with_retry_after() {
        let mut s = policy(3).schedule();
        assert!(s.next_delay(1, Some(Duration::from_secs(1))).is_some());
        assert!(s.next_delay(2, Some(Duration::from_secs(1))).is_some());
        assert_eq!(s.next_delay(3, Some(Duration::from_secs(1))), None);
    }

    #[test]
    fn retry_after_is_capped() {
        let mut s = policy(5).schedule();
        assert_eq!(
            s.next_delay(1, Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn retry_after_forms() {
        let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn budget_runs_out() {
        let b = RetryBudget::new(2);
        assert!(b.take());
        assert!(b.take());
        assert!(!b.take());
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds(attempts in 1u32..20, ra in proptest::option::of(0u64..10_000)) {
            let p = policy(20);
            let mut s = p.schedule();
            for n in 1..attempts {
                let d = s.next_delay(n, ra.map(Duration::from_secs)).unwrap();
                let cap = match ra {
                    Some(_) => p.max_retry_after,
                    None => p.max_delay.mul_f64(1.5),
                };
                prop_assert!(d <= cap, "delay {:?} above {:?}", d, cap);
            }
        }
    }
}
