//! Typed resilience settings of a pool (`health_check`, `passive_health`,
//! `circuit_breaker`, `retries`), each with its defaults in one place.

use std::time::Duration;

use fulcrum_balance::resilience::{BreakerConfig, OutlierConfig, WindowKind, DEFAULT_MAX_EJECTION_PERCENT};

use crate::file::{CircuitBreakerFile, HealthCheckFile, PassiveHealthFile, RetriesFile};
use crate::span::KeyPath;
use crate::validate::Validator;

/// `retries.max_replay_body`: largest request body kept for a retry (or a mirrored copy).
pub const DEFAULT_MAX_REPLAY_BODY: u64 = 64 * 1024;

/// How a backend is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// `GET path`, judged by status (and body).
    Http,
    /// A TCP connect.
    Tcp,
    /// gRPC's `grpc.health.v1.Health/Check` over HTTP/2: `SERVING` passes.
    Grpc,
}

/// Active health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `http` (default), `tcp` or `grpc`.
    pub kind: ProbeKind,
    /// The gRPC service whose health is asked (`kind = "grpc"`; default
    /// `""`, the whole server).
    pub service: String,
    /// Probe path (default `/health`).
    pub path: String,
    /// Inclusive range of passing statuses (default 200..=299).
    pub expect_status: (u16, u16),
    /// Text the body must contain, if set.
    pub expect_body: Option<String>,
    /// Time between probes of a serving backend (default 2s).
    pub interval: Duration,
    /// Probe timeout (default 1s).
    pub timeout: Duration,
    /// Passing probes in a row to come back (default 2).
    pub rise: u32,
    /// Failing probes in a row to go down (default 3).
    pub fall: u32,
    /// Time between probes of a down backend (default: `interval`).
    pub unhealthy_interval: Duration,
    /// A passing probe slower than this marks the backend degraded.
    pub degraded_latency: Option<Duration>,
}

/// Passive health (outlier detection).
#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealth {
    /// The detector's thresholds and times.
    pub detector: OutlierConfig,
    /// Most backends ejected at once, percent of the pool (default 10; at least one).
    pub max_ejection_percent: f64,
}

/// Circuit breaker and concurrency limit.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    /// resilience4j's settings.
    pub breaker: BreakerConfig,
    /// Most concurrent requests per backend (Envoy's `max_requests`); none by default.
    pub max_requests: Option<u64>,
}

/// Which failures a retry may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// The backend refused or did not accept the connection.
    pub connect_failure: bool,
    /// The connection broke before a response.
    pub reset: bool,
    /// Any 5xx response.
    pub server_error: bool,
    /// 502, 503 or 504 (and the failures above that cause them).
    pub gateway_error: bool,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    /// Retries after the first attempt (default 2), each to a backend not yet tried.
    pub attempts: u32,
    /// Failures that may be retried (default connect-failure, reset, gateway-error).
    pub on: RetryOn,
    /// Base of the exponential backoff with full jitter (default 25ms).
    pub backoff: Duration,
    /// Longest backoff (default 250ms).
    pub max_backoff: Duration,
    /// Retries may add this percent of the pool's requests (default 20).
    pub budget_percent: f64,
    /// ...but at least this many per second (default 10).
    pub min_retries_per_second: u32,
    /// Retry POST/PATCH too (default false: only idempotent methods).
    pub retry_non_idempotent: bool,
    /// Request bodies up to this many bytes are kept for replay (default 65536); larger ones are streamed and not retried.
    pub max_replay_body: u64,
}

