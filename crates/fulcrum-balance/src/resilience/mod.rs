//! Keeping traffic off sick backends: small state machines whose
//! transition functions take the time as an argument and say whether the
//! state flipped (sozu's `HealthState::record_success -> bool`, linkerd's
//! consecutive-failures breaker). The proxy drives them from probes and
//! responses; the pool's candidate filter reads them. [`GradientLimit`]
//! sets how many requests a pool admits at once.

mod availability;
mod backoff;
mod breaker;
mod gradient;
mod health;
mod outlier;
mod retry_budget;

pub use availability::{Availability, Changes, Refused};
pub use backoff::backoff;
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit, WindowKind};
pub use gradient::{GradientConfig, GradientLimit, MIN_RTT_SAMPLES};
pub use health::{Health, HealthChecker, ProbeResult};
pub use outlier::{Outcome, OutlierConfig, OutlierDetector, DEFAULT_MAX_EJECTION_PERCENT};
pub use retry_budget::RetryBudget;
