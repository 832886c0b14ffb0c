//! The comparison: one row per algorithm, as a table for people and as
//! JSON (`{"results": [...]}`) for scripts.

use serde::Serialize;

use crate::engine::Run;

/// One algorithm's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Config name.
    pub algorithm: String,
    /// Requests that arrived.
    pub requests: u64,
    /// Share answered within the client timeout (0..=1).
    pub success_rate: f64,
    /// Latency percentiles of answered requests, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Busiest backend's requests over the mean (1.0 = perfectly even).
    pub max_over_mean_load: f64,
    /// Share of keys that changed backend at membership changes (hashing algorithms).
    pub keys_moved: Option<f64>,
    /// Requests no backend could take (all ejected, open or at their limit).
    pub no_backend: u64,
    /// Outlier ejections, all backends.
    pub ejections: u32,
    /// Circuit breaker openings, all backends.
    pub breaker_opens: u32,
    /// Requests shed by admission control (queue full or deadline).
    pub shed: u64,
}

/// All rows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// In scenario order.
    pub results: Vec<Row>,
}

impl Row {
    /// The figures of `run`.
    pub fn of(run: &Run) -> Self {
        let quantile = |q: f64| run.latency_us.value_at_quantile(q) as f64 / 1000.0;
        let used: Vec<u64> = run.per_backend.iter().copied().filter(|&n| n > 0).collect();
        let mean = used.iter().sum::<u64>() as f64 / used.len().max(1) as f64;
        Row {
            algorithm: run.algorithm.clone(),
            requests: run.requests,
            success_rate: run.successes as f64 / run.requests.max(1) as f64,
            p50_ms: quantile(0.5),
            p90_ms: quantile(0.9),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            max_over_mean_load: used.iter().max().map_or(0.0, |&m| m as f64 / mean),
            keys_moved: run.keys_moved,
            no_backend: run.no_backend,
            ejections: run.ejections.iter().sum(),
            breaker_opens: run.breaker_opens.iter().sum(),
            shed: run.shed,
        }
    }
}

impl Report {
    /// A fixed-width table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8}\n",
            "algorithm",
            "requests",
            "success",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max/mean",
            "keys moved",
            "ejected",
            "opened",
            "shed"
        );
        for r in &self.results {
            let moved = r.keys_moved.map_or("-".to_string(), |m| format!("{:.1}%", m * 100.0));
            out += &format!(
                "{:<24} {:>9} {:>8.2}% {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.2} {:>10} {:>8} {:>8} {:>8}\n",
                r.algorithm,
                r.requests,
                r.success_rate * 100.0,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.p999_ms,
                r.max_over_mean_load,
                moved,
                r.ejections,
                r.breaker_opens,
                r.shed
            );
        }
        out
    }

    /// `{"results": [...]}`.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}
