//! Whether one backend may take a request, from what passive signals say:
//! its circuit breaker ([`CircuitBreaker`], resilience4j), outlier
//! detection ([`OutlierDetector`], Envoy) and its concurrency limit
//! (Envoy's `max_requests`). One value per backend, driven with the time
//! as an argument, so the proxy (behind a mutex, mirrored into atomics for
//! its candidate filter) and the simulator (in virtual time) make the very
//! same decisions.

use super::{BreakerConfig, BreakerState, CircuitBreaker, Outcome, OutlierConfig, OutlierDetector, Permit};

/// The passive availability state of one backend.
#[derive(Debug, Clone)]
pub struct Availability {
    breaker: Option<CircuitBreaker>,
    outlier: Option<OutlierDetector>,
    max_requests: Option<u64>,
    ejected_until: u64,
}

/// What recording an outcome changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// The breaker's state before and after, when it changed.
    pub breaker: Option<(BreakerState, BreakerState)>,
    /// The ejection's length in nanoseconds, when outlier detection ejected.
    pub ejected_for: Option<u64>,
}

impl Availability {
    /// A backend with these (optional) guards.
    pub fn new(
        breaker: Option<BreakerConfig>,
        outlier: Option<OutlierConfig>,
        max_requests: Option<u64>,
    ) -> Self {
        Self {
            breaker: breaker.map(CircuitBreaker::new),
            outlier: outlier.map(OutlierDetector::new),
            max_requests,
            ejected_until: 0,
        }
    }

    /// Whether anything is guarded at all (else every call is admitted
    /// and nothing needs recording).
    pub fn is_guarded(&self) -> bool {
        self.breaker.is_some() || self.outlier.is_some()
    }

    /// Whether the backend may be offered a request at `now` with
    /// `in_flight` requests: not ejected, its breaker would admit a call,
    /// below its concurrency limit.
    pub fn serves(&self, now: u64, in_flight: u64) -> bool {
        self.ejected_until <= now
            && self.breaker.as_ref().is_none_or(|b| b.allows(now))
            && self.max_requests.is_none_or(|max| in_flight < max)
    }

    /// Until when outlier detection has the backend ejected (0: never was).
    pub fn ejected_until(&self) -> u64 {
        self.ejected_until
    }

    /// Takes the breaker's permit for a call at `now`: `Ok(None)` without a
    /// breaker, `Err(Refused)` when the breaker refuses the call.
    pub fn admit(&mut self, now: u64) -> Result<Option<Permit>, Refused> {
        match &mut self.breaker {
            None => Ok(None),
            Some(breaker) => breaker.try_acquire(now).map(Some).ok_or(Refused),
        }
    }

    /// Hands back the permit of a call that ended without an outcome.
    pub fn cancel(&mut self, permit: Permit) {
        if let Some(breaker) = &mut self.breaker {
            breaker.cancel(permit);
        }
    }

    /// Records how a call admitted with `permit` ended at `now` after
    /// `duration_nanos`. `may_eject` answers whether the pool's ejection
    /// cap allows one more ejection; it is asked only when outlier
    /// detection is about to eject.
    pub fn record(
        &mut self,
        outcome: Outcome,
        permit: Option<Permit>,
        duration_nanos: u64,
        now: u64,
        may_eject: impl FnOnce() -> bool,
    ) -> Changes {
        let mut changes = Changes::default();
        if let (Some(breaker), Some(permit)) = (&mut self.breaker, permit) {
            let before = breaker.state();
            breaker.record(permit, outcome != Outcome::Success, duration_nanos, now);
            let after = breaker.state();
            changes.breaker = (before != after).then_some((before, after));
        }
        if let Some(outlier) = &mut self.outlier {
            if let Some(length) = outlier.record(outcome, now, may_eject) {
                self.ejected_until = now + length;
                changes.ejected_for = Some(length);
            }
        }
        changes
    }

    /// The breaker, when configured (for its state and reopening time).
    pub fn breaker(&self) -> Option<&CircuitBreaker> {
        self.breaker.as_ref()
    }

    /// How many times outlier detection has ejected the backend (after decay).
    pub fn ejections(&self) -> u32 {
        self.outlier.as_ref().map_or(0, OutlierDetector::ejections)
    }
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn breaker() -> BreakerConfig {
        BreakerConfig {
            minimum_calls: 4,
            window: 4,
            wait_in_open_nanos: SECOND,
            half_open_calls: 1,
            ..Default::default()
        }
    }

    fn outlier() -> OutlierConfig {
        OutlierConfig { consecutive_5xx: 0, consecutive_failures: 3, ..Default::default() }
    }

    fn fail(a: &mut Availability, now: u64) -> Changes {
        let permit = a.admit(now).expect("admitted");
        a.record(Outcome::GatewayFailure, permit, 1, now, || true)
    }

    #[test]
    fn failures_open_the_breaker_and_eject_and_both_end_in_time() {
        let mut a = Availability::new(Some(breaker()), Some(outlier()), None);
        assert!(a.serves(0, 0));
        fail(&mut a, 0);
        fail(&mut a, 0);
        assert_eq!(fail(&mut a, 0).ejected_for, Some(30 * SECOND), "three gateway failures in a row eject");
        assert!(!a.serves(1, 0));
        let opened = fail(&mut a, 0);
        assert_eq!(opened.breaker, Some((BreakerState::Closed, BreakerState::Open)));
        assert!(!a.serves(29 * SECOND, 0), "still ejected");
        assert!(a.serves(30 * SECOND, 0), "the ejection ended and the breaker's wait is over");
        let probe = a.admit(30 * SECOND).expect("a half-open probe");
        assert!(!a.serves(30 * SECOND, 0), "the only probe slot is taken");
        a.cancel(probe.expect("a breaker permit"));
        assert!(a.serves(30 * SECOND, 0), "a cancelled probe frees its slot");
    }

    #[test]
    fn the_concurrency_limit_and_no_guards() {
        let limited = Availability::new(None, None, Some(2));
        assert!(limited.serves(0, 1) && !limited.serves(0, 2));
        let mut open = Availability::new(None, None, None);
        assert!(!open.is_guarded());
        assert_eq!(open.admit(0), Ok(None));
        assert_eq!(open.record(Outcome::GatewayFailure, None, 1, 0, || true), Changes::default());
    }
}
