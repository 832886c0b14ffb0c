//! Active health-check hysteresis (HAProxy's `rise`/`fall`): a backend goes
//! down after `fall` consecutive failed probes and comes back after `rise`
//! consecutive good ones, so one lost probe does not flap it. A good probe
//! slower than the degraded threshold marks it `degraded`: it keeps taking
//! traffic at a reduced weight.

use std::fmt;

/// What a backend's probes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet (or not probed at all); takes traffic.
    Unknown,
    /// Probes pass.
    Healthy,
    /// Probes pass but slowly; takes reduced traffic.
    Degraded,
    /// `fall` probes in a row failed; takes no traffic.
    Unhealthy,
}

impl Health {
    /// The state's name in `/stats` and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }

    /// Whether the backend may take new requests.
    pub fn serves(self) -> bool {
        self != Health::Unhealthy
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One probe's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Passed in time.
    Pass,
    /// Passed, but slower than the degraded threshold.
    Slow,
    /// Failed (refused, timed out, wrong status or body).
    Fail,
}

/// Rise/fall hysteresis over probe results.
#[derive(Debug, Clone)]
pub struct HealthChecker {
    rise: u32,
    fall: u32,
    health: Health,
    passes: u32,
    failures: u32,
}

impl HealthChecker {
    /// A checker needing `rise` good probes to come up and `fall` bad ones to go down.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self { rise: rise.max(1), fall: fall.max(1), health: Health::Unknown, passes: 0, failures: 0 }
    }

    /// The current state.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Records a probe; returns the new state when it changed.
    pub fn record(&mut self, result: ProbeResult) -> Option<Health> {
        let before = self.health;
        match result {
            ProbeResult::Fail => {
                self.passes = 0;
                self.failures += 1;
                if self.failures >= self.fall {
                    self.health = Health::Unhealthy;
                }
            }
            ProbeResult::Pass | ProbeResult::Slow => {
                self.failures = 0;
                self.passes += 1;
                let up = if result == ProbeResult::Slow { Health::Degraded } else { Health::Healthy };
                // A backend that is down needs `rise` passes; one that serves
                // (unknown/healthy/degraded) moves between those at once.
                if self.health != Health::Unhealthy || self.passes >= self.rise {
                    self.health = up;
                }
            }
        }
        (self.health != before).then_some(self.health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeResult::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let mut checker = HealthChecker::new(2, 3);
        assert_eq!(checker.record(Pass), Some(Health::Healthy));
        assert_eq!(checker.record(Fail), None);
        assert_eq!(checker.record(Fail), None);
        assert_eq!(checker.record(Fail), Some(Health::Unhealthy));
        assert_eq!(checker.record(Pass), None, "one pass is not enough to rise");
        assert_eq!(checker.record(Fail), None);
        assert_eq!(checker.record(Pass), None);
        assert_eq!(checker.record(Pass), Some(Health::Healthy));
    }

    #[test]
    fn an_isolated_failure_does_not_flap() {
        let mut checker = HealthChecker::new(2, 3);
        for _ in 0..10 {
            checker.record(Pass);
            checker.record(Fail);
            checker.record(Fail);
            assert!(checker.health().serves());
        }
    }

    #[test]
    fn slow_probes_degrade_without_removing() {
        let mut checker = HealthChecker::new(2, 3);
        checker.record(Pass);
        assert_eq!(checker.record(Slow), Some(Health::Degraded));
        assert!(checker.health().serves());
        assert_eq!(checker.record(Pass), Some(Health::Healthy));
    }
}
