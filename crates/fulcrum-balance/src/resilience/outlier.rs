//! Passive health — outlier detection with Envoy's semantics
//! (`outlier_detection`): a backend is ejected after `consecutive_5xx`
//! server errors in a row, after `consecutive_failures` gateway failures
//! in a row (connect failures, resets, timeouts, 502/503/504), or when its
//! failure rate over an interval reaches `failure_rate`% with at least
//! `min_requests` requests. An ejection lasts `ejection_time × n` for the
//! n-th ejection (capped at `max_ejection_time`), and n decays by one for
//! every interval spent not ejected. The pool caps how many backends may
//! be ejected at once (`max_ejection_percent`, at least one): the caller
//! says whether an ejection is allowed.

/// How a request to a backend ended, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any non-5xx response.
    Success,
    /// A 5xx response other than 502/503/504.
    ServerError,
    /// Connect failure, reset, timeout, or 502/503/504.
    GatewayFailure,
}

/// Outlier-detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// 5xx (any) in a row that eject; 0 = off.
    pub consecutive_5xx: u32,
    /// Gateway failures in a row that eject; 0 = off.
    pub consecutive_failures: u32,
    /// Failure percent over an interval that ejects; `None` = off.
    pub failure_rate: Option<f64>,
    /// Requests an interval needs before its failure rate counts.
    pub min_requests: u32,
    /// Base ejection time.
    pub ejection_time_nanos: u64,
    /// Longest ejection.
    pub max_ejection_time_nanos: u64,
    /// Length of a failure-rate interval (and of one multiplier decay step).
    pub interval_nanos: u64,
}

impl Default for OutlierConfig {
    /// Envoy's defaults (`outlier_detection`), with the failure-rate
    /// check off.
    fn default() -> Self {
        const SECOND: u64 = 1_000_000_000;
        Self {
            consecutive_5xx: 5,
            consecutive_failures: 5,
            failure_rate: None,
            min_requests: 50,
            ejection_time_nanos: 30 * SECOND,
            max_ejection_time_nanos: 300 * SECOND,
            interval_nanos: 10 * SECOND,
        }
    }
}

/// Envoy's default `max_ejection_percent`: most of a pool ejected at once.
pub const DEFAULT_MAX_EJECTION_PERCENT: f64 = 10.0;

/// Outlier state of one backend.
#[derive(Debug, Clone)]
pub struct OutlierDetector {
    config: OutlierConfig,
    consecutive_5xx: u32,
    consecutive_failures: u32,
    interval_start: u64,
    interval_requests: u32,
    interval_failures: u32,
    ejections: u32,
    ejected_until: Option<u64>,
}

impl OutlierDetector {
    /// A detector with nothing recorded.
    pub fn new(config: OutlierConfig) -> Self {
        Self {
            config,
            consecutive_5xx: 0,
            consecutive_failures: 0,
            interval_start: 0,
            interval_requests: 0,
            interval_failures: 0,
            ejections: 0,
            ejected_until: None,
        }
    }

    /// Whether the backend is ejected at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// How many times it has been ejected (after decay).
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Records a request's outcome at `now`. When a threshold is crossed
    /// and `may_eject()` (the pool's cap allows it; asked only then), the
    /// backend is ejected and this returns the ejection's length in
    /// nanoseconds.
    pub fn record(&mut self, outcome: Outcome, now: u64, may_eject: impl FnOnce() -> bool) -> Option<u64> {
        self.roll_interval(now);
        self.interval_requests += 1;
        match outcome {
            Outcome::Success => {
                self.consecutive_5xx = 0;
                self.consecutive_failures = 0;
            }
            Outcome::ServerError => {
                self.consecutive_5xx += 1;
                self.consecutive_failures = 0;
                self.interval_failures += 1;
            }
            Outcome::GatewayFailure => {
                self.consecutive_5xx += 1;
                self.consecutive_failures += 1;
                self.interval_failures += 1;
            }
        }
        if self.is_ejected(now) {
            return None;
        }
        let c = &self.config;
        let rate_exceeded = c.failure_rate.is_some_and(|threshold| {
            self.interval_requests >= c.min_requests.max(1)
                && f64::from(self.interval_failures) * 100.0 / f64::from(self.interval_requests) >= threshold
        });
        let tripped = (c.consecutive_5xx > 0 && self.consecutive_5xx >= c.consecutive_5xx)
            || (c.consecutive_failures > 0 && self.consecutive_failures >= c.consecutive_failures)
            || rate_exceeded;
        (tripped && may_eject()).then(|| self.eject(now))
    }

