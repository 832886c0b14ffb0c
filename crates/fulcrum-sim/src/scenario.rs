//! Scenario files (TOML): the workload, the backends and their incidents,
//! and the algorithms to compare. Unknown keys are errors; durations have
//! units.

use std::time::Duration;

use fulcrum_balance::resilience::{BreakerConfig, OutlierConfig, DEFAULT_MAX_EJECTION_PERCENT};
use fulcrum_balance::Algorithm;
use serde::Deserialize;

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random draw (default 1): the same seed gives the same output.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Simulated time (arrivals stop then; requests in flight still finish).
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// A request slower than this failed for its client (default: none).
    #[serde(default, with = "humantime_serde_compat::option")]
    pub timeout: Option<Duration>,
    /// How requests arrive.
    pub arrivals: Arrivals,
    /// The backends.
    pub backends: Backends,
    /// Request keys for the hashing algorithms (default: every request distinct).
    pub keys: Option<Keys>,
    /// Slow-downs and outages in time windows.
    #[serde(default)]
    pub incidents: Vec<Incident>,
    /// Backends removed or added at given times.
    #[serde(default)]
    pub membership: Vec<MembershipChange>,
    /// Algorithms to compare, by config name (default: all of them).
    pub algorithms: Option<Vec<String>>,
    /// Circuit breakers and outlier detection, as a pool configures them
    /// (default: none).
    #[serde(default)]
    pub resilience: Resilience,
    /// Admission control in front of the pool, as `[pools.NAME.admission]`
    /// sets it; each limit listed is a run of its own (default: none).
    pub admission: Option<AdmissionSettings>,
    /// The autoscaling advisor, its advice carried out (default: none).
    pub autoscale: Option<crate::autoscale::AutoscaleSettings>,
}

/// Admission control of the simulated pool: one class.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSettings {
    /// The limits to compare: numbers of requests, or `"adaptive"`.
    pub max_concurrent: Vec<LimitSetting>,
    /// Requests that may wait for a slot (default 1000).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// A request waiting this long is shed (default 1s).
    #[serde(default = "default_deadline", with = "humantime_serde_compat")]
    pub deadline: Duration,
}

fn default_queue() -> usize {
    1000
}

fn default_deadline() -> Duration {
    Duration::from_secs(1)
}

/// One `max_concurrent` value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LimitSetting {
    /// A fixed number of requests.
    Fixed(u32),
    /// `"adaptive"`: the gradient limit.
    Named(String),
}

impl LimitSetting {
    /// How the run is labelled: `limit 64` or `adaptive`.
    pub fn label(&self) -> String {
        match self {
            Self::Fixed(n) => format!("limit {n}"),
            Self::Named(name) => name.clone(),
        }
    }
}

/// One run: an algorithm, under one admission limit when the scenario has any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The algorithm's config name.
    pub algorithm: String,
    /// The admission limit.
    pub limit: Option<LimitSetting>,
}

impl RunSpec {
    /// An algorithm without admission control.
    pub fn algorithm(name: &str) -> Self {
        Self { algorithm: name.to_string(), limit: None }
    }

    /// `p2c` or `p2c, adaptive`.
    pub fn label(&self) -> String {
        match &self.limit {
            Some(limit) => format!("{}, {}", self.algorithm, limit.label()),
            None => self.algorithm.clone(),
        }
    }
}

/// The passive resilience every backend of the scenario has: the keys and
/// defaults of a pool's `circuit_breaker` and `passive_health` (count
/// windows only), driven by the proxy's own [`Availability`] decisions.
///
/// [`Availability`]: fulcrum_balance::resilience::Availability
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resilience {
    /// Per-backend circuit breaker.
    pub circuit_breaker: Option<BreakerSettings>,
    /// Outlier detection.
    pub passive_health: Option<OutlierSettings>,
}

/// `circuit_breaker` keys (resilience4j's defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Percent of failed calls that opens it.
    pub failure_rate_threshold: Option<f64>,
    /// Percent of slow calls that opens it.
    pub slow_call_rate_threshold: Option<f64>,
    /// A call slower than this is slow.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub slow_call_duration: Option<Duration>,
    /// Calls in the window before rates are judged.
    pub minimum_calls: Option<u32>,
    /// Window size, calls.
    pub window: Option<u32>,
    /// How long it stays open.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub wait_in_open: Option<Duration>,
    /// Probes admitted after the wait.
    pub half_open_calls: Option<u32>,
    /// Most concurrent requests per backend.
    pub max_requests: Option<u64>,
}

