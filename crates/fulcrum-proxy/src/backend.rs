//! A backend as the data path holds it: its address and placement, its
//! live load, whether it may take traffic, and the identity of its
//! upstream connection pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fulcrum_balance::Load;

use crate::guards::Guards;
use crate::metrics::BackendMetrics;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One backend server of a pool.
#[derive(Debug)]
pub struct Backend {
    /// Unique for the process's life; keys the per-thread connection pools.
    pub id: u64,
    /// Where to connect.
    pub address: SocketAddr,
    /// What sessions know it by ([`crate::affinity::address_key`]): the same on every instance.
    pub address_key: u64,
    /// Relative capacity.
    pub weight: u32,
    /// Availability zone, if configured.
    pub zone: Option<String>,
    /// Region, if configured.
    pub region: Option<String>,
    /// Priority level, 0 first.
    pub priority: u8,
    /// Operator state: only `active` backends take new requests.
    pub state: fulcrum_config::BackendState,
    /// Where it came from: the file, DNS discovery or the admin API.
    pub origin: fulcrum_config::BackendOrigin,
    /// Live counters, shared with the pool's selector (and kept across
    /// reloads that change this backend's settings).
    pub load: Arc<Load>,
    /// Health, ejection, breaker and concurrency limit.
    pub guards: Guards,
    /// Response metrics (kept across reloads, like `load`).
    pub metrics: Arc<BackendMetrics>,
    /// When its slow-start ramp began (monotonic nanos), 0 when not ramping.
    ramp_from: AtomicU64,
    /// When it started draining (monotonic nanos); 0 unless draining.
    draining_since: u64,
    /// What it picked in ALPN, for pools with `protocol = "auto"`.
    pub negotiated: Negotiated,
}

/// The HTTP version an `auto` pool's backend picked in its TLS handshake:
/// learnt on the first connection, forgotten when a connection fails.
#[derive(Debug, Default)]
pub struct Negotiated(std::sync::atomic::AtomicU8);

impl Negotiated {
    const HTTP1: u8 = 1;
    const H2: u8 = 2;

    /// `Some(true)` for HTTP/2, `Some(false)` for HTTP/1.1, `None` before the first handshake.
    pub fn h2(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            Self::HTTP1 => Some(false),
            Self::H2 => Some(true),
            _ => None,
        }
    }

    /// Records what the backend picked.
    pub fn learn(&self, h2: bool) {
        self.0.store(if h2 { Self::H2 } else { Self::HTTP1 }, Ordering::Relaxed);
    }

    /// Forgets it: the next request asks again.
    pub fn forget(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Backend {
    /// A backend for `config` in a pool configured as `pool`, continuing
    /// the `previous` backend's load and metrics when it already existed.
    pub fn new(
        config: &fulcrum_config::Backend,
        pool: &fulcrum_config::Pool,
        previous: Option<&Backend>,
    ) -> Self {
        let draining = config.state == fulcrum_config::BackendState::Draining;
        let draining_since = match previous {
            _ if !draining => 0,
            Some(p) if p.state == fulcrum_config::BackendState::Draining => p.draining_since,
            _ => crate::clock::now_nanos().max(1),
        };
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            address: config.address,
            address_key: crate::affinity::address_key(&config.address.to_string()),
            weight: config.weight,
            zone: config.zone.clone(),
            region: config.region.clone(),
            priority: config.priority,
            state: config.state,
            origin: config.origin,
            load: previous.map(|p| Arc::clone(&p.load)).unwrap_or_default(),
            metrics: previous.map(|p| Arc::clone(&p.metrics)).unwrap_or_default(),
            guards: Guards::new(pool),
            ramp_from: AtomicU64::new(0),
            draining_since,
            negotiated: Negotiated::default(),
        }
    }

    /// Whether `config` describes this backend unchanged.
    pub fn matches(&self, config: &fulcrum_config::Backend) -> bool {
        self.address == config.address
            && self.weight == config.weight
            && self.zone == config.zone
            && self.region == config.region
            && self.priority == config.priority
            && self.state == config.state
            && self.origin == config.origin
    }

    /// Whether the backend may take a new request at `now`.
    pub fn is_available(&self, now: u64) -> bool {
        self.state == fulcrum_config::BackendState::Active && self.guards.serves(now, self.load.in_flight())
    }

    /// When it started draining (monotonic nanos); 0 unless draining.
    pub fn draining_since(&self) -> u64 {
        self.draining_since
    }

    /// Starts a slow-start ramp at `now` (monotonic nanos).
    pub fn start_ramp(&self, now: u64) {
        self.ramp_from.store(now.max(1), Ordering::Relaxed);
    }

    /// The fraction of its weight the backend gets at `now` under a ramp of
    /// `ramp` nanos: linear from near 0 to 1 (HAProxy's `slowstart`).
    /// Returns `None` when it is not (or no longer) ramping.
    pub fn ramp_fraction(&self, now: u64, ramp: u64) -> Option<f64> {
        let from = self.ramp_from.load(Ordering::Relaxed);
        if from == 0 {
            return None;
        }
        let fraction = now.saturating_sub(from) as f64 / ramp.max(1) as f64;
        if fraction >= 1.0 {
            self.ramp_from.store(0, Ordering::Relaxed);
            return None;
        }
        Some(fraction)
    }
}
