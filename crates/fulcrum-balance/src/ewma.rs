//! Latency estimators, lock-free and driven by explicit timestamps.
//!
//! [`PeakEwma`] is Finagle's peak-EWMA as in linkerd2-proxy and tower's
//! `load::PeakEwma`: a sample above the estimate replaces it at once (so a
//! backend that slows down is penalised immediately), otherwise the
//! estimate moves toward the sample with weight `1 - e^(-Δt/τ)`. Read at a
//! later time, the estimate decays toward zero with the same time constant
//! (tower's `decay`), so a backend that was slow once is tried again.
//!
//! [`Ewma`] is the plain time-weighted average (no peak), used by
//! `least_response_time`.
//!
//! State is two atomics updated without a lock: concurrent updates may
//! lose a sample, which only makes the estimate a little older — the same
//! trade-off HAProxy makes for its per-server statistics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Finagle's peak-sensitive EWMA of latency, in nanoseconds.
#[derive(Debug)]
pub struct PeakEwma(Estimate);

/// A time-weighted EWMA of latency, in nanoseconds.
#[derive(Debug)]
pub struct Ewma(Estimate);

#[derive(Debug)]
struct Estimate {
    nanos_bits: AtomicU64,
    updated_at: AtomicU64,
    tau_nanos: f64,
}

impl Estimate {
    fn new(initial_nanos: f64, now: u64, tau_nanos: f64) -> Self {
        Self {
            nanos_bits: AtomicU64::new(initial_nanos.to_bits()),
            updated_at: AtomicU64::new(now),
            tau_nanos,
        }
    }

    fn raw(&self) -> (f64, u64) {
        (f64::from_bits(self.nanos_bits.load(Ordering::Relaxed)), self.updated_at.load(Ordering::Relaxed))
    }

    fn decay(&self, elapsed: u64) -> f64 {
        (-(elapsed as f64) / self.tau_nanos).exp()
    }

    fn observe(&self, sample_nanos: f64, now: u64, peak: bool) {
        let (estimate, at) = self.raw();
        let next = if peak && sample_nanos > estimate {
            sample_nanos
        } else {
            let decay = self.decay(now.saturating_sub(at));
            estimate * decay + sample_nanos * (1.0 - decay)
        };
        self.nanos_bits.store(next.to_bits(), Ordering::Relaxed);
        self.updated_at.store(now.max(at), Ordering::Relaxed);
    }
}

impl PeakEwma {
    /// An estimator starting at `initial_nanos` at time `now`, with time
    /// constant `tau_nanos`.
    pub fn new(initial_nanos: f64, now: u64, tau_nanos: f64) -> Self {
        Self(Estimate::new(initial_nanos, now, tau_nanos))
    }

    /// Records a response that took `sample_nanos`, observed at `now`.
    pub fn observe(&self, sample_nanos: f64, now: u64) {
        self.0.observe(sample_nanos, now, true);
    }

    /// The estimate as of `now`, decayed toward zero since the last sample.
    pub fn get(&self, now: u64) -> f64 {
        let (estimate, at) = self.0.raw();
        estimate * self.0.decay(now.saturating_sub(at))
    }
}

impl Ewma {
    /// An average starting at `initial_nanos` at time `now`, with time
    /// constant `tau_nanos`.
    pub fn new(initial_nanos: f64, now: u64, tau_nanos: f64) -> Self {
        Self(Estimate::new(initial_nanos, now, tau_nanos))
    }

    /// Records a response that took `sample_nanos`, observed at `now`.
    pub fn observe(&self, sample_nanos: f64, now: u64) {
        self.0.observe(sample_nanos, now, false);
    }

    /// The current average.
    pub fn get(&self) -> f64 {
        self.0.raw().0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1_000_000.0;
    const SECOND: f64 = 1_000_000_000.0;

    #[test]
    fn peak_ewma_decays_like_towers_default() {
        // tower's `default_decay`: 10 ms default, τ = 1 s, 100 ms later in (9, 10) ms.
        let ewma = PeakEwma::new(10.0 * MS, 0, SECOND);
        assert_eq!(ewma.get(0), 10.0 * MS);
        let later = ewma.get(100 * MS as u64);
        assert!(later > 9.0 * MS && later < 10.0 * MS, "{later}");
    }

    #[test]
    fn peak_ewma_jumps_to_a_slower_sample_and_eases_back() {
        let ewma = PeakEwma::new(10.0 * MS, 0, SECOND);
        ewma.observe(200.0 * MS, 1);
        assert_eq!(ewma.get(1), 200.0 * MS);
        ewma.observe(10.0 * MS, 500 * MS as u64);
        let eased = ewma.get(500 * MS as u64);
        assert!(eased < 200.0 * MS && eased > 10.0 * MS, "{eased}");
    }

    #[test]
    fn plain_ewma_moves_toward_samples_by_elapsed_time() {
        let ewma = Ewma::new(100.0, 0, 1000.0);
        ewma.observe(0.0, 1000);
        let expected = 100.0 * (-1.0f64).exp();
        assert!((ewma.get() - expected).abs() < 1e-9);
        ewma.observe(1000.0, 1000);
        assert!((ewma.get() - expected).abs() < 1e-9, "a sample at the same instant has no weight");
    }
}
