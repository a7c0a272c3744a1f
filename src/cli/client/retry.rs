//! Waiting out a service that is unavailable for a while (`503`: shutting down, its engine
//! unreachable, or no ready backend behind an ingress): bounded exponential backoff with
//! jitter that never waits less than the service's `Retry-After`.
//!
//! Only a request the service refused before accepting anything is retried: a submission
//! answered `503` (cordon's service answers it before it stores a job) — never one whose
//! outcome is unknown.

use std::time::{Duration, Instant};

/// The first wait without a `Retry-After`; it doubles each attempt, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A `Retry-After` beyond this is taken as this (the budget still bounds the whole wait).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The retries left for one request: attempts so far, and the time budget.
pub(crate) struct Backoff {
    started: Instant,
    budget: Duration,
    attempt: u32,
}

impl Backoff {
    /// Retries for at most `budget` from now (`0`: none).
    pub(crate) fn new(budget: Duration) -> Backoff {
        Backoff {
            started: Instant::now(),
            budget,
            attempt: 0,
        }
    }

    /// How long to wait before the next attempt, or `None` once that wait would end past the
    /// budget. `retry_after` is the service's `Retry-After`, if it sent one.
    pub(crate) fn next_wait(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        self.next_wait_after(self.started.elapsed(), retry_after)
    }

    fn next_wait_after(
        &mut self,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let wait = wait_for(self.attempt, retry_after, jitter());
        if elapsed + wait > self.budget {
            return None;
        }
        self.attempt += 1;
        Some(wait)
    }

    /// Time spent since the first attempt.
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }
}

/// The wait before retry `attempt` (0 first): the larger of the backoff (1 s doubling, at
/// most 30 s) and `retry_after` (at most 60 s), plus `jitter` (in `[0, 1)`) times a quarter of
/// it, so that clients turned away together do not all come back together.
fn wait_for(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let backoff = FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF);
    let base = backoff.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
    base + base.mul_f64(jitter.clamp(0.0, 1.0) / 4.0)
}

pub(crate) use crate::retry::retry_after;

fn jitter() -> f64 {
    crate::retry::unit_random()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let waits: Vec<u64> = (0..8).map(|a| wait_for(a, None, 0.0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(wait_for(u32::MAX, None, 0.0), MAX_BACKOFF);
    }

    #[test]
    fn retry_after_is_a_floor_within_its_cap() {
        let ten = Some(Duration::from_secs(10));
        assert_eq!(wait_for(0, ten, 0.0), Duration::from_secs(10));
        assert_eq!(wait_for(5, ten, 0.0), Duration::from_secs(30));
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(wait_for(0, hour, 0.0), MAX_RETRY_AFTER);
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        let ten = Some(Duration::from_secs(10));
        let most = wait_for(0, ten, 0.999_999);
        assert!(most > Duration::from_millis(12_499) && most < Duration::from_millis(12_500));
        assert_eq!(wait_for(0, ten, 5.0), Duration::from_millis(12_500));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn the_budget_bounds_the_retries() {
        let mut none = Backoff::new(Duration::ZERO);
        assert_eq!(none.next_wait(None), None);
        let mut some = Backoff::new(Duration::from_secs(10));
        let mut total = Duration::ZERO;
        while let Some(w) = some.next_wait_after(total, None) {
            total += w;
        }
        assert!(total <= Duration::from_secs(10), "{total:?}");
        assert!(some.attempt >= 2, "{}", some.attempt);
    }
}