    fn eject(&mut self, now: u64) -> u64 {
        self.ejections += 1;
        let length = self
            .config
            .ejection_time_nanos
            .saturating_mul(u64::from(self.ejections))
            .min(self.config.max_ejection_time_nanos);
        self.ejected_until = Some(now + length);
        self.consecutive_5xx = 0;
        self.consecutive_failures = 0;
        self.interval_requests = 0;
        self.interval_failures = 0;
        length
    }

    fn roll_interval(&mut self, now: u64) {
        let interval = self.config.interval_nanos.max(1);
        while now >= self.interval_start + interval {
            self.interval_start += interval;
            self.interval_requests = 0;
            self.interval_failures = 0;
            if !self.is_ejected(self.interval_start) && self.ejections > 0 {
                self.ejections -= 1;
            }
            if now >= self.interval_start + interval * 1000 {
                self.interval_start = now - now % interval;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_failures: 3,
            failure_rate: Some(50.0),
            min_requests: 20,
            ejection_time_nanos: 30 * SECOND,
            max_ejection_time_nanos: 300 * SECOND,
            interval_nanos: 10 * SECOND,
        }
    }

    #[test]
    fn consecutive_5xx_eject_and_a_success_resets_the_count() {
        let mut d = OutlierDetector::new(config());
        for _ in 0..4 {
            assert_eq!(d.record(Outcome::ServerError, 0, || true), None);
        }
        d.record(Outcome::Success, 0, || true);
        for _ in 0..4 {
            assert_eq!(d.record(Outcome::ServerError, 0, || true), None);
        }
        assert_eq!(d.record(Outcome::ServerError, 0, || true), Some(30 * SECOND));
        assert!(d.is_ejected(29 * SECOND) && !d.is_ejected(30 * SECOND));
    }

    #[test]
    fn gateway_failures_eject_sooner() {
        let mut d = OutlierDetector::new(config());
        d.record(Outcome::GatewayFailure, 0, || true);
        d.record(Outcome::GatewayFailure, 0, || true);
        assert_eq!(d.record(Outcome::GatewayFailure, 0, || true), Some(30 * SECOND));
    }

    #[test]
    fn ejection_time_grows_with_repeated_ejections_up_to_the_cap() {
        let mut d = OutlierDetector::new(OutlierConfig { interval_nanos: 1000 * SECOND, ..config() });
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..12 {
            let length = (0..3).find_map(|_| d.record(Outcome::GatewayFailure, now, || true)).unwrap();
            lengths.push(length / SECOND);
            now += length;
        }
        assert_eq!(lengths, [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]);
    }

    #[test]
    fn the_multiplier_decays_while_healthy() {
        let mut d = OutlierDetector::new(config());
        for _ in 0..3 {
            d.record(Outcome::GatewayFailure, 0, || true);
        }
        assert_eq!(d.ejections(), 1);
        d.record(Outcome::Success, 100 * SECOND, || true);
        assert_eq!(d.ejections(), 0);
    }

    #[test]
    fn the_pool_cap_can_refuse_an_ejection() {
        let mut d = OutlierDetector::new(config());
        for _ in 0..10 {
            assert_eq!(d.record(Outcome::GatewayFailure, 0, || false), None);
        }
        assert!(!d.is_ejected(0));
        assert!(
            d.record(Outcome::GatewayFailure, 0, || true).is_some(),
            "still over the threshold when allowed"
        );
    }

    #[test]
    fn failure_rate_needs_enough_requests() {
        let mut d =
            OutlierDetector::new(OutlierConfig { consecutive_5xx: 0, consecutive_failures: 0, ..config() });
        for i in 0..19 {
            let outcome = if i % 2 == 0 { Outcome::ServerError } else { Outcome::Success };
            assert_eq!(d.record(outcome, SECOND, || true), None);
        }
        assert!(d.record(Outcome::ServerError, SECOND, || true).is_some(), "10 of 20 = 50%");
    }
}
