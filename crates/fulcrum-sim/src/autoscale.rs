//! `[autoscale]` in a scenario: the proxy's autoscaling advisor
//! ([`fulcrum_balance::autoscale::Advisor`]) watching the simulated pool,
//! with its advice carried out — backends join `provision_delay` after a
//! scale-up (as instances boot) and leave at once on a scale-down (newest
//! first, their requests in flight finishing) — so an operator can replay a
//! day's ramp and see the decisions, desired against actual against load.

use std::time::Duration;

use fulcrum_balance::autoscale::{Advisor, Decision, Direction, Policy};
use serde::Deserialize;

/// The advisor's settings: the keys and defaults of `[pools.NAME.autoscale]`,
/// plus how long a new backend takes to join.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleSettings {
    /// Fewest backends advised (default 1).
    #[serde(default = "default_min")]
    pub min: u32,
    /// Most backends advised.
    pub max: u32,
    /// Utilization to size for (default 0.7).
    #[serde(default = "default_target")]
    pub target_utilization: f64,
    /// Requests one backend serves at once at full utilization (default 100).
    #[serde(default = "default_per_backend")]
    pub per_backend_concurrency: u32,
    /// After any decision, no scale-up for this long (default 60s).
    #[serde(default = "default_up", with = "crate::scenario::humantime_serde_compat")]
    pub scale_up_cooldown: Duration,
    /// After any decision, no scale-down for this long (default 300s).
    #[serde(default = "default_down", with = "crate::scenario::humantime_serde_compat")]
    pub scale_down_cooldown: Duration,
    /// Forecast horizon (default 30s).
    #[serde(default = "default_predict", with = "crate::scenario::humantime_serde_compat")]
    pub predict: Duration,
    /// Evaluation period (default 10s).
    #[serde(default = "default_interval", with = "crate::scenario::humantime_serde_compat")]
    pub interval: Duration,
    /// Time from a scale-up to the new backend taking traffic (default 30s).
    #[serde(default = "default_provision", with = "crate::scenario::humantime_serde_compat")]
    pub provision_delay: Duration,
}

fn default_min() -> u32 {
    1
}
fn default_target() -> f64 {
    0.7
}
fn default_per_backend() -> u32 {
    100
}
fn default_up() -> Duration {
    Duration::from_secs(60)
}
fn default_down() -> Duration {
    Duration::from_secs(300)
}
fn default_predict() -> Duration {
    Duration::from_secs(30)
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_provision() -> Duration {
    Duration::from_secs(30)
}

impl AutoscaleSettings {
    /// What makes no sense, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.min == 0 || self.max < self.min {
            return Some("autoscale: min must be at least 1 and max at least min".into());
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return Some("autoscale.target_utilization must be above 0 and at most 1".into());
        }
        if self.per_backend_concurrency == 0 || self.interval.is_zero() {
            return Some("autoscale: per_backend_concurrency and interval must be above 0".into());
        }
        None
    }

    fn policy(&self) -> Policy {
        Policy {
            min: self.min,
            max: self.max,
            target_utilization: self.target_utilization,
            per_backend_concurrency: f64::from(self.per_backend_concurrency),
            scale_up_cooldown: self.scale_up_cooldown.as_nanos() as u64,
            scale_down_cooldown: self.scale_down_cooldown.as_nanos() as u64,
            predict: self.predict.as_nanos() as u64,
        }
    }
}

/// One simulated second as the advisor saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    /// Requests in flight.
    pub in_flight: f64,
    /// Backends the load needs at the target utilization (unrounded).
    pub needed: f64,
    /// Backends taking traffic.
    pub serving: u32,
    /// Backends advised.
    pub desired: u32,
}

/// What the advisor saw and decided over a run.
#[derive(Debug, Clone, Default)]
pub struct AutoscaleTrace {
    /// Every simulated second.
    pub per_second: Vec<Second>,
    /// Every change of advice: (second, decision).
    pub decisions: Vec<(u64, Decision)>,
}

/// The advisor inside one run, sampling once a simulated second.
#[derive(Debug)]
pub struct Autoscaler {
    advisor: Advisor,
    /// Requests in flight one backend takes at the target utilization.
    per_backend_at_target: f64,
    interval: u64,
    period_start: u64,
    sum: f64,
    samples: u32,
    desired: Option<u32>,
    /// Nanos from a scale-up to the backend joining.
    pub provision_delay: u64,
    /// What it saw and decided.
    pub trace: AutoscaleTrace,
}

/// What the engine should do after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Start this many backends (they join after the provision delay).
    Add(u32),
    /// Take the pool down to this many backends.
    ShrinkTo(u32),
}

impl Autoscaler {
    /// An advisor with `settings`, starting at time 0.
    pub fn new(settings: &AutoscaleSettings) -> Self {
        Self {
            advisor: Advisor::new(settings.policy()),
            per_backend_at_target: f64::from(settings.per_backend_concurrency) * settings.target_utilization,
            interval: settings.interval.as_nanos() as u64,
            period_start: 0,
            sum: 0.0,
            samples: 0,
            desired: None,
            provision_delay: settings.provision_delay.as_nanos() as u64,
            trace: AutoscaleTrace::default(),
        }
    }

    /// One second's sample: `in_flight` requests, `serving` backends taking
    /// traffic and `booting` ones on their way; evaluates when a period ended.
    pub fn sample(&mut self, now: u64, in_flight: f64, serving: u32, booting: u32) -> Action {
        self.sum += in_flight;
        self.samples += 1;
        let evaluate = now.saturating_sub(self.period_start) >= self.interval;
        let mut action = Action::None;
        if evaluate {
            let load = self.sum / f64::from(self.samples.max(1));
            (self.sum, self.samples, self.period_start) = (0.0, 0, now);
            let decision = self.advisor.evaluate(now, load, serving);
            if decision.direction != Direction::Hold {
                self.desired = Some(decision.desired);
                action = match decision.direction {
                    Direction::Up => Action::Add(decision.desired.saturating_sub(serving + booting)),
                    _ => Action::ShrinkTo(decision.desired),
                };
                self.trace.decisions.push((now / 1_000_000_000, decision));
            }
        }
        self.trace.per_second.push(Second {
            in_flight,
            needed: in_flight / self.per_backend_at_target,
            serving,
            desired: self.desired.unwrap_or(serving),
        });
        action
    }
}