impl Validator<'_> {
    pub(crate) fn health_check(&mut self, raw: &HealthCheckFile, path: &KeyPath) -> HealthCheck {
        let kind = match raw.kind.as_deref().unwrap_or("http") {
            "http" => ProbeKind::Http,
            "tcp" => ProbeKind::Tcp,
            "grpc" => ProbeKind::Grpc,
            other => {
                self.error(
                    &path.key("kind"),
                    format!("unknown probe kind `{other}`; expected http, tcp or grpc"),
                );
                ProbeKind::Http
            }
        };
        let probe_path = raw.path.clone().unwrap_or_else(|| "/health".into());
        if !probe_path.starts_with('/') {
            self.error(&path.key("path"), "must start with `/`");
        }
        let expect_status = raw.expect_status.map_or((200, 299), |[low, high]| (low, high));
        if !(100..=599).contains(&expect_status.0)
            || expect_status.0 > expect_status.1
            || expect_status.1 > 599
        {
            self.error(&path.key("expect_status"), "must be [lowest, highest] statuses within 100..=599");
        }
        let interval = self.duration(&path.key("interval"), raw.interval.as_ref(), Duration::from_secs(2));
        let timeout = self.duration(&path.key("timeout"), raw.timeout.as_ref(), Duration::from_secs(1));
        if raw.service.is_some() && kind != ProbeKind::Grpc {
            self.error(&path.key("service"), "only gRPC probes (`kind = \"grpc\"`) ask for a service");
        }
        let check = HealthCheck {
            kind,
            service: raw.service.clone().unwrap_or_default(),
            path: probe_path,
            expect_status,
            expect_body: raw.expect_body.clone(),
            interval,
            timeout,
            rise: self.at_least_one(&path.key("rise"), raw.rise, 2),
            fall: self.at_least_one(&path.key("fall"), raw.fall, 3),
            unhealthy_interval: self.duration(
                &path.key("unhealthy_interval"),
                raw.unhealthy_interval.as_ref(),
                interval,
            ),
            degraded_latency: raw
                .degraded_latency
                .as_ref()
                .map(|d| self.duration(&path.key("degraded_latency"), Some(d), Duration::ZERO)),
        };
        check
    }

    pub(crate) fn passive_health(&mut self, raw: &PassiveHealthFile, path: &KeyPath) -> PassiveHealth {
        let nanos = |d: Duration| d.as_nanos() as u64;
        let failure_rate = raw.failure_rate;
        if failure_rate.is_some_and(|r| !(0.0..=100.0).contains(&r) || r == 0.0) {
            self.error(&path.key("failure_rate"), "a percentage above 0 and at most 100");
        }
        let defaults = OutlierConfig::default();
        let max_ejection_percent = raw.max_ejection_percent.unwrap_or(DEFAULT_MAX_EJECTION_PERCENT);
        if !(0.0..=100.0).contains(&max_ejection_percent) {
            self.error(&path.key("max_ejection_percent"), "a percentage between 0 and 100");
        }
        PassiveHealth {
            detector: OutlierConfig {
                consecutive_5xx: raw.consecutive_5xx.unwrap_or(defaults.consecutive_5xx),
                consecutive_failures: raw.consecutive_failures.unwrap_or(defaults.consecutive_failures),
                failure_rate,
                min_requests: raw.min_requests.unwrap_or(defaults.min_requests),
                interval_nanos: nanos(self.duration(
                    &path.key("interval"),
                    raw.interval.as_ref(),
                    Duration::from_nanos(defaults.interval_nanos),
                )),
                ejection_time_nanos: nanos(self.duration(
                    &path.key("ejection_time"),
                    raw.ejection_time.as_ref(),
                    Duration::from_nanos(defaults.ejection_time_nanos),
                )),
                max_ejection_time_nanos: nanos(self.duration(
                    &path.key("max_ejection_time"),
                    raw.max_ejection_time.as_ref(),
                    Duration::from_nanos(defaults.max_ejection_time_nanos),
                )),
            },
            max_ejection_percent,
        }
    }

    pub(crate) fn circuit_breaker(&mut self, raw: &CircuitBreakerFile, path: &KeyPath) -> CircuitBreaker {
        let defaults = BreakerConfig::default();
        let percent = |v: &mut Self, key: &str, value: Option<f64>, default: f64| {
            let value = value.unwrap_or(default);
            if !(value > 0.0 && value <= 100.0) {
                v.error(&path.key(key), "a percentage above 0 and at most 100");
            }
            value
        };
        let window_kind = match raw.window_kind.as_deref().unwrap_or("count") {
            "count" => WindowKind::Count,
            "time" => WindowKind::Time,
            other => {
                self.error(
                    &path.key("window_kind"),
                    format!("unknown window kind `{other}`; expected count or time"),
                );
                WindowKind::Count
            }
        };
        CircuitBreaker {
            breaker: BreakerConfig {
                failure_rate_threshold: percent(
                    self,
                    "failure_rate_threshold",
                    raw.failure_rate_threshold,
                    defaults.failure_rate_threshold,
                ),
                slow_call_rate_threshold: percent(
                    self,
                    "slow_call_rate_threshold",
                    raw.slow_call_rate_threshold,
                    defaults.slow_call_rate_threshold,
                ),
                slow_call_duration_nanos: self
                    .duration(
                        &path.key("slow_call_duration"),
                        raw.slow_call_duration.as_ref(),
                        Duration::from_nanos(defaults.slow_call_duration_nanos),
                    )
                    .as_nanos() as u64,
                minimum_calls: self.at_least_one(
                    &path.key("minimum_calls"),
                    raw.minimum_calls,
                    defaults.minimum_calls,
                ),
                window: self.at_least_one(&path.key("window"), raw.window, defaults.window),
                window_kind,
                wait_in_open_nanos: self
                    .duration(
                        &path.key("wait_in_open"),
                        raw.wait_in_open.as_ref(),
                        Duration::from_nanos(defaults.wait_in_open_nanos),
                    )
                    .as_nanos() as u64,
                half_open_calls: self.at_least_one(
                    &path.key("half_open_calls"),
                    raw.half_open_calls,
                    defaults.half_open_calls,
                ),
            },
            max_requests: raw.max_requests,
        }
    }

    pub(crate) fn retries(&mut self, raw: &RetriesFile, path: &KeyPath) -> Retries {
        let mut on = RetryOn::default();
        let conditions = raw
            .on
            .clone()
            .unwrap_or_else(|| vec!["connect-failure".into(), "reset".into(), "gateway-error".into()]);
        for (i, condition) in conditions.iter().enumerate() {
            match condition.as_str() {
                "connect-failure" => on.connect_failure = true,
                "reset" => on.reset = true,
                "5xx" => on.server_error = true,
                "gateway-error" => on.gateway_error = true,
                other => self.error(
                    &path.key("on").index(i),
                    format!("unknown retry condition `{other}`; expected connect-failure, reset, 5xx or gateway-error"),
                ),
            }
        }
        let budget_percent = raw.budget_percent.unwrap_or(20.0);
        if !(0.0..=1000.0).contains(&budget_percent) {
            self.error(&path.key("budget_percent"), "a percentage between 0 and 1000");
        }
        Retries {
            attempts: raw.attempts.unwrap_or(2),
            on,
            backoff: self.duration(&path.key("backoff"), raw.backoff.as_ref(), Duration::from_millis(25)),
            max_backoff: self.duration(
                &path.key("max_backoff"),
                raw.max_backoff.as_ref(),
                Duration::from_millis(250),
            ),
            budget_percent,
            min_retries_per_second: raw.min_retries_per_second.unwrap_or(10),
            retry_non_idempotent: raw.retry_non_idempotent.unwrap_or(false),
            max_replay_body: raw.max_replay_body.unwrap_or(DEFAULT_MAX_REPLAY_BODY),
        }
    }

    fn at_least_one(&mut self, path: &KeyPath, value: Option<u32>, default: u32) -> u32 {
        let value = value.unwrap_or(default);
        if value == 0 {
            self.error(path, "must be at least 1");
        }
        value.max(1)
    }
}
