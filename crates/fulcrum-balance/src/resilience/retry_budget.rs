//! A retry budget (Finagle's `RetryBudget`, linkerd's `retry_budget`):
//! retries may add at most `percent`% to the requests of the last
//! `window`, plus a small floor so quiet services can still retry. A
//! failing backend then costs a bounded amount of extra load instead of a
//! retry storm.
//!
//! Requests and retries are counted in one-second buckets over the
//! window, in atomics: a request costs one atomic add and no lock, so the
//! budget adds no contention to a busy pool. The caller passes the time.
//! Under concurrent use the figures are approximate by a request or two
//! (a bucket reset may race with an add; a retry check-then-add may
//! overshoot by the number of threads), which a budget tolerates.

use std::sync::atomic::{AtomicU64, Ordering};

const SECOND: u64 = 1_000_000_000;

/// One second's counts; `second` is the second + 1 (0: never used).
#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Retries allowed as a share of recent requests.
#[derive(Debug)]
pub struct RetryBudget {
    percent: f64,
    min_per_second: u32,
    buckets: Box<[Bucket]>,
}

impl RetryBudget {
    /// A budget of `percent`% of requests over `window_seconds`, with at
    /// least `min_per_second` retries per second of window.
    pub fn new(percent: f64, min_per_second: u32, window_seconds: u64) -> Self {
        let buckets = (0..window_seconds.max(1)).map(|_| Bucket::default()).collect();
        Self { percent, min_per_second, buckets }
    }

    fn window(&self) -> u64 {
        self.buckets.len() as u64
    }

    /// The bucket of the second of `now`, emptied if it held an older second.
    fn bucket(&self, now: u64) -> &Bucket {
        let second = now / SECOND;
        let bucket = &self.buckets[(second % self.window()) as usize];
        let seen = bucket.second.load(Ordering::Acquire);
        if seen < second + 1
            && bucket.second.compare_exchange(seen, second + 1, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            bucket.requests.store(0, Ordering::Relaxed);
            bucket.retries.store(0, Ordering::Relaxed);
        }
        bucket
    }

    /// Counts a first attempt.
    pub fn record_request(&self, now: u64) {
        self.bucket(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_retry(&self, now: u64) -> bool {
        let current = self.bucket(now);
        let second = now / SECOND;
        let (requests, retries) = self
            .buckets
            .iter()
            .filter(|b| {
                let at = b.second.load(Ordering::Acquire);
                at != 0 && at - 1 + self.window() > second && at <= second + 1
            })
            .fold((0, 0), |(q, r), b| {
                (q + b.requests.load(Ordering::Relaxed), r + b.retries.load(Ordering::Relaxed))
            });
        let allowed = (requests as f64 * self.percent / 100.0)
            .max(f64::from(self.min_per_second) * self.window() as f64);
        if (retries as f64) < allowed {
            current.retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_capped_at_a_share_of_requests() {
        let budget = RetryBudget::new(20.0, 0, 10);
        for _ in 0..100 {
            budget.record_request(0);
        }
        let granted = (0..100).filter(|_| budget.try_retry(0)).count();
        assert_eq!(granted, 20, "20% of 100 requests");
    }

    #[test]
    fn the_floor_lets_quiet_services_retry_and_the_window_slides() {
        let budget = RetryBudget::new(20.0, 1, 10);
        let granted = (0..50).filter(|_| budget.try_retry(0)).count();
        assert_eq!(granted, 10, "1 per second over 10 s");
        assert!(!budget.try_retry(5 * SECOND));
        assert!(budget.try_retry(10 * SECOND), "the spent retries left the window");
    }

    #[test]
    fn threads_share_it_without_a_lock() {
        let budget = RetryBudget::new(20.0, 0, 10);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| (0..1000).for_each(|_| budget.record_request(3 * SECOND)));
            }
        });
        let granted = (0..2000).filter(|_| budget.try_retry(3 * SECOND)).count();
        assert_eq!(granted, 800, "20% of 4000 requests counted from four threads");
    }
}
