//! Fulcrum's pure balancing core.
//!
//! Everything that decides *which backend* lives here, free of any async
//! runtime or I/O so that it can be tested with a fake clock and seeded
//! randomness, reused by the simulator, and kept fast:
//!
//! - [`Load`]: the live, lock-free counters of one backend (in-flight
//!   requests, totals) that load-aware algorithms read;
//! - [`Selector`]: the one trait every algorithm implements. A selector is
//!   built once per membership change ("build slowly, pick quickly", as
//!   pingora-load-balancing does) and then only read on the request path;
//! - [`algorithms`]: one module per algorithm, each citing its source;
//! - [`SplitMix64`]: the seeded random source passed into picks.
//!
//! Algorithms return the first *acceptable* candidate in their own order;
//! the caller decides what is acceptable (health, circuit breaker, drain)
//! through one filter, so no algorithm re-implements availability
//! (pingora's `select_with(key, max_iterations, accept)`).

pub mod algorithms;
pub mod autoscale;
pub mod canary;
mod ewma;
mod hash;
mod load;
pub mod resilience;
mod rng;
mod selector;
pub mod tiers;

pub use algorithms::{build_selector, Algorithm};
pub use ewma::{Ewma, PeakEwma};
pub use hash::{hash64, mix64};
pub use load::{InFlight, Load, DEFAULT_RTT_NANOS, EWMA_TAU_NANOS, PEAK_EWMA_TAU_NANOS};
pub use rng::SplitMix64;
pub use selector::{scan, Member, PickContext, Selector, MAX_CANDIDATES};
