//! Per-backend and per-pool counters, kept lock-free on the request path:
//! each backend counts responses by status code, latencies in fixed
//! histogram buckets (0.5 ms to 10 s) and a one-minute error window in
//! plain atomics. [`crate::exporter`] reads them only when `/metrics` is
//! scraped. A leaf module: it depends on nothing else of the proxy.
//!
//! The minute window is 60 one-second slots reset lazily by the first
//! request of a new second; a request racing that reset may be lost from
//! the window (never from the totals), an accepted imprecision for a rate.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the response-time histogram, seconds.
pub const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
pub const SECOND: u64 = 1_000_000_000;

#[derive(Debug, Default)]
struct MinuteSlot {
    second: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

/// One backend's response metrics.
#[derive(Debug)]
pub struct BackendMetrics {
    /// Responses by status, index = status - 100 (100..=599).
    pub(crate) codes: Box<[AtomicU64]>,
    /// Per-bucket latency counts; the last is +Inf.
    pub(crate) buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of all latencies, for the histogram's `_sum`.
    pub(crate) latency_sum_nanos: AtomicU64,
    minute: [MinuteSlot; 60],
}

impl Default for BackendMetrics {
    fn default() -> Self {
        Self {
            codes: (100..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            latency_sum_nanos: AtomicU64::new(0),
            minute: std::array::from_fn(|_| MinuteSlot::default()),
        }
    }
}

impl BackendMetrics {
    /// Records a response with `status` that took `latency_nanos`, at `now`.
    pub fn record(&self, status: u16, latency_nanos: u64, now: u64) {
        if let Some(code) = self.codes.get(usize::from(status).wrapping_sub(100)) {
            code.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = latency_nanos as f64 / SECOND as f64;
        let bucket = BUCKETS.iter().position(|&upper| seconds <= upper).unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_nanos.fetch_add(latency_nanos, Ordering::Relaxed);
        let second = now / SECOND;
        let slot = &self.minute[(second % 60) as usize];
        if slot.second.swap(second, Ordering::Relaxed) != second {
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The `q` quantile of response time in milliseconds, interpolated
    /// within its histogram bucket; `None` before any response.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0);
        let mut seen = 0.0;
        for (i, &count) in counts.iter().enumerate() {
            let before = seen;
            seen += count as f64;
            if seen >= rank {
                let low = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let high = BUCKETS.get(i).copied().unwrap_or(BUCKETS[BUCKETS.len() - 1]);
                let within = if count == 0 { 1.0 } else { (rank - before) / count as f64 };
                return Some((low + (high - low) * within) * 1000.0);
            }
        }
        None
    }

    /// Errors (5xx, including Fulcrum's own 502/504) over requests in the last minute.
    pub fn error_rate(&self, now: u64) -> f64 {
        let second = now / SECOND;
        let (requests, errors) = self
            .minute
            .iter()
            .filter(|slot| second.saturating_sub(slot.second.load(Ordering::Relaxed)) < 60)
            .fold((0, 0), |(r, e), slot| {
                (r + slot.requests.load(Ordering::Relaxed), e + slot.errors.load(Ordering::Relaxed))
            });
        if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        }
    }
}

/// Counters of one pool.
#[derive(Debug, Default)]
pub struct PoolMetrics {
    /// Retries made.
    pub retries: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_codes_buckets_and_a_minute_of_errors() {
        let m = BackendMetrics::default();
        m.record(200, 3_000_000, 10 * SECOND);
        m.record(503, 20_000_000_000, 10 * SECOND);
        m.record(200, 1_000, 11 * SECOND);
        assert_eq!(m.codes[100].load(Ordering::Relaxed), 2);
        assert_eq!(m.codes[403].load(Ordering::Relaxed), 1);
        assert_eq!(m.buckets[3].load(Ordering::Relaxed), 1, "3 ms falls in the 5 ms bucket");
        assert_eq!(m.buckets[BUCKETS.len()].load(Ordering::Relaxed), 1, "20 s is above 10 s");
        assert!((m.error_rate(11 * SECOND) - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(m.error_rate(71 * SECOND), 0.0, "a minute later the window is empty");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let m = BackendMetrics::default();
        assert_eq!(m.quantile_ms(0.5), None);
        for _ in 0..100 {
            m.record(200, 30_000_000, 0); // 30 ms: the 25..50 ms bucket
        }
        let p50 = m.quantile_ms(0.5).unwrap();
        assert!((25.0..=50.0).contains(&p50), "{p50}");
        m.record(200, 4_000_000_000, 0); // one 4 s outlier
        assert!(m.quantile_ms(0.999).unwrap() > 2500.0);
        assert!(m.quantile_ms(0.99).unwrap() <= 50.0);
    }
}
