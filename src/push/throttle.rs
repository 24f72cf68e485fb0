//! Pacing: one gate every request to a target passes through.
//!
//! Four things are combined here: a `governor` token bucket for the
//! configured rate and burst, a semaphore bounding requests in flight, a shared
//! *not-before* instant, and an AIMD rate. A 429 (or 503 with Retry-After)
//! moves the not-before instant forward, which pauses every worker, not just
//! the one that was answered — governor alone is proactive only and cannot be
//! told "wait 30 seconds" — and halves the sustained rate. Successes then win
//! the rate back quickly up to 90 % of the rate the 429 came at, and slowly
//! (1 % of the configured rate per second) beyond it, so a target whose real
//! limit is below the configured rate is overrun now and then, not every few
//! dozen requests.
//!
//! The configured burst describes the *target's* bucket. scimsync spends only
//! half of it up front ([`own_burst`]): a request leaves on time but reaches
//! the target a few milliseconds early or late, so two requests sent one
//! interval apart can arrive closer together than that. A client that used the
//! whole burst would leave the target's bucket empty and turn that jitter
//! into 429s; the half it keeps absorbs `burst / 2 / rate` seconds of it
//! (25 ms at 200 requests/s and a burst of 10).

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
    epoch: u64,
    /// The rate the last 429 came at (the configured rate before any).
    ceiling: f64,
    /// When the rate was last raised.
    raised_at: Option<Instant>,
}

impl Aimd {
    /// Start at the configured rate `max` (requests per second).
    pub fn new(max: f64) -> Aimd {
        let max = max.max(0.001);
        Aimd {
            max,
            min: (max / 64.0).max(0.05),
            current: max,
            epoch: 0,
            ceiling: max,
            raised_at: None,
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

    /// How many times the rate was lowered: a request carries the epoch it
    /// was sent in.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The target said "too many" to a request sent in `epoch`: halve, once
    /// per epoch. Requests sent before the last decrease that are answered
    /// 429 after it left at the old rate and say nothing new; halving for
    /// each of them would collapse the rate (sixteen in flight, sixteen
    /// halvings) for one overrun. Returns whether the rate was lowered.
    pub fn on_throttled(&mut self, epoch: u64) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.ceiling = self.current;
        self.current = (self.current / 2.0).max(self.min);
        self.raised_at = None;
        self.epoch += 1;
        true
    }

    /// A request succeeded at `now`. Below 90 % of the ceiling (the rate of
    /// the last 429), add 2 % of the configured rate per success; from there,
    /// 1 % of the configured rate per second since the last raise.
    pub fn on_success(&mut self, now: Instant) {
        if self.current >= self.max {
            return;
        }
        let knee = self.ceiling * 0.9;
        if self.current < knee {
            self.current = (self.current + self.max * 0.02).min(knee);
        } else {
            let since = self
                .raised_at
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
            self.current = (self.current + self.max * 0.01 * since).min(self.max);
        }
        self.raised_at = Some(now);
    }
}

/// The part of the target's burst scimsync uses itself: half, at least 1.
/// The other half stays in the target's bucket as a reserve for arrival jitter.
pub fn own_burst(target_burst: u32) -> u32 {
    (target_burst / 2).max(1)
}

/// A request's way through the gate: its in-flight slot and the rate epoch
/// it was sent in.
#[must_use = "hold the pass while the request is in flight"]
pub struct Pass<'a> {
    permit: SemaphorePermit<'a>,
    epoch: u64,
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
    /// A gate for `per_second` sustained requests against a target whose
    /// bucket holds `burst`, `concurrency` in flight.
    pub fn new(per_second: f64, burst: u32, concurrency: usize) -> Throttle {
        let period = Duration::from_secs_f64(1.0 / per_second.max(0.001));
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("period is above zero")
            .allow_burst(NonZeroU32::new(own_burst(burst)).expect("burst is at least 1"));
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
    /// Hold the returned pass while the request is in flight, then give it
    /// back to [`Throttle::observe`].
    pub async fn acquire(&self) -> Pass<'_> {
        let permit = self
            .inflight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        // A pause set while this request waited for its slot or token (another
        // request was answered 429) holds it back too: checked again after
        // the waits, right before the request leaves.
        loop {
            self.wait_for_pause().await;
            self.wait_for_turn().await;
            if !self.paused() {
                break;
            }
        }
        let epoch = self.aimd.lock().expect("not poisoned").epoch();
        Pass { permit, epoch }
    }

