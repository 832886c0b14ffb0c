//! Recommendations from live statistics ("monitor key metrics" advice
//! made concrete): each names what triggered it, the figure, and
//! what an operator could do about it.

use fulcrum_proxy::{BackendStats, PoolStats, Stats};
use serde::Serialize;

/// Requests a backend needs before its distribution share is judged.
const MIN_REQUESTS: u64 = 100;

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// `uneven_distribution`, `high_error_rate`, `low_healthy_share`, `high_p99` or `flapping_circuit`.
    pub kind: &'static str,
    /// The pool concerned.
    pub pool: String,
    /// The backend concerned, if one.
    pub backend: Option<String>,
    /// The figure that triggered it.
    pub figure: String,
    /// What to do.
    pub action: &'static str,
}

fn serving(b: &BackendStats) -> bool {
    b.state == "active" && b.health != "unhealthy" && !b.ejected && b.circuit != "open"
}

/// Every recommendation the current figures call for.
pub fn recommendations(stats: &Stats) -> Vec<Recommendation> {
    stats.pools.iter().flat_map(pool_recommendations).collect()
}

fn pool_recommendations(pool: &PoolStats) -> Vec<Recommendation> {
    let mut found = Vec::new();
    let mut add = |kind, backend: Option<&BackendStats>, figure: String, action| {
        found.push(Recommendation {
            kind,
            pool: pool.name.clone(),
            backend: backend.map(|b| b.id.clone()),
            figure,
            action,
        })
    };
    let active: Vec<&BackendStats> = pool.backends.iter().filter(|b| b.state == "active").collect();
    let unweighted = matches!(pool.algorithm, "round_robin" | "random" | "least_connections");
    if unweighted && active.len() > 1 {
        let busiest = active.iter().max_by_key(|b| b.requests_total).expect("two or more");
        let idlest = active.iter().min_by_key(|b| b.requests_total).expect("two or more");
        if busiest.requests_total >= MIN_REQUESTS && busiest.requests_total > 3 * idlest.requests_total {
            add(
                "uneven_distribution",
                Some(busiest),
                format!("{} requests against {} on {}", busiest.requests_total, idlest.requests_total, idlest.id),
                "traffic is uneven under an unweighted algorithm: check the idle backend's health and the clients' keep-alive spread, or use p2c",
            );
        }
    }
    for backend in &pool.backends {
        if backend.error_rate > 0.05 {
            add(
                "high_error_rate",
                Some(backend),
                format!("{:.1}% of requests failed in the last minute", backend.error_rate * 100.0),
                "check the backend's logs; passive_health or a circuit_breaker on the pool keeps traffic off it meanwhile",
            );
        }
        if let Some(p99) = backend.p99_ms.filter(|&p| p > 1000.0) {
            add(
                "high_p99",
                Some(backend),
                format!("p99 response time {p99:.0} ms"),
                "a load-aware algorithm (p2c, least_response_time) sends a slow backend less; check what slows it",
            );
        }
        if backend.circuit_opens_10m >= 3 {
            add(
                "flapping_circuit",
                Some(backend),
                format!("the circuit opened {} times in 10 minutes", backend.circuit_opens_10m),
                "the backend keeps failing its probes: fix it, or raise wait_in_open / minimum_calls so it stays out until it recovers",
            );
        }
    }
    let total = pool.backends.len();
    let healthy = pool.backends.iter().filter(|b| serving(b)).count();
    if total > 0 && (healthy as f64) < 0.8 * total as f64 {
        add(
            "low_healthy_share",
            None,
            format!("{healthy} of {total} backends can take traffic"),
            "the survivors carry everyone's load: fix or replace the failing backends, or add capacity",
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str, requests: u64) -> BackendStats {
        BackendStats {
            id: id.into(),
            address: id.into(),
            weight: 1,
            effective_weight: 1.0,
            zone: None,
            state: "active",
            origin: "static",
            active_requests: 0,
            requests_total: requests,
            errors_total: 0,
            health: "healthy",
            circuit: "closed",
            ejected: false,
            latency_ewma_ms: 1.0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            error_rate: 0.0,
            circuit_opens_10m: 0,
        }
    }

    fn pool(algorithm: &'static str, backends: Vec<BackendStats>) -> Stats {
        Stats {
            listeners: Vec::new(),
            pools: vec![PoolStats {
                name: "app".into(),
                algorithm,
                backends,
                admission: None,
                autoscale: None,
            }],
        }
    }

    fn kinds(stats: &Stats) -> Vec<&'static str> {
        recommendations(stats).iter().map(|r| r.kind).collect()
    }

    #[test]
    fn a_healthy_even_pool_needs_nothing() {
        assert!(kinds(&pool("round_robin", vec![backend("a", 500), backend("b", 480)])).is_empty());
    }

    #[test]
    fn uneven_traffic_under_an_unweighted_algorithm_is_flagged_with_its_figure() {
        let stats = pool("round_robin", vec![backend("a", 400), backend("b", 100)]);
        let found = recommendations(&stats);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].kind, found[0].backend.as_deref()), ("uneven_distribution", Some("a")));
        assert_eq!(found[0].figure, "400 requests against 100 on b");
        assert!(
            kinds(&pool("p2c", vec![backend("a", 400), backend("b", 100)])).is_empty(),
            "p2c skews on purpose"
        );
    }

    #[test]
    fn errors_latency_flapping_and_low_health_are_each_flagged() {
        let mut failing = backend("a", 100);
        failing.error_rate = 0.12;
        let mut slow = backend("b", 100);
        slow.p99_ms = Some(2400.0);
        let mut flapping = backend("c", 100);
        flapping.circuit_opens_10m = 4;
        flapping.circuit = "open";
        let mut down = backend("d", 100);
        down.health = "unhealthy";
        let stats = pool("p2c", vec![failing, slow, flapping, down, backend("e", 100)]);
        let found = recommendations(&stats);
        assert_eq!(
            found.iter().map(|r| r.kind).collect::<Vec<_>>(),
            ["high_error_rate", "high_p99", "flapping_circuit", "low_healthy_share"]
        );
        assert_eq!(found[0].figure, "12.0% of requests failed in the last minute");
        assert_eq!(found[3].figure, "3 of 5 backends can take traffic");
    }
}
