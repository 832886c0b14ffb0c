//! A backend's availability: what its probes say, whether outlier
//! detection ejected it, whether its circuit breaker admits calls, and its
//! concurrency limit.
//!
//! The decisions are the pure core's [`Availability`] (breaker, outlier
//! detection, concurrency limit), the same value the simulator drives. The
//! candidate filter runs for many backends per pick, so it reads only
//! atomic mirrors ([`Guards::serves`]); the `Availability` sits behind a
//! per-backend mutex taken once per response (to record it) and once per
//! pick of this backend (for a breaker permit), and only when the pool
//! configures a breaker or outlier detection. Every transition is mirrored
//! into the atomics and logged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use fulcrum_balance::resilience::{Availability, BreakerState, Changes, Health, Outcome, Permit};
use fulcrum_config::Pool as PoolConfig;

/// "Blocked until" value of a half-open breaker with no permits left.
const UNTIL_A_PROBE_ENDS: u64 = u64::MAX;

/// A circuit breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerRefused;

/// Availability state of one backend.
#[derive(Debug)]
pub struct Guards {
    health: AtomicU8,
    ejected_until: AtomicU64,
    breaker_state: AtomicU8,
    breaker_blocked_until: AtomicU64,
    /// When the breaker last opened (monotonic nanos), newest last, at most 16.
    breaker_opened_at: Mutex<std::collections::VecDeque<u64>>,
    /// The core's decisions, when a breaker or outlier detection is configured.
    availability: Option<Mutex<Availability>>,
    /// Whether a breaker is configured: only then does a pick take a permit.
    has_breaker: bool,
    max_requests: Option<u64>,
}

fn health_code(health: Health) -> u8 {
    match health {
        Health::Unknown => 0,
        Health::Healthy => 1,
        Health::Degraded => 2,
        Health::Unhealthy => 3,
    }
}

fn health_of(code: u8) -> Health {
    match code {
        1 => Health::Healthy,
        2 => Health::Degraded,
        3 => Health::Unhealthy,
        _ => Health::Unknown,
    }
}

impl Guards {
    /// Fresh state for a backend of a pool configured as `config`.
    pub fn new(config: &PoolConfig) -> Self {
        Self {
            health: AtomicU8::new(health_code(Health::Unknown)),
            ejected_until: AtomicU64::new(0),
            breaker_state: AtomicU8::new(BreakerState::Closed.gauge()),
            breaker_blocked_until: AtomicU64::new(0),
            breaker_opened_at: Mutex::new(std::collections::VecDeque::new()),
            availability: Some(Availability::new(
                config.circuit_breaker.as_ref().map(|c| c.breaker.clone()),
                config.passive_health.as_ref().map(|p| p.detector.clone()),
                None,
            ))
            .filter(Availability::is_guarded)
            .map(Mutex::new),
            has_breaker: config.circuit_breaker.is_some(),
            max_requests: config.circuit_breaker.as_ref().and_then(|c| c.max_requests),
        }
    }

    /// Whether the backend may be picked at `now` with `in_flight` requests.
    pub fn serves(&self, now: u64, in_flight: u64) -> bool {
        health_of(self.health.load(Ordering::Relaxed)).serves()
            && self.ejected_until.load(Ordering::Relaxed) <= now
            && self.breaker_blocked_until.load(Ordering::Relaxed) <= now
            && self.max_requests.is_none_or(|max| in_flight < max)
    }

    /// What the probes say.
    pub fn health(&self) -> Health {
        health_of(self.health.load(Ordering::Relaxed))
    }

    /// Sets the probe verdict.
    pub fn set_health(&self, health: Health) {
        self.health.store(health_code(health), Ordering::Relaxed);
    }

    /// Whether outlier detection has the backend ejected at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// The breaker's state as last mirrored.
    pub fn breaker_state(&self) -> BreakerState {
        match self.breaker_state.load(Ordering::Relaxed) {
            1 => BreakerState::HalfOpen,
            2 => BreakerState::Open,
            _ => BreakerState::Closed,
        }
    }

    /// How many times the breaker opened in the `window` nanos before `now`.
    pub fn breaker_opens_since(&self, now: u64, window: u64) -> usize {
        let opened = self.breaker_opened_at.lock().unwrap_or_else(|p| p.into_inner());
        opened.iter().filter(|&&at| now.saturating_sub(at) <= window).count()
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Availability>> {
        self.availability.as_ref().map(|a| a.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes a breaker permit for a call starting at `now`: `Ok(None)`
    /// without a breaker, `Err` when the breaker refuses the call.
    pub fn admit(&self, now: u64, address: SocketAddr) -> Result<Option<Permit>, BreakerRefused> {
        if !self.has_breaker {
            return Ok(None);
        }
        let Some(mut availability) = self.lock() else { return Ok(None) };
        let before = breaker_state(&availability);
        let permit = availability.admit(now).map_err(|_| BreakerRefused);
        self.mirror_breaker(&availability, now, before, address);
        permit
    }

    /// Hands back the permit of a call that ended without an outcome.
    pub fn cancel(&self, permit: Permit, address: SocketAddr) {
        let Some(mut availability) = self.lock() else { return };
        let before = breaker_state(&availability);
        availability.cancel(permit);
        self.mirror_breaker(&availability, crate::clock::now_nanos(), before, address);
    }

    /// Records a finished call that held `permit` (every call admitted by
    /// a breaker holds one). `may_eject` answers whether the pool's
    /// ejection cap allows one more ejection; it is asked only when outlier
    /// detection is about to eject.
    pub fn record(
        &self,
        outcome: Outcome,
        permit: Option<Permit>,
        duration_nanos: u64,
        now: u64,
        may_eject: impl FnOnce() -> bool,
        address: SocketAddr,
    ) {
        let Some(mut availability) = self.lock() else { return };
        let before = breaker_state(&availability);
        let Changes { ejected_for, .. } =
            availability.record(outcome, permit, duration_nanos, now, may_eject);
        self.mirror_breaker(&availability, now, before, address);
        if let Some(length) = ejected_for {
            self.ejected_until.store(availability.ejected_until(), Ordering::Relaxed);
            tracing::warn!(
                backend = %address,
                ejection = availability.ejections(),
                seconds = length / 1_000_000_000,
                "outlier detection ejected the backend after {outcome:?}"
            );
        }
    }

    fn mirror_breaker(
        &self,
        availability: &Availability,
        now: u64,
        before: BreakerState,
        address: SocketAddr,
    ) {
        let Some(breaker) = availability.breaker() else { return };
        let state = breaker.state();
        self.breaker_state.store(state.gauge(), Ordering::Relaxed);
        let blocked_until = match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen if breaker.allows(now) => 0,
            BreakerState::HalfOpen => UNTIL_A_PROBE_ENDS,
            BreakerState::Open => breaker.reopens_at().unwrap_or(0),
        };
        self.breaker_blocked_until.store(blocked_until, Ordering::Relaxed);
        if state == BreakerState::Open && before != BreakerState::Open {
            let mut opened = self.breaker_opened_at.lock().unwrap_or_else(|p| p.into_inner());
            if opened.len() == 16 {
                opened.pop_front();
            }
            opened.push_back(now);
        }
        if state != before {
            tracing::warn!(backend = %address, from = before.name(), to = state.name(), "circuit breaker changed state");
        }
    }
}

fn breaker_state(availability: &Availability) -> BreakerState {
    availability.breaker().map_or(BreakerState::Closed, |b| b.state())
}