    fn paused(&self) -> bool {
        self.not_before
            .lock()
            .expect("not poisoned")
            .is_some_and(|t| t > Instant::now())
    }

    async fn wait_for_pause(&self) {
        loop {
            let wait_until = *self.not_before.lock().expect("not poisoned");
            match wait_until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
    }

    async fn wait_for_turn(&self) {
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
    }

    /// Feed back how the request `pass` was let through for went:
    /// throttled (429) or not. Gives the in-flight slot back.
    pub fn observe(&self, pass: Pass<'_>, throttled: bool) {
        let Pass { permit, epoch } = pass;
        drop(permit);
        let mut aimd = self.aimd.lock().expect("not poisoned");
        if throttled {
            if aimd.on_throttled(epoch) {
                tracing::info!(
                    rate = aimd.rate(),
                    "target throttled: lowering the request rate"
                );
            }
        } else {
            aimd.on_success(Instant::now());
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

    #[test]
    fn half_the_targets_burst_is_kept_in_reserve() {
        assert_eq!(own_burst(10), 5);
        assert_eq!(own_burst(3), 1);
        assert_eq!(own_burst(1), 1);
        assert_eq!(own_burst(0), 1);
        // One request a minute: no token comes back while the test runs, so
        // what the limiter lets through at once is the burst it was given.
        let t = Throttle::new(1.0 / 60.0, 10, 4);
        let at_once = (0..20).take_while(|_| t.limiter.check().is_ok()).count();
        assert_eq!(at_once, 5);
    }

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
        let t0 = Instant::now();
        let mut a = Aimd::new(10.0);
        assert!(!a.reduced());
        assert!(a.on_throttled(0));
        assert_eq!(a.rate(), 5.0);
        // A second 429 for a request sent before the decrease: no new halving.
        assert!(!a.on_throttled(0));
        assert_eq!(a.rate(), 5.0);
        assert!(a.on_throttled(a.epoch()));
        assert_eq!(a.rate(), 2.5);
        // The ceiling is now 5.0: quick steps (0.2 per success) up to 4.5.
        for _ in 0..10 {
            a.on_success(t0);
        }
        assert!((a.rate() - 4.5).abs() < 1e-9, "{}", a.rate());
        for _ in 0..1000 {
            a.on_success(t0);
        }
        assert!((a.rate() - 4.5).abs() < 1e-9, "{}", a.rate());
        // Beyond it, 1 % of the configured rate (0.1) per second.
        a.on_success(t0 + Duration::from_secs(10));
        assert!((a.rate() - 5.5).abs() < 1e-9, "{}", a.rate());
        a.on_success(t0 + Duration::from_secs(100));
        assert_eq!(a.rate(), 10.0);
        assert!(!a.reduced());
        for _ in 0..100 {
            a.on_throttled(a.epoch());
        }
        assert!(a.rate() >= 10.0 / 64.0 - 1e-9);
    }

    #[test]
    fn one_throttle_at_the_configured_rate_costs_little() {
        // A single 429 at the configured rate: back to 90 % in 20
        // successes, then the last 10 % over ten seconds.
        let t0 = Instant::now();
        let mut a = Aimd::new(200.0);
        assert!(a.on_throttled(a.epoch()));
        for _ in 0..20 {
            a.on_success(t0);
        }
        assert!((a.rate() - 180.0).abs() < 1e-9, "{}", a.rate());
        a.on_success(t0 + Duration::from_secs(5));
        assert!((a.rate() - 190.0).abs() < 1e-9, "{}", a.rate());
        a.on_success(t0 + Duration::from_secs(10));
        assert_eq!(a.rate(), 200.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reduced_rate_spaces_requests() {
        let t = Throttle::new(1000.0, 100, 4);
        for _ in 0..5 {
            let pass = t.acquire().await;
            t.observe(pass, true); // 1000 -> 31.25/s: 32 ms apart
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
    async fn requests_in_flight_at_a_429_halve_the_rate_once() {
        let t = Throttle::new(100.0, 20, 8);
        let passes: Vec<Pass<'_>> =
            futures_util::future::join_all((0..4).map(|_| t.acquire())).await;
        for pass in passes {
            t.observe(pass, true);
        }
        assert_eq!(t.rate(), 50.0);
        // Sent after the decrease: a new 429 lowers the rate again.
        let pass = t.acquire().await;
        t.observe(pass, true);
        assert_eq!(t.rate(), 25.0);
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
