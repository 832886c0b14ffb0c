//! A pool: its backends, the selector built over them, its placement
//! rules and its upstream settings. A reload builds a new pool, carrying
//! over each backend's live load by address. The selector itself is
//! swappable so slow start can re-weigh a ramping backend each tick
//! without a reload.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use fulcrum_balance::{build_selector, Member, PickContext, Selector};
use fulcrum_config::{Geo, Pool as PoolConfig, Timeouts};

use crate::backend::Backend;
use crate::tiers::Tiers;

/// Weights are scaled by this while a backend ramps, so a ramp has 100 steps.
const RAMP_SCALE: u32 = 100;

/// A balanced set of backends.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name in the config.
    pub name: Arc<str>,
    /// Backends in config order; selector indices point here.
    pub backends: Vec<Arc<Backend>>,
    selector: ArcSwap<Box<dyn Selector>>,
    tiers: Option<Tiers>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Idle upstream connections kept per backend and thread.
    pub max_idle_per_backend: usize,
    /// The config this pool was built from, to detect changes on reload.
    pub config: PoolConfig,
}

impl Pool {
    /// Builds the pool `name` from `config`. Backends of `previous` (the
    /// running pool of that name) keep their load; unchanged ones are
    /// reused whole; new addresses start a slow-start ramp when configured.
    pub fn build(name: &str, config: &PoolConfig, previous: Option<&Pool>, geo: Option<&Arc<Geo>>) -> Self {
        let now = crate::clock::now_nanos();
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|b| {
                let old = previous.and_then(|p| p.backends.iter().find(|old| old.address == b.address));
                match old {
                    Some(old) if old.matches(b) => Arc::clone(old),
                    Some(old) => Arc::new(Backend::new(b, Some(Arc::clone(&old.load)))),
                    None => {
                        let backend = Backend::new(b, None);
                        if previous.is_some() && config.slow_start.is_some() && !config.algorithm.uses_key() {
                            backend.start_ramp(now);
                        }
                        Arc::new(backend)
                    }
                }
            })
            .collect();
        let geo = if config.geo { geo.cloned() } else { None };
        let pool = Self {
            name: name.into(),
            selector: ArcSwap::from_pointee(build_selector(&config.algorithm, &[])),
            tiers: Tiers::new(&backends, config.locality_zone.clone(), geo),
            backends,
            timeouts: config.timeouts,
            max_idle_per_backend: config.max_idle_per_backend,
            config: config.clone(),
        };
        pool.rebuild_selector(now);
        pool
    }

    /// Rebuilds the selector from the backends' effective weights at `now`.
    fn rebuild_selector(&self, now: u64) {
        let ramp = self.config.slow_start.map_or(0, |d| d.as_nanos() as u64);
        let fractions: Vec<Option<f64>> =
            self.backends.iter().map(|b| if ramp > 0 { b.ramp_fraction(now, ramp) } else { None }).collect();
        let ramping = fractions.iter().any(Option::is_some);
        let members: Vec<Member> = self
            .backends
            .iter()
            .zip(&fractions)
            .map(|(b, fraction)| {
                let weight = match (ramping, fraction) {
                    (false, _) => b.weight,
                    (true, None) => b.weight * RAMP_SCALE,
                    (true, Some(f)) => ((f64::from(b.weight * RAMP_SCALE) * f) as u32).max(1),
                };
                Member { key: b.address.to_string(), weight, load: Arc::clone(&b.load) }
            })
            .collect();
        self.selector.store(Arc::new(build_selector(&self.config.algorithm, &members)));
    }

    /// Periodic upkeep: the algorithm's own (adaptive weights), and a
    /// re-weigh while any backend is in slow start.
    pub fn tick(&self) {
        let now = crate::clock::now_nanos();
        if self.backends.iter().any(|b| b.is_ramping()) {
            self.rebuild_selector(now);
        }
        self.selector.load().tick(now);
    }

    /// The backend the pool picks for a request with affinity `key` from
    /// `client`, or `None` when no backend is available.
    pub fn pick(&self, key: Option<u64>, client: Option<IpAddr>) -> Option<&Arc<Backend>> {
        let selector = self.selector.load();
        crate::rng::with_rng(|rng| {
            let admission = self.tiers.as_ref().map(|t| t.admit(&self.backends, client, rng));
            let accept = |i: usize| {
                let backend = &self.backends[i];
                backend.is_healthy() && admission.as_ref().is_none_or(|a| a.allows(backend))
            };
            let mut ctx = PickContext { key, now_nanos: crate::clock::now_nanos(), rng };
            selector.pick(&mut ctx, &accept)
        })
        .map(|index| &self.backends[index])
    }
}
