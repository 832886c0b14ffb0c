//! Live load of one backend: lock-free counters shared by the data path
//! (which updates them) and load-aware algorithms (which read them).
//!
//! A `Load` outlives selector rebuilds: when membership changes, surviving
//! backends keep their `Arc<Load>` so in-flight counts stay exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::ewma::{Ewma, PeakEwma};

/// Latency assumed for a backend before its first response (linkerd2-proxy's default).
pub const DEFAULT_RTT_NANOS: f64 = 30_000_000.0;
/// Time constant of the peak-EWMA used by `p2c` (linkerd2-proxy's 10 s).
pub const PEAK_EWMA_TAU_NANOS: f64 = 10_000_000_000.0;
/// Time constant of the latency EWMA used by `least_response_time`.
pub const EWMA_TAU_NANOS: f64 = 1_000_000_000.0;

/// Counters for one backend.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicU64,
    requests_total: AtomicU64,
    errors_total: AtomicU64,
    peak_rtt: PeakEwma,
    latency: Ewma,
}

impl Default for Load {
    fn default() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            requests_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            peak_rtt: PeakEwma::new(DEFAULT_RTT_NANOS, 0, PEAK_EWMA_TAU_NANOS),
            latency: Ewma::new(DEFAULT_RTT_NANOS, 0, EWMA_TAU_NANOS),
        }
    }
}

impl Load {
    /// Records that a response took `latency_nanos`, observed at `now`.
    pub fn observe_latency(&self, latency_nanos: u64, now: u64) {
        self.peak_rtt.observe(latency_nanos as f64, now);
        self.latency.observe(latency_nanos as f64, now);
    }

    /// Finagle's peak-EWMA cost as of `now`: RTT estimate × (in-flight + 1).
    pub fn peak_ewma_cost(&self, now: u64) -> f64 {
        self.peak_rtt.get(now) * (self.in_flight() + 1) as f64
    }

    /// The time-weighted average latency, in nanoseconds.
    pub fn latency_ewma_nanos(&self) -> f64 {
        self.latency.get()
    }

    /// Requests sent to this backend and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests started on this backend since it was added.
    pub fn requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// Requests that ended in a transport error or a 5xx.
    pub fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }

    /// Counts one failed request.
    pub fn record_error(&self) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a request as started; the returned guard marks it finished
    /// when dropped, so a request counts exactly as long as it lives.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        InFlight { load: Arc::clone(self) }
    }
}

/// One in-flight request on a backend; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    load: Arc<Load>,
}

impl InFlight {
    /// The backend's load this request counts against.
    pub fn load(&self) -> &Load {
        &self.load
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_follows_guards() {
        let load = Arc::new(Load::default());
        let a = load.start();
        let b = load.start();
        assert_eq!(load.in_flight(), 2);
        drop(a);
        assert_eq!(load.in_flight(), 1);
        drop(b);
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.requests_total(), 2);
    }
}
