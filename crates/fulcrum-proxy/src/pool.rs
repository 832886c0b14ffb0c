//! A pool: its backends, the selector built over them, its placement
//! rules, its resilience settings and its upstream settings. A reload
//! builds a new pool, carrying over each backend's live load by address.
//! The selector is swappable so slow start and degraded backends re-weigh
//! on the per-second tick without a reload.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admission::PoolAdmission;
use crate::affinity::Affinity;
use crate::attempt::Attempt;
use crate::backend::Backend;
use crate::shared_store::SharedStore;
use crate::tiers::Tiers;
use arc_swap::ArcSwap;
use fulcrum_balance::resilience::{Health, Outcome, Permit, RetryBudget};
use fulcrum_balance::{build_selector, Member, PickContext, Selector};
use fulcrum_config::{Geo, Pool as PoolConfig, Timeouts};

/// Weights are scaled by this while any backend is re-weighed, so a ramp has 100 steps.
const WEIGHT_SCALE: u32 = 100;
/// Share of its weight a degraded backend keeps.
const DEGRADED_SHARE: f64 = 0.25;
/// Retry budget window, seconds.
const RETRY_WINDOW_SECONDS: u64 = 10;

/// A balanced set of backends.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name in the config.
    pub name: Arc<str>,
    /// Backends in config order; selector indices point here.
    pub backends: Vec<Arc<Backend>>,
    selector: ArcSwap<Box<dyn Selector>>,
    built_weights: Mutex<Vec<u32>>,
    tiers: Option<Tiers>,
    retry_budget: Option<RetryBudget>,
    /// Pool-level counters.
    pub metrics: crate::metrics::PoolMetrics,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Idle upstream connections kept per backend and thread.
    pub max_idle_per_backend: usize,
    /// The config this pool was built from, to detect changes on reload.
    pub config: PoolConfig,
    /// Session affinity, when configured.
    pub affinity: Option<Affinity>,
    /// Backend index by address key, for sessions.
    by_address: HashMap<u64, usize>,
    /// Admission control, when configured.
    pub admission: Option<Arc<PoolAdmission>>,
    /// TLS to the backends, when the pool configures it (set by the server,
    /// which reads its files and can fail).
    pub tls: Option<Arc<crate::upstream_tls::TlsClient>>,
}

/// What pools of one config share: the `[geo]` data, the `[redis]` store
/// and the graceful timeout (how long a draining backend keeps sessions).
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// Client networks and region latencies.
    pub geo: Option<Arc<Geo>>,
    /// The store every instance shares.
    pub store: Option<Arc<SharedStore>>,
    /// `[server] graceful_timeout`.
    pub graceful_timeout: Duration,
}