impl BreakerSettings {
    /// The core's breaker config.
    pub fn config(&self) -> BreakerConfig {
        let d = BreakerConfig::default();
        let nanos = |v: Option<Duration>, default: u64| v.map_or(default, |v| v.as_nanos() as u64);
        BreakerConfig {
            failure_rate_threshold: self.failure_rate_threshold.unwrap_or(d.failure_rate_threshold),
            slow_call_rate_threshold: self.slow_call_rate_threshold.unwrap_or(d.slow_call_rate_threshold),
            slow_call_duration_nanos: nanos(self.slow_call_duration, d.slow_call_duration_nanos),
            minimum_calls: self.minimum_calls.unwrap_or(d.minimum_calls).max(1),
            window: self.window.unwrap_or(d.window).max(1),
            window_kind: d.window_kind,
            wait_in_open_nanos: nanos(self.wait_in_open, d.wait_in_open_nanos),
            half_open_calls: self.half_open_calls.unwrap_or(d.half_open_calls).max(1),
        }
    }
}

/// `passive_health` keys (Envoy's defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSettings {
    /// 5xx in a row that eject.
    pub consecutive_5xx: Option<u32>,
    /// Gateway failures in a row that eject.
    pub consecutive_failures: Option<u32>,
    /// Failure percent over an interval that ejects.
    pub failure_rate: Option<f64>,
    /// Requests an interval needs before its failure rate counts.
    pub min_requests: Option<u32>,
    /// Failure-rate interval.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub interval: Option<Duration>,
    /// The n-th ejection lasts n × this.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub ejection_time: Option<Duration>,
    /// Longest ejection.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub max_ejection_time: Option<Duration>,
    /// Most of the backends ejected at once (at least one).
    pub max_ejection_percent: Option<f64>,
}

impl OutlierSettings {
    /// The core's outlier-detection config.
    pub fn config(&self) -> OutlierConfig {
        let d = OutlierConfig::default();
        let nanos = |v: Option<Duration>, default: u64| v.map_or(default, |v| v.as_nanos() as u64);
        OutlierConfig {
            consecutive_5xx: self.consecutive_5xx.unwrap_or(d.consecutive_5xx),
            consecutive_failures: self.consecutive_failures.unwrap_or(d.consecutive_failures),
            failure_rate: self.failure_rate.or(d.failure_rate),
            min_requests: self.min_requests.unwrap_or(d.min_requests),
            interval_nanos: nanos(self.interval, d.interval_nanos),
            ejection_time_nanos: nanos(self.ejection_time, d.ejection_time_nanos),
            max_ejection_time_nanos: nanos(self.max_ejection_time, d.max_ejection_time_nanos),
        }
    }

    /// The share of backends that may be ejected at once, percent.
    pub fn max_ejection_percent(&self) -> f64 {
        self.max_ejection_percent.unwrap_or(DEFAULT_MAX_EJECTION_PERCENT)
    }
}

fn default_seed() -> u64 {
    1
}

/// Poisson arrivals at `rate` per second, changed by ramps and spikes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    /// Requests per second.
    pub rate: f64,
    /// Linear changes of the rate.
    #[serde(default)]
    pub ramps: Vec<Ramp>,
    /// Windows where the rate is multiplied.
    #[serde(default)]
    pub spikes: Vec<Spike>,
}

/// The rate moves linearly from `from_rate` to `to_rate` between `from` and `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    /// Start of the ramp.
    #[serde(with = "humantime_serde_compat")]
    pub from: Duration,
    /// End of the ramp; the rate stays at `to_rate` after it.
    #[serde(with = "humantime_serde_compat")]
    pub to: Duration,
    /// Rate at `from`.
    pub from_rate: f64,
    /// Rate at `to`.
    pub to_rate: f64,
}

/// The rate is multiplied by `factor` between `from` and `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spike {
    /// Start.
    #[serde(with = "humantime_serde_compat")]
    pub from: Duration,
    /// End.
    #[serde(with = "humantime_serde_compat")]
    pub to: Duration,
    /// Multiplier of the rate.
    pub factor: f64,
}

/// The backends and how long they take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    /// How many.
    pub count: usize,
    /// Service-time distribution.
    pub service: Service,
    /// Per-backend multipliers of the service time (missing ones are 1.0).
    #[serde(default)]
    pub speed_factors: Vec<f64>,
    /// Per-backend weights for the weighted algorithms (missing ones are 1).
    #[serde(default)]
    pub weights: Vec<u32>,
    /// Requests a backend serves at once; more wait in its queue (0 = no limit, the default).
    #[serde(default)]
    pub concurrency: usize,
}

