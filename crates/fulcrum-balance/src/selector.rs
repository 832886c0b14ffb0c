//! The selection trait every balancing algorithm implements.
//!
//! A [`Selector`] is built from the pool's members when membership or
//! weights change, then shared read-only by every request. A pick walks the
//! algorithm's candidates in its own preference order and returns the first
//! one the caller's `accept` filter admits, so health, circuit breakers,
//! draining and locality are decided in one place for all algorithms.

use std::fmt;
use std::sync::Arc;

use crate::{Load, SplitMix64};

/// One backend as an algorithm sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Stable identity used by hashing algorithms (the backend's address),
    /// so that every instance and every restart agrees on placement.
    pub key: String,
    /// Relative capacity, at least 1.
    pub weight: u32,
    /// Live counters shared with the data path.
    pub load: Arc<Load>,
}

/// What a pick may know about the request and the world. Time and
/// randomness are arguments so the core runs on a fake clock and a seed.
#[derive(Debug)]
pub struct PickContext<'a> {
    /// Hash of the request's affinity key (client address, header, ...),
    /// when the pool's algorithm uses one and the request carries it.
    pub key: Option<u64>,
    /// Monotonic time in nanoseconds since an arbitrary epoch.
    pub now_nanos: u64,
    /// The caller's random source.
    pub rng: &'a mut SplitMix64,
}

/// Most candidates a pick offers `accept` in the algorithm's own order
/// before it falls back to [`scan`] (pingora's `select_with(key,
/// max_iterations, accept)`): with most backends rejected, a walk over a
/// precomputed cycle or ring could otherwise touch every entry of it.
pub const MAX_CANDIDATES: usize = 64;

/// The fallback of a bounded walk: members `start, start + 1, …` (mod
/// `len`), the first one `accept` admits. At most `len` calls.
pub fn scan(len: usize, start: usize, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
    (0..len).map(|i| (start + i) % len).find(|&i| accept(i))
}

/// A balancing algorithm, built for one membership.
pub trait Selector: Send + Sync + fmt::Debug {
    /// The index (into the members it was built from) of the best candidate
    /// that `accept` admits, or `None` when no member is acceptable.
    fn pick(&self, ctx: &mut PickContext<'_>, accept: &dyn Fn(usize) -> bool) -> Option<usize>;

    /// Periodic upkeep at `now_nanos` (e.g. `adaptive` recomputes its
    /// weights); called off the request path. Most algorithms need none.
    fn tick(&self, _now_nanos: u64) {}
}
