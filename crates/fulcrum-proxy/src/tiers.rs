//! A pool's placement rules applied per request, before the algorithm
//! picks: the priority level that serves, the nearest healthy region of
//! the client, and whether the local zone serves. The math is the core's
//! `fulcrum_balance::tiers`; this file measures the pool's healthy capacity
//! and turns the answer into the candidate filter. What depends only on
//! membership (the levels, each level's regions) is computed when the pool
//! is built, so a request allocates nothing here.

use std::net::IpAddr;
use std::sync::Arc;

use fulcrum_balance::tiers::{choose_priority, nearest_region, serve_locally, Capacity};
use fulcrum_balance::SplitMix64;
use fulcrum_config::Geo;

use crate::backend::Backend;

/// The placement rules of one pool.
#[derive(Debug)]
pub struct Tiers {
    levels: Vec<u8>,
    /// Each level's distinct backend regions, sorted (geo routing only).
    regions: Vec<Vec<String>>,
    local_zone: Option<String>,
    geo: Option<Arc<Geo>>,
}

/// Which backends one request may use.
#[derive(Debug)]
pub struct Admission<'a> {
    priority: u8,
    region: Option<&'a str>,
    local: Option<(&'a str, bool)>,
}

impl Admission<'_> {
    /// Whether `backend` is in the part of the pool chosen for this request.
    pub fn allows(&self, backend: &Backend) -> bool {
        backend.priority == self.priority
            && self.region.is_none_or(|r| backend.region.as_deref() == Some(r))
            && self.local.is_none_or(|(zone, local)| (backend.zone.as_deref() == Some(zone)) == local)
    }
}

impl Tiers {
    /// The rules for a pool, or `None` when it has a single priority level,
    /// no locality and no geographic routing (then every backend qualifies).
    pub fn new(backends: &[Arc<Backend>], local_zone: Option<String>, geo: Option<Arc<Geo>>) -> Option<Self> {
        let mut levels: Vec<u8> = backends.iter().map(|b| b.priority).collect();
        levels.sort_unstable();
        levels.dedup();
        let regions = levels
            .iter()
            .map(|&level| {
                let mut regions: Vec<String> = backends
                    .iter()
                    .filter(|b| b.priority == level)
                    .filter_map(|b| b.region.clone())
                    .collect();
                regions.sort_unstable();
                regions.dedup();
                regions
            })
            .collect();
        (levels.len() > 1 || local_zone.is_some() || geo.is_some()).then_some(Self {
            levels,
            regions,
            local_zone,
            geo,
        })
    }

    /// Decides which part of the pool serves a request from `client`.
    pub fn admit<'a>(
        &'a self,
        backends: &'a [Arc<Backend>],
        client: Option<IpAddr>,
        now: u64,
        rng: &mut SplitMix64,
    ) -> Admission<'a> {
        let capacity = |filter: &dyn Fn(&Backend) -> bool| {
            backends.iter().filter(|b| filter(b)).fold(Capacity::default(), |c, b| Capacity {
                healthy: c.healthy + if b.is_available(now) { u64::from(b.weight) } else { 0 },
                total: c.total + u64::from(b.weight),
            })
        };
        let level = if self.levels.len() > 1 {
            let levels = self.levels.iter().map(|&p| capacity(&|b| b.priority == p));
            choose_priority(levels, rng.next_f64()).unwrap_or(0)
        } else {
            0
        };
        let priority = self.levels.get(level).copied().unwrap_or(0);

        let region = self.geo.as_ref().and_then(|geo| {
            let from = geo.region_of(client?)?;
            let regions = self.regions.get(level)?;
            let options = regions.iter().map(|r| {
                let healthy = backends.iter().any(|b| {
                    b.priority == priority && b.region.as_deref() == Some(r.as_str()) && b.is_available(now)
                });
                (geo.latency_ms(from, r), healthy)
            });
            nearest_region(options).map(|i| regions[i].as_str())
        });

        let local = self.local_zone.as_deref().map(|zone| {
            let in_scope =
                |b: &Backend| b.priority == priority && region.is_none_or(|r| b.region.as_deref() == Some(r));
            let local = capacity(&|b| in_scope(b) && b.zone.as_deref() == Some(zone));
            let remote = capacity(&|b| in_scope(b) && b.zone.as_deref() != Some(zone));
            (zone, serve_locally(local, remote.healthy > 0, rng.next_f64()))
        });
        Admission { priority, region, local }
    }
}