impl Pool {
    /// Builds the pool `name` from `config` (its health checks are started
    /// by the proxy's supervisor of this pool generation). Backends of `previous` (the running pool of that name) keep their
    /// load and health; unchanged ones are reused whole; new addresses start
    /// a slow-start ramp when configured.
    pub fn build(name: &str, config: &PoolConfig, previous: Option<&Pool>, shared: &Shared) -> Self {
        let now = crate::clock::now_nanos();
        let same_guards = previous.is_some_and(|p| {
            p.config.passive_health == config.passive_health
                && p.config.circuit_breaker == config.circuit_breaker
        });
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|b| {
                let old = previous.and_then(|p| p.backends.iter().find(|old| old.address == b.address));
                match old {
                    Some(old) if same_guards && old.matches(b) => Arc::clone(old),
                    Some(old) => {
                        let backend = Backend::new(b, config, Some(old));
                        backend.guards.set_health(old.guards.health());
                        Arc::new(backend)
                    }
                    None => {
                        let backend = Backend::new(b, config, None);
                        if previous.is_some() && config.slow_start.is_some() && !config.algorithm.uses_key() {
                            backend.start_ramp(now);
                        }
                        Arc::new(backend)
                    }
                }
            })
            .collect();
        let geo = if config.geo { shared.geo.clone() } else { None };
        let affinity = config.affinity.as_ref().map(|a| {
            let previous = previous.and_then(|p| p.affinity.as_ref());
            Affinity::new(name, a, previous, shared.store.as_ref(), shared.graceful_timeout)
        });
        let by_address = backends.iter().enumerate().map(|(i, b)| (b.address_key, i)).collect();
        let pool = Self {
            name: name.into(),
            selector: ArcSwap::from_pointee(build_selector(&config.algorithm, &[])),
            built_weights: Mutex::new(Vec::new()),
            tiers: Tiers::new(&backends, config.locality_zone.clone(), geo),
            retry_budget: config
                .retries
                .as_ref()
                .map(|r| RetryBudget::new(r.budget_percent, r.min_retries_per_second, RETRY_WINDOW_SECONDS)),
            metrics: Default::default(),
            backends,
            timeouts: config.timeouts,
            max_idle_per_backend: config.max_idle_per_backend,
            config: config.clone(),
            affinity,
            by_address,
            admission: config.admission.as_ref().map(|a| Arc::new(PoolAdmission::new(a, now))),
            tls: None,
        };
        pool.reweigh(now);
        pool
    }

    /// The share of its configured weight `backend` gets at `now`: less
    /// while it ramps (slow start) or is degraded.
    pub fn weight_factor(&self, backend: &Backend, now: u64) -> f64 {
        let ramp = self.config.slow_start.map_or(0, |d| d.as_nanos() as u64);
        let ramp = if ramp > 0 { backend.ramp_fraction(now, ramp).unwrap_or(1.0) } else { 1.0 };
        let degraded = if backend.guards.health() == Health::Degraded { DEGRADED_SHARE } else { 1.0 };
        ramp * degraded
    }

    /// The weight each backend should have at `now`: its configured weight,
    /// scaled down while it ramps (slow start) or is degraded.
    fn effective_weights(&self, now: u64) -> Vec<u32> {
        let factors: Vec<f64> = self.backends.iter().map(|b| self.weight_factor(b, now)).collect();
        if factors.iter().all(|&f| f >= 1.0) {
            return self.backends.iter().map(|b| b.weight).collect();
        }
        self.backends
            .iter()
            .zip(factors)
            .map(|(b, f)| ((f64::from(b.weight * WEIGHT_SCALE) * f) as u32).max(1))
            .collect()
    }

    /// Rebuilds the selector when the effective weights changed.
    fn reweigh(&self, now: u64) {
        let weights = self.effective_weights(now);
        let mut built = self.built_weights.lock().unwrap_or_else(|p| p.into_inner());
        if *built == weights {
            return;
        }
        let members: Vec<Member> = self
            .backends
            .iter()
            .zip(&weights)
            .map(|(b, &weight)| Member { key: b.address.to_string(), weight, load: Arc::clone(&b.load) })
            .collect();
        self.selector.store(Arc::new(build_selector(&self.config.algorithm, &members)));
        *built = weights;
    }

    /// Periodic upkeep: re-weigh ramping or degraded backends, and the
    /// algorithm's own upkeep (adaptive weights).
    pub fn tick(&self) {
        let now = crate::clock::now_nanos();
        self.reweigh(now);
        self.selector.load().tick(now);
    }

    /// An attempt on the backend the pool picks for a request with
    /// affinity `key` from `client`, skipping backends whose ids are in
    /// `tried`; it holds a circuit-breaker permit when one is configured.
    /// `None` when no backend is available.
    /// `now` is the caller's clock reading (monotonic nanos).
    pub fn pick(
        &self,
        key: Option<u64>,
        client: Option<IpAddr>,
        tried: &[u64],
        now: u64,
    ) -> Option<Attempt<'_>> {
        let selector = self.selector.load();
        let mut refused: Vec<u64> = Vec::new();
        // A breaker may refuse the permit between the filter and the pick
        // (another request took the last half-open slot): pick again.
        for _ in 0..3 {
            let index = crate::rng::with_rng(|rng| {
                let admission = self.tiers.as_ref().map(|t| t.admit(&self.backends, client, now, rng));
                let accept = |i: usize| {
                    let backend = &self.backends[i];
                    !tried.contains(&backend.id)
                        && !refused.contains(&backend.id)
                        && backend.is_available(now)
                        && admission.as_ref().is_none_or(|a| a.allows(backend))
                };
                let mut ctx = PickContext { key, now_nanos: now, rng };
                selector.pick(&mut ctx, &accept)
            })?;
            let backend = &self.backends[index];
            match backend.guards.admit(now, backend.address) {
                Ok(permit) => return Some(Attempt::new(self, Arc::clone(backend), permit, now)),
                Err(_refused) => refused.push(backend.id),
            }
        }
        None
    }

    /// Whether the backend at `address_key` is still one of this pool's and
    /// may take traffic now (a UDP flow re-picks when not).
    pub fn still_serves(&self, address_key: u64, now: u64) -> bool {
        self.by_address.get(&address_key).is_some_and(|&i| {
            let backend = &self.backends[i];
            backend.state == fulcrum_config::BackendState::Active
                && backend.guards.serves(now, backend.load.in_flight())
        })
    }

    /// An attempt on the backend a session is bound to (by its address
    /// key), when it can serve at `now`: active (or draining while the
    /// affinity keeps sessions on draining backends), healthy, not ejected,
    /// its breaker admitting the call. Tiers and weights do not apply: a
    /// session stays where it is.
    pub fn pick_bound(&self, address_key: u64, now: u64) -> Option<Attempt<'_>> {
        let affinity = self.affinity.as_ref()?;
        let backend = &self.backends[*self.by_address.get(&address_key)?];
        let allowed = match backend.state {
            fulcrum_config::BackendState::Active => true,
            fulcrum_config::BackendState::Draining => affinity.keeps_draining(backend, now),
            fulcrum_config::BackendState::Maintenance => false,
        };
        if !allowed || !backend.guards.serves(now, backend.load.in_flight()) {
            return None;
        }
        let permit = backend.guards.admit(now, backend.address).ok()?;
        Some(Attempt::new(self, Arc::clone(backend), permit, now))
    }

    /// Records how a call to `backend` under `permit` ended at `now`
    /// (breaker, outlier detection); nothing to do unless the pool
    /// configures either. The pool's ejection cap is counted only when
    /// outlier detection is about to eject.
    pub fn record(
        &self,
        backend: &Backend,
        outcome: Outcome,
        permit: Option<Permit>,
        duration_nanos: u64,
        now: u64,
    ) {
        if self.config.passive_health.is_none() && self.config.circuit_breaker.is_none() {
            return;
        }
        let may_eject = || {
            self.config.passive_health.as_ref().is_some_and(|p| {
                let cap =
                    ((p.max_ejection_percent / 100.0 * self.backends.len() as f64).floor() as usize).max(1);
                self.backends.iter().filter(|b| b.guards.is_ejected(now)).count() < cap
            })
        };
        backend.guards.record(outcome, permit, duration_nanos, now, may_eject, backend.address);
    }

    /// Counts a first attempt against the retry budget.
    pub fn record_request(&self) {
        if let Some(budget) = &self.retry_budget {
            budget.record_request(crate::clock::now_nanos());
        }
    }

    /// Takes a retry from the pool's budget, if any is left.
    pub fn try_retry(&self) -> bool {
        self.retry_budget.as_ref().is_some_and(|b| b.try_retry(crate::clock::now_nanos()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fulcrum_balance::resilience::Outcome;

    use crate::clock::now_nanos;
    use crate::testing::pool;

    #[tokio::test(start_paused = true)]
    async fn outlier_detection_ejects_for_its_time_then_readmits() {
        let pool = pool(
            &["127.0.0.1:9", "127.0.0.1:10"],
            "passive_health = { consecutive_5xx = 3, ejection_time = \"30s\", max_ejection_percent = 50 }",
        );
        let sick = pool.backends[0].id;
        let mut failures = 0;
        while failures < 3 {
            let attempt = pool.pick(None, None, &[], now_nanos()).unwrap();
            if attempt.backend().id == sick {
                attempt.finish(Outcome::ServerError, 500, now_nanos());
                failures += 1;
            }
        }
        for _ in 0..20 {
            assert_ne!(pool.pick(None, None, &[], now_nanos()).unwrap().backend().id, sick, "ejected");
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        let picked: Vec<u64> =
            (0..4).map(|_| pool.pick(None, None, &[], now_nanos()).unwrap().backend().id).collect();
        assert!(picked.contains(&sick), "back after its ejection time: {picked:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_ejection_cap_keeps_the_last_backend() {
        let pool = pool(
            &["127.0.0.1:9", "127.0.0.1:10"],
            "passive_health = { consecutive_5xx = 1, max_ejection_percent = 10 }",
        );
        for _ in 0..10 {
            if let Some(attempt) = pool.pick(None, None, &[], now_nanos()) {
                attempt.finish(Outcome::ServerError, 500, now_nanos());
            }
        }
        assert!(pool.pick(None, None, &[], now_nanos()).is_some(), "10% of two backends ejects at most one");
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_is_a_share_of_recent_requests() {
        let pool = pool(&["127.0.0.1:9"], "retries = { budget_percent = 20, min_retries_per_second = 0 }");
        for _ in 0..10 {
            pool.record_request();
        }
        assert!(pool.try_retry() && pool.try_retry(), "20% of 10 requests");
        assert!(!pool.try_retry(), "the budget is spent");
        for _ in 0..90 {
            pool.record_request();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            pool.record_request();
        }
        assert!(pool.try_retry(), "20% of the 5 requests in the window");
        assert!(!pool.try_retry(), "the 100 older requests left the window and lend no budget");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_limit_skips_a_full_backend() {
        let pool = pool(&["127.0.0.1:9", "127.0.0.1:10"], "circuit_breaker = { max_requests = 1 }");
        let first = pool.pick(None, None, &[], now_nanos()).unwrap();
        let _busy = first.backend().load.start();
        for _ in 0..4 {
            assert_ne!(pool.pick(None, None, &[], now_nanos()).unwrap().backend().id, first.backend().id);
        }
    }
}
