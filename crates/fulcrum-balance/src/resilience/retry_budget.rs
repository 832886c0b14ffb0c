//! A retry budget (Finagle's `RetryBudget`, linkerd's `retry_budget`):
//! retries may add at most `percent`% to the requests of the last
//! `window`, plus a small floor so quiet services can still retry. A
//! failing backend then costs a bounded amount of extra load instead of a
//! retry storm.
//!
//! Requests and retries are counted in one-second buckets over the window;
//! the caller passes the time.

use std::collections::VecDeque;

const SECOND: u64 = 1_000_000_000;

/// Retries allowed as a share of recent requests.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    percent: f64,
    min_per_second: u32,
    window_seconds: u64,
    /// (second, requests, retries), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
}

impl RetryBudget {
    /// A budget of `percent`% of requests over `window_seconds`, with at
    /// least `min_per_second` retries per second of window.
    pub fn new(percent: f64, min_per_second: u32, window_seconds: u64) -> Self {
        Self { percent, min_per_second, window_seconds: window_seconds.max(1), buckets: VecDeque::new() }
    }

    fn bucket(&mut self, now: u64) -> &mut (u64, u64, u64) {
        let second = now / SECOND;
        while self.buckets.front().is_some_and(|b| b.0 + self.window_seconds <= second) {
            self.buckets.pop_front();
        }
        if self.buckets.back().is_none_or(|b| b.0 != second) {
            self.buckets.push_back((second, 0, 0));
        }
        self.buckets.back_mut().expect("just pushed")
    }

    /// Counts a first attempt.
    pub fn record_request(&mut self, now: u64) {
        self.bucket(now).1 += 1;
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_retry(&mut self, now: u64) -> bool {
        self.bucket(now);
        let (requests, retries) = self.buckets.iter().fold((0, 0), |(q, r), b| (q + b.1, r + b.2));
        let allowed = (requests as f64 * self.percent / 100.0)
            .max(f64::from(self.min_per_second) * self.window_seconds as f64);
        if (retries as f64) < allowed {
            self.bucket(now).2 += 1;
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
        let mut budget = RetryBudget::new(20.0, 0, 10);
        for _ in 0..100 {
            budget.record_request(0);
        }
        let granted = (0..100).filter(|_| budget.try_retry(0)).count();
        assert_eq!(granted, 20, "20% of 100 requests");
    }

    #[test]
    fn the_floor_lets_quiet_services_retry_and_the_window_slides() {
        let mut budget = RetryBudget::new(20.0, 1, 10);
        let granted = (0..50).filter(|_| budget.try_retry(0)).count();
        assert_eq!(granted, 10, "1 per second over 10 s");
        assert!(!budget.try_retry(5 * SECOND));
        assert!(budget.try_retry(10 * SECOND), "the spent retries left the window");
    }
}
