//! Pacing: one gate every request to a target passes through.
//!
//! Four things are combined here: a `governor` token bucket for the
//! configured rate and burst, a semaphore bounding requests in flight, a shared
//! *not-before* instant, and an AIMD rate. A 429 (or 503 with Retry-After)
//! moves the not-before instant forward, which pauses every worker, not just
//! the one that was answered — governor alone is proactive only and cannot be
//! told "wait 30 seconds" — and halves the sustained rate; every success then
//! adds back a small step until the configured rate is reached again, so a
//! throttling target sees few repeated 429s.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

type Limiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// Additive-increase / multiplicative-decrease of the sustained rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Aimd {
    max: f64,
    min: f64,
    current: f64,
}

impl Aimd {
    /// Start at the configured rate `max` (requests per second).
    pub fn new(max: f64) -> Aimd {
        let max = max.max(0.001);
        Aimd {
            max,
            min: (max / 64.0).max(0.05),
            current: max,
        }
    }

    /// The rate now.
    pub fn rate(&self) -> f64 {
        self.current
    }

    /// Whether the rate is below the configured one (the extra spacing applies).
    pub fn reduced(&self) -> bool {
        self.current < self.max
    }

    /// The target said "too many": halve.
    pub fn on_throttled(&mut self) {
        self.current = (self.current / 2.0).max(self.min);
    }

    /// A request succeeded: add 2 % of the configured rate back.
    pub fn on_success(&mut self) {
        self.current = (self.current + self.max * 0.02).min(self.max);
    }
}

/// The per-target gate.
pub struct Throttle {
    limiter: Limiter,
    inflight: Semaphore,
    not_before: Mutex<Option<Instant>>,
    aimd: Mutex<Aimd>,
    next_slot: Mutex<Option<Instant>>,
    pauses: AtomicU64,
}

impl Throttle {
    /// A gate for `per_second` sustained requests, `burst` at once, `concurrency` in flight.
    pub fn new(per_second: f64, burst: u32, concurrency: usize) -> Throttle {
        let period = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("period is above zero")
            .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst is at least 1"));
        Throttle {
            limiter: RateLimiter::direct(quota),
            inflight: Semaphore::new(concurrency.max(1)),
            not_before: Mutex::new(None),
            aimd: Mutex::new(Aimd::new(per_second)),
            next_slot: Mutex::new(None),
            pauses: AtomicU64::new(0),
        }
    }

    /// Wait for the not-before instant, a free slot and a token.
    /// Hold the returned permit while the request is in flight.
    pub async fn acquire(&self) -> SemaphorePermit<'_> {
        let permit = self
            .inflight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        loop {
            let wait_until = *self.not_before.lock().expect("not poisoned");
            match wait_until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        // After a 429 the sustained rate is lower than governor's: space
        // request starts by the reduced rate's interval.
        let slot = {
            let aimd = self.aimd.lock().expect("not poisoned");
            if aimd.reduced() {
                let interval = Duration::from_secs_f64(1.0 / aimd.rate());
                let mut next = self.next_slot.lock().expect("not poisoned");
                let now = Instant::now();
                let slot = next.filter(|t| *t > now).unwrap_or(now);
                *next = Some(slot + interval);
                Some(slot)
            } else {
                None
            }
        };
        if let Some(slot) = slot {
            tokio::time::sleep_until(slot).await;
        }
        self.limiter.until_ready().await;
        permit
    }

    /// Feed back how a request went: throttled (429) or not.
    pub fn observe(&self, throttled: bool) {
        let mut aimd = self.aimd.lock().expect("not poisoned");
        if throttled {
            aimd.on_throttled();
            tracing::info!(
                rate = aimd.rate(),
                "target throttled: lowering the request rate"
            );
        } else {
            aimd.on_success();
        }
    }

    /// The sustained rate now (requests per second).
    pub fn rate(&self) -> f64 {
        self.aimd.lock().expect("not poisoned").rate()
    }

    /// Pause every request to the target for `wait` (a 429's Retry-After).
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut nb = self.not_before.lock().expect("not poisoned");
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
            self.pauses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How many times the target was paused.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_back_other_requests() {
        let t = Throttle::new(1000.0, 10, 4);
        t.pause_for(Duration::from_millis(150));
        let start = tokio::time::Instant::now();
        drop(t.acquire().await);
        // Virtual time (paused clock): the gate must not open before the pause ends.
        assert!(start.elapsed() >= Duration::from_millis(140));
        assert_eq!(t.pauses(), 1);
    }

    #[test]
    fn aimd_halves_on_throttle_and_recovers_step_by_step() {
        let mut a = Aimd::new(10.0);
        assert!(!a.reduced());
        a.on_throttled();
        assert_eq!(a.rate(), 5.0);
        a.on_throttled();
        assert_eq!(a.rate(), 2.5);
        for _ in 0..10 {
            a.on_success();
        }
        assert!((a.rate() - 4.5).abs() < 1e-9, "{}", a.rate());
        for _ in 0..1000 {
            a.on_success();
        }
        assert_eq!(a.rate(), 10.0);
        assert!(!a.reduced());
        for _ in 0..100 {
            a.on_throttled();
        }
        assert!(a.rate() >= 10.0 / 64.0 - 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reduced_rate_spaces_requests() {
        let t = Throttle::new(1000.0, 100, 4);
        for _ in 0..5 {
            t.observe(true); // 1000 -> 31.25/s: 32 ms apart
        }
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            drop(t.acquire().await);
        }
        // Three starts at the reduced rate need at least two intervals.
        assert!(
            start.elapsed() >= Duration::from_millis(60),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_pause_does_not_shorten_a_longer_one() {
        let t = Throttle::new(1000.0, 10, 4);
        t.pause_for(Duration::from_millis(200));
        t.pause_for(Duration::from_millis(10));
        let start = tokio::time::Instant::now();
        drop(t.acquire().await);
        assert!(start.elapsed() >= Duration::from_millis(190));
    }
}
