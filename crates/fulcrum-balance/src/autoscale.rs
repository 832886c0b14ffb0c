//! The autoscaling advisor: how many backends a pool should have, from what
//! the balancer sees (the enterprise-framework seed's auto-scaling manager,
//! made real).
//!
//! Each evaluation takes the mean number of requests in flight over the
//! last period and
//!
//! ```text
//! utilization = load / (backends × per_backend_concurrency)
//! predicted   = Holt forecast of the load, `predict` ahead
//! needed      = ⌈max(load, predicted) / (per_backend_concurrency × target_utilization)⌉,
//!               bounded by min..=max
//! ```
//!
//! The forecast is Holt's linear exponential smoothing (C. C. Holt, 1957,
//! "Forecasting seasonals and trends by exponentially weighted moving
//! averages"): a smoothed level and a smoothed trend per second, so a ramp
//! is met before it arrives. Decisions are damped like Kubernetes' HPA
//! stabilization: any decision blocks further scale-ups for
//! `scale_up_cooldown` and scale-downs for `scale_down_cooldown`, so the
//! advice never flaps between directions.
//!
//! A pure state machine: times are arguments (monotonic nanos).

/// Weight of the newest observation in the level.
const LEVEL_SMOOTHING: f64 = 0.5;
/// Weight of the newest slope in the trend.
const TREND_SMOOTHING: f64 = 0.3;

/// A pool's scaling policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Fewest backends to advise.
    pub min: u32,
    /// Most backends to advise.
    pub max: u32,
    /// Utilization to size for, in (0, 1].
    pub target_utilization: f64,
    /// Requests one backend serves at once at full utilization.
    pub per_backend_concurrency: f64,
    /// Nanos after any decision before a scale-up.
    pub scale_up_cooldown: u64,
    /// Nanos after any decision before a scale-down.
    pub scale_down_cooldown: u64,
    /// How far ahead the load is forecast, nanos (0: no forecast).
    pub predict: u64,
}

/// Holt's linear exponential smoothing over an irregularly sampled series.
#[derive(Debug, Clone, Default)]
pub struct Holt {
    level: f64,
    /// Change per second.
    trend: f64,
    last: Option<u64>,
}

impl Holt {
    /// Adds the observation `value` made at `now`.
    pub fn update(&mut self, now: u64, value: f64) {
        let Some(last) = self.last.filter(|&l| now > l) else {
            if self.last.is_none() {
                self.level = value;
            }
            self.last = Some(now);
            return;
        };
        let seconds = (now - last) as f64 / 1e9;
        let previous = self.level;
        self.level = LEVEL_SMOOTHING * value + (1.0 - LEVEL_SMOOTHING) * (previous + self.trend * seconds);
        self.trend =
            TREND_SMOOTHING * ((self.level - previous) / seconds) + (1.0 - TREND_SMOOTHING) * self.trend;
        self.last = Some(now);
    }

    /// The value forecast `ahead` nanos after the last observation (never below 0).
    pub fn forecast(&self, ahead: u64) -> f64 {
        (self.level + self.trend * ahead as f64 / 1e9).max(0.0)
    }
}

/// Which way an evaluation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// More backends advised.
    Up,
    /// Fewer backends advised.
    Down,
    /// The advice stands (within target, or a cooldown holds a change back).
    Hold,
}

impl Direction {
    /// `up`, `down` or `hold`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Hold => "hold",
        }
    }
}

/// One evaluation and its figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// When (monotonic nanos).
    pub at: u64,
    /// Backends serving now.
    pub current: u32,
    /// Backends advised after this evaluation.
    pub desired: u32,
    /// Mean requests in flight over the period.
    pub load: f64,
    /// `load` over the current capacity.
    pub utilization: f64,
    /// The forecast load `predict` ahead.
    pub predicted_load: f64,
    /// The forecast over the current capacity.
    pub predicted_utilization: f64,
    /// Up, down or hold.
    pub direction: Direction,
    /// Why, in words, with the figures.
    pub reason: String,
}

/// The advisor of one pool.
#[derive(Debug, Clone)]
pub struct Advisor {
    policy: Policy,
    holt: Holt,
    /// The last advice given (`None` before the first change).
    advised: Option<u32>,
    last_change: Option<u64>,
}

impl Advisor {
    /// An advisor with no history.
    pub fn new(policy: Policy) -> Self {
        Self { policy, holt: Holt::default(), advised: None, last_change: None }
    }

