//! Prometheus metrics (the `lb_*` names the README lists), kept lock-free on the request path:
//! each backend counts responses by status code, latencies in fixed
//! histogram buckets (0.5 ms to 10 s) and a one-minute error window in
//! plain atomics; a `prometheus_client` [`Collector`] reads them only when
//! `/metrics` is scraped.
//!
//! The minute window is 60 one-second slots reset lazily by the first
//! request of a new second; a request racing that reset may be lost from
//! the window (never from the totals), an accepted imprecision for a rate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::pool::Pool;

/// Upper bounds of the response-time histogram, seconds.
pub const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const SECOND: u64 = 1_000_000_000;

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
    codes: Box<[AtomicU64]>,
    /// Per-bucket latency counts; the last is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_nanos: AtomicU64,
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

/// How a per-backend gauge is read.
type GaugeValue<'a> = dyn Fn(&crate::backend::Backend) -> f64 + 'a;

/// Encodes every pool's metrics on scrape.
#[derive(Debug)]
pub struct PoolsCollector {
    /// The pools as running when the scrape began.
    pub pools: Vec<Arc<Pool>>,
}

fn describe<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, kind)
}

impl Collector for PoolsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = crate::clock::now_nanos();
        let labels: Vec<Vec<(String, String)>> = self
            .pools
            .iter()
            .flat_map(|p| {
                p.backends.iter().map(|b| {
                    vec![("pool".into(), p.name.to_string()), ("backend".into(), b.address.to_string())]
                })
            })
            .collect();
        let backends: Vec<_> = self.pools.iter().flat_map(|p| p.backends.iter()).collect();

        let mut family = describe(
            &mut encoder,
            "lb_requests",
            "Requests by backend and status code.",
            MetricType::Counter,
        )?;
        for (backend, labels) in backends.iter().zip(&labels) {
            for (index, count) in backend.metrics.codes.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let mut with_code = labels.clone();
                    with_code.push(("code".into(), (index + 100).to_string()));
                    ConstCounter::new(count).encode(family.encode_family(&with_code)?)?;
                }
            }
        }

        let mut family = describe(
            &mut encoder,
            "lb_response_time_seconds",
            "Time from request sent to response headers, by backend.",
            MetricType::Histogram,
        )?;
        for (backend, labels) in backends.iter().zip(&labels) {
            let m = &backend.metrics;
            let mut buckets: Vec<(f64, u64)> = BUCKETS
                .iter()
                .zip(&m.buckets)
                .map(|(&upper, c)| (upper, c.load(Ordering::Relaxed)))
                .collect();
            buckets.push((f64::MAX, m.buckets[BUCKETS.len()].load(Ordering::Relaxed)));
            let count = buckets.iter().map(|(_, c)| c).sum();
            let sum = m.latency_sum_nanos.load(Ordering::Relaxed) as f64 / SECOND as f64;
            family
                .encode_family(labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        }

        let gauges: [(&str, &str, &GaugeValue<'_>); 4] = [
            ("lb_active_connections", "Requests in flight, by backend.", &|b| b.load.in_flight() as f64),
            ("lb_backend_health", "1 when the backend may take traffic, 0 when not.", &|b| {
                f64::from(u8::from(b.is_available(now)))
            }),
            ("lb_error_rate", "Errors over requests in the last minute, by backend.", &|b| {
                b.metrics.error_rate(now)
            }),
            ("lb_circuit_breaker_state", "0 closed, 1 half-open, 2 open.", &|b| {
                f64::from(b.guards.breaker_state().gauge())
            }),
        ];
        for (name, help, value) in gauges {
            let mut family = describe(&mut encoder, name, help, MetricType::Gauge)?;
            for (backend, labels) in backends.iter().zip(&labels) {
                ConstGauge::new(value(backend)).encode(family.encode_family(labels)?)?;
            }
        }

        let mut family = describe(&mut encoder, "lb_retries", "Retries made, by pool.", MetricType::Counter)?;
        for pool in &self.pools {
            let labels = [("pool".to_string(), pool.name.to_string())];
            ConstCounter::new(pool.metrics.retries.load(Ordering::Relaxed))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Rewrites OpenMetrics text as the classic Prometheus text format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(&name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn classic_text_names_counter_series_and_drops_eof() {
        let text = "# HELP lb_retries Retries.\n# TYPE lb_retries counter\nlb_retries_total{pool=\"a\"} 1\n# HELP g G.\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            super::to_prometheus_text(text),
            "# HELP lb_retries_total Retries.\n# TYPE lb_retries_total counter\nlb_retries_total{pool=\"a\"} 1\n# HELP g G.\n# TYPE g gauge\ng 2\n"
        );
    }

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