/// A service-time distribution.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "distribution", rename_all = "lowercase")]
pub enum Service {
    /// Always `value`.
    Constant {
        /// The service time.
        #[serde(with = "humantime_serde_compat")]
        value: Duration,
    },
    /// Exponential with mean `mean`.
    Exponential {
        /// The mean service time.
        #[serde(with = "humantime_serde_compat")]
        mean: Duration,
    },
    /// Log-normal with median `median` and standard deviation about `sigma`
    /// (shape σ = sigma / median, accurate for small ratios).
    Lognormal {
        /// The median service time.
        #[serde(with = "humantime_serde_compat")]
        median: Duration,
        /// About the standard deviation.
        #[serde(with = "humantime_serde_compat")]
        sigma: Duration,
    },
}

/// Zipf-distributed request keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Distinct keys.
    pub count: usize,
    /// Zipf exponent (1.0 is classic; higher is more skewed).
    pub exponent: f64,
}

/// A backend behaving differently for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// Which backend (0-based).
    pub backend: usize,
    /// Start.
    #[serde(with = "humantime_serde_compat")]
    pub from: Duration,
    /// End.
    #[serde(with = "humantime_serde_compat")]
    pub to: Duration,
    /// Every request takes exactly this long.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub latency: Option<Duration>,
    /// Service times are multiplied by this.
    pub slowdown: Option<f64>,
    /// Requests fail at once (connection refused).
    #[serde(default)]
    pub outage: bool,
}

/// A membership change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipChange {
    /// When.
    #[serde(with = "humantime_serde_compat")]
    pub at: Duration,
    /// Remove this backend (0-based, as numbered at the start).
    pub remove: Option<usize>,
    /// Add this many new backends (same service distribution).
    pub add: Option<usize>,
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// TOML or field errors.
    #[error("{0}")]
    Parse(String),
    /// Values that parse but make no sense.
    #[error("{0}")]
    Invalid(String),
}

impl Scenario {
    /// Parses and checks a scenario file's text.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        if self.backends.count == 0 {
            return invalid("backends.count must be at least 1".into());
        }
        if !self.arrivals.rate.is_finite() || self.arrivals.rate <= 0.0 {
            return invalid("arrivals.rate must be above 0".into());
        }
        if self.duration.is_zero() {
            return invalid("duration must be above 0".into());
        }
        for (i, incident) in self.incidents.iter().enumerate() {
            if incident.backend >= self.backends.count {
                return invalid(format!(
                    "incidents[{i}].backend: there are only {} backends",
                    self.backends.count
                ));
            }
        }
        for (i, change) in self.membership.iter().enumerate() {
            if change.remove.is_some_and(|r| r >= self.backends.count) {
                return invalid(format!(
                    "membership[{i}].remove: there are only {} backends",
                    self.backends.count
                ));
            }
        }
        if let Some(keys) = &self.keys {
            if keys.count == 0
                || keys.count > 10_000_000
                || !keys.exponent.is_finite()
                || keys.exponent <= 0.0
            {
                return invalid("keys.count must be 1..=10000000 and keys.exponent above 0".into());
            }
        }
        if let Some(admission) = &self.admission {
            let valid = |l: &LimitSetting| match l {
                LimitSetting::Fixed(n) => *n > 0,
                LimitSetting::Named(name) => name == "adaptive",
            };
            if admission.max_concurrent.is_empty() || !admission.max_concurrent.iter().all(valid) {
                return invalid("admission.max_concurrent lists limits above 0 or \"adaptive\"".into());
            }
            if admission.deadline.is_zero() {
                return invalid("admission.deadline must be longer than zero".into());
            }
        }
        if let Some(problem) = self.autoscale.as_ref().and_then(|a| a.problem()) {
            return invalid(problem);
        }
        for name in self.algorithm_names() {
            if Algorithm::from_name(&name).is_none() {
                return invalid(format!(
                    "unknown algorithm `{name}`; expected one of {}",
                    Algorithm::NAMES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Every run: each algorithm under each admission limit.
    pub fn runs(&self) -> Vec<RunSpec> {
        let limits: Vec<Option<LimitSetting>> = match &self.admission {
            Some(admission) => admission.max_concurrent.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        self.algorithm_names()
            .iter()
            .flat_map(|algorithm| {
                limits.iter().map(|limit| RunSpec { algorithm: algorithm.clone(), limit: limit.clone() })
            })
            .collect()
    }

    /// The algorithms to compare.
    pub fn algorithm_names(&self) -> Vec<String> {
        self.algorithms.clone().unwrap_or_else(|| Algorithm::NAMES.iter().map(|s| s.to_string()).collect())
    }
}

/// Durations as humantime strings (`"250ms"`), for serde.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration ({e}); write e.g. \"250ms\""))
        })
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}