    /// The policy it follows.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Evaluates at `now` with `load` (mean requests in flight over the
    /// period) and `current` serving backends.
    pub fn evaluate(&mut self, now: u64, load: f64, current: u32) -> Decision {
        let p = self.policy;
        self.holt.update(now, load);
        let predicted_load = if p.predict > 0 { self.holt.forecast(p.predict) } else { load };
        let capacity = f64::from(current.max(1)) * p.per_backend_concurrency;
        let per_backend = p.per_backend_concurrency * p.target_utilization;
        let needed = ((load.max(predicted_load) / per_backend).ceil() as u32).clamp(p.min, p.max);
        let advised = self.advised.unwrap_or(current);
        let since_change = self.last_change.map_or(u64::MAX, |t| now.saturating_sub(t));
        let figures = format!(
            "utilization {:.0}% (predicted {:.0}% in {}s) against a target of {:.0}%",
            load / capacity * 100.0,
            predicted_load / capacity * 100.0,
            p.predict / 1_000_000_000,
            p.target_utilization * 100.0
        );
        let (direction, desired, reason) = if needed > advised {
            if since_change >= p.scale_up_cooldown {
                (Direction::Up, needed, format!("scale up {advised} -> {needed}: {figures}"))
            } else {
                let left = (p.scale_up_cooldown - since_change) as f64 / 1e9;
                (
                    Direction::Hold,
                    advised,
                    format!("{needed} needed, held by the scale-up cooldown ({left:.0}s left): {figures}"),
                )
            }
        } else if needed < advised {
            if since_change >= p.scale_down_cooldown {
                (Direction::Down, needed, format!("scale down {advised} -> {needed}: {figures}"))
            } else {
                let left = (p.scale_down_cooldown - since_change) as f64 / 1e9;
                (
                    Direction::Hold,
                    advised,
                    format!("{needed} needed, held by the scale-down cooldown ({left:.0}s left): {figures}"),
                )
            }
        } else {
            (Direction::Hold, advised, format!("{advised} backends fit: {figures}"))
        };
        if direction != Direction::Hold {
            self.advised = Some(desired);
            self.last_change = Some(now);
        }
        Decision {
            at: now,
            current,
            desired,
            load,
            utilization: load / capacity,
            predicted_load,
            predicted_utilization: predicted_load / capacity,
            direction,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn policy() -> Policy {
        Policy {
            min: 2,
            max: 20,
            target_utilization: 0.7,
            per_backend_concurrency: 10.0,
            scale_up_cooldown: 60 * SECOND,
            scale_down_cooldown: 300 * SECOND,
            predict: 30 * SECOND,
        }
    }

    #[test]
    fn holt_follows_a_linear_ramp_and_forecasts_it() {
        let mut holt = Holt::default();
        for t in 0..60 {
            holt.update(t * SECOND, 2.0 * t as f64);
        }
        let ahead = holt.forecast(10 * SECOND);
        assert!((ahead - 2.0 * 69.0).abs() < 2.0, "a slope of 2/s from 118 at t=59: {ahead}");
    }

    #[test]
    fn a_ramp_is_met_before_utilization_reaches_the_target() {
        // Load climbs 0.1 requests a second on 2 backends (capacity 20, target 14 in flight).
        let mut advisor = Advisor::new(policy());
        let mut first_up = None;
        for step in 0..30 {
            let now = step * 10 * SECOND;
            let load = 0.1 * (step * 10) as f64;
            let decision = advisor.evaluate(now, load, 2);
            if decision.direction == Direction::Up && first_up.is_none() {
                first_up = Some(decision);
            }
        }
        let up = first_up.expect("a scale-up");
        assert!(up.utilization < 0.7, "advised before the target was reached: {up:?}");
        assert!(up.predicted_utilization > 0.7, "because of the forecast: {up:?}");
    }

    #[test]
    fn without_a_forecast_the_same_ramp_is_met_later() {
        let mut advisor = Advisor::new(Policy { predict: 0, ..policy() });
        let first_up = (0..30)
            .map(|step| advisor.evaluate(step * 10 * SECOND, 0.1 * (step * 10) as f64, 2))
            .find(|d| d.direction == Direction::Up)
            .unwrap();
        assert!(first_up.utilization > 0.7, "{first_up:?}");
    }

    #[test]
    fn cooldowns_space_decisions_and_block_the_opposite_direction() {
        let mut advisor = Advisor::new(policy());
        let mut ups = Vec::new();
        let mut downs = Vec::new();
        // Load jumps to 100 (needs 15), stays 3 minutes, then falls to 5.
        for step in 0..80 {
            let now = step * 10 * SECOND;
            let load = if step < 18 { 100.0 } else { 5.0 };
            let decision = advisor.evaluate(now, load, 2);
            match decision.direction {
                Direction::Up => ups.push((now, decision.desired)),
                Direction::Down => downs.push((now, decision.desired)),
                Direction::Hold => {}
            }
        }
        assert_eq!(ups, vec![(0, 15)], "one scale-up to what the load needs");
        assert_eq!(downs.len(), 1, "{downs:?}");
        let (at, desired) = downs[0];
        assert!(at >= 300 * SECOND, "no scale-down within its cooldown of the scale-up: {at}");
        assert_eq!(desired, 2, "down to min (5 in flight needs 1)");
    }

    #[test]
    fn advice_stays_within_min_and_max() {
        let mut advisor = Advisor::new(policy());
        assert_eq!(advisor.evaluate(0, 10_000.0, 3).desired, 20);
        let mut advisor = Advisor::new(policy());
        assert_eq!(advisor.evaluate(0, 0.0, 0).desired, 2, "an empty pool is advised its min");
    }
}
