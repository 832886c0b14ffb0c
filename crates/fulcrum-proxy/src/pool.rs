//! A pool: its backends, the selector built over them, and its upstream
//! settings. Pools are immutable; a reload builds new ones, carrying over
//! each unchanged backend (and so its counters and idle connections).

use std::sync::Arc;

use fulcrum_balance::{build_selector, Member, PickContext, Selector};
use fulcrum_config::{Pool as PoolConfig, Timeouts};

use crate::backend::Backend;

/// A balanced set of backends.
#[derive(Debug)]
pub struct Pool {
    /// The pool's name in the config.
    pub name: Arc<str>,
    /// Backends in config order; selector indices point here.
    pub backends: Vec<Arc<Backend>>,
    selector: Box<dyn Selector>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Idle upstream connections kept per backend and thread.
    pub max_idle_per_backend: usize,
    /// The config this pool was built from, to detect changes on reload.
    pub config: PoolConfig,
}

impl Pool {
    /// Builds the pool `name` from `config`, reusing unchanged backends of
    /// `previous` (the running pool of the same name, if any).
    pub fn build(name: &str, config: &PoolConfig, previous: Option<&Pool>) -> Self {
        let backends: Vec<Arc<Backend>> = config
            .backends
            .iter()
            .map(|b| {
                previous
                    .and_then(|p| p.backends.iter().find(|old| old.matches(b)))
                    .map_or_else(|| Arc::new(Backend::new(b)), Arc::clone)
            })
            .collect();
        let members: Vec<Member> = backends
            .iter()
            .map(|b| Member { key: b.address.to_string(), weight: b.weight, load: Arc::clone(&b.load) })
            .collect();
        Self {
            name: name.into(),
            selector: build_selector(&config.algorithm, &members),
            backends,
            timeouts: config.timeouts,
            max_idle_per_backend: config.max_idle_per_backend,
            config: config.clone(),
        }
    }

    /// Periodic upkeep of the pool's algorithm (adaptive weights).
    pub fn tick(&self) {
        self.selector.tick(crate::clock::now_nanos());
    }

    /// The backend the pool's algorithm picks for a request with affinity
    /// `key`, or `None` when no backend is available.
    pub fn pick(&self, key: Option<u64>) -> Option<&Arc<Backend>> {
        crate::rng::with_rng(|rng| {
            let mut ctx = PickContext { key, now_nanos: crate::clock::now_nanos(), rng };
            self.selector.pick(&mut ctx, &|_| true)
        })
        .map(|index| &self.backends[index])
    }
}
