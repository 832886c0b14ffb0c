//! The Prometheus exporter: a `prometheus_client` [`Collector`] that
//! encodes every pool's counters ([`crate::metrics`]) with the `lb_*` names
//! the README lists when `/metrics` is scraped, and the rewrite to the
//! classic text format for scrapers that do not ask for OpenMetrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::metrics::{BUCKETS, SECOND};
use crate::pool::Pool;

/// How a per-backend gauge is read.
type GaugeValue<'a> = dyn Fn(&crate::backend::Backend) -> f64 + 'a;

/// Encodes every pool's metrics on scrape.
#[derive(Debug)]
pub struct PoolsCollector {
    /// The pools as running when the scrape began.
    pub pools: Vec<Arc<Pool>>,
    /// Failed commands of the `[redis]` store, when there is one.
    pub store_errors: Option<u64>,
    /// Every rate limit.
    pub limiters: Vec<Arc<crate::admission::rate_limit::RateLimiter>>,
    /// Every listener's gate, by listener name.
    pub gates: Vec<(String, Arc<crate::gate::Gate>)>,
    /// Every route's live canary.
    pub canaries: Vec<Arc<crate::release::canary::LiveCanary>>,
    /// Every mirrored route's counts.
    pub mirrors: Vec<Arc<crate::release::mirror::MirrorSlots>>,
    /// Backends each autoscaled pool is advised to have.
    pub desired: Vec<(String, u32)>,
    /// Open HTTP client connections: awake, and napping.
    pub client_connections: crate::http::Census,
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
        let mut family = describe(
            &mut encoder,
            "lb_client_connections",
            "Open HTTP client connections, by state: awake (being served) or napping (idle, holding only their socket).",
            MetricType::Gauge,
        )?;
        let census = &self.client_connections;
        for (state, count) in [("awake", census.awake), ("napping", census.napping)] {
            let labels = [("state".to_string(), state.to_string())];
            ConstGauge::new(count as i64).encode(family.encode_family(&labels)?)?;
        }
        self.encode_affinity(&mut encoder)?;
        self.encode_refused(&mut encoder)?;
        self.encode_release(&mut encoder)?;
        if !self.desired.is_empty() {
            let mut family = describe(
                &mut encoder,
                "lb_autoscale_desired_backends",
                "Backends the autoscaling advisor advises, by pool.",
                MetricType::Gauge,
            )?;
            for (pool, desired) in &self.desired {
                let labels = [("pool".to_string(), pool.clone())];
                ConstGauge::new(i64::from(*desired)).encode(family.encode_family(&labels)?)?;
            }
        }
        self.encode_admission(&mut encoder)
    }
}

impl PoolsCollector {
    /// Connections and requests refused at a listener's door.
    fn encode_refused(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut family = describe(
            encoder,
            "lb_refused",
            "Connections and requests refused by listener access rules and limits, by reason.",
            MetricType::Counter,
        )?;
        for (listener, gate) in &self.gates {
            for why in crate::gate::Refused::ALL {
                let labels =
                    [("listener".to_string(), listener.clone()), ("reason".into(), why.name().into())];
                ConstCounter::new(gate.refused(why)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// Canary states and weights, and mirrored copies by result.
    fn encode_release(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let route = |listener: &str, route: &str| {
            vec![("listener".to_string(), listener.to_string()), ("route".into(), route.into())]
        };
        if !self.canaries.is_empty() {
            let mut family = describe(
                encoder,
                "lb_canary_state",
                "Canary state by route: 0 rolled back, 1 progressing, 2 promoted.",
                MetricType::Gauge,
            )?;
            for canary in &self.canaries {
                let labels = route(&canary.listener, &canary.route);
                ConstGauge::new(canary.phase().gauge()).encode(family.encode_family(&labels)?)?;
            }
            let mut family = describe(
                encoder,
                "lb_canary_weight",
                "Percent of the route's traffic the canary pool takes.",
                MetricType::Gauge,
            )?;
            for canary in &self.canaries {
                let labels = route(&canary.listener, &canary.route);
                ConstGauge::new(f64::from(canary.share()) / 100.0).encode(family.encode_family(&labels)?)?;
            }
        }
        if !self.mirrors.is_empty() {
            let mut family = describe(
                encoder,
                "lb_mirror",
                "Mirrored copies of requests by route and result.",
                MetricType::Counter,
            )?;
            for mirror in &self.mirrors {
                for (result, count) in mirror.counts() {
                    let mut labels = route(&mirror.listener, &mirror.route);
                    labels.push(("result".into(), result.name().into()));
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }

    /// Rate-limit refusals, and the queues and limits of pools with admission control.
    fn encode_admission(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        if !self.limiters.is_empty() {
            let mut family = describe(
                encoder,
                "lb_rate_limited",
                "Requests refused with 429, by rate limit.",
                MetricType::Counter,
            )?;
            for limiter in &self.limiters {
                let labels = [("limit".to_string(), limiter.name.to_string())];
                ConstCounter::new(limiter.refused()).encode(family.encode_family(&labels)?)?;
            }
        }
        let admitting: Vec<(&Arc<Pool>, &crate::admission::PoolAdmission)> =
            self.pools.iter().filter_map(|p| Some((p, p.admission.as_deref()?))).collect();
        if admitting.is_empty() {
            return Ok(());
        }
        let mut family = describe(
            encoder,
            "lb_shed",
            "Requests shed with 503 by admission control, by class and reason (deadline, queue_full).",
            MetricType::Counter,
        )?;
        for (pool, admission) in &admitting {
            for class in &admission.classes {
                for why in [crate::admission::Shed::Deadline, crate::admission::Shed::QueueFull] {
                    let labels = [
                        ("pool".to_string(), pool.name.to_string()),
                        ("class".into(), class.name.clone()),
                        ("reason".into(), why.name().into()),
                    ];
                    ConstCounter::new(class.shed(why)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let mut family =
            describe(encoder, "lb_queue_depth", "Requests waiting for a slot, by class.", MetricType::Gauge)?;
        for (pool, admission) in &admitting {
            for (class, depth) in admission.classes.iter().zip(admission.queue_depths()) {
                let labels =
                    [("pool".to_string(), pool.name.to_string()), ("class".into(), class.name.clone())];
                ConstGauge::new(depth as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = describe(
            encoder,
            "lb_concurrency_limit",
            "Requests the pool admits at once (fixed, or the adaptive limit now).",
            MetricType::Gauge,
        )?;
        for (pool, admission) in &admitting {
            let labels = [("pool".to_string(), pool.name.to_string())];
            ConstGauge::new(i64::from(admission.limit())).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// Session placements and counts of pools with affinity, and the shared store's errors.
    fn encode_affinity(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sticky: Vec<(&Arc<Pool>, &crate::affinity::Affinity)> =
            self.pools.iter().filter_map(|p| Some((p, p.affinity.as_ref()?))).collect();
        if !sticky.is_empty() {
            let mut family = describe(
                encoder,
                "lb_affinity",
                "Requests of pools with affinity by how their session was placed: hit, new, failover, invalid.",
                MetricType::Counter,
            )?;
            for (pool, affinity) in &sticky {
                let placements = affinity.sessions().placements();
                for (placement, count) in crate::affinity::Placement::ALL.iter().zip(placements) {
                    let labels = [
                        ("pool".to_string(), pool.name.to_string()),
                        ("result".into(), placement.name().into()),
                    ];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
            let mut family = describe(
                encoder,
                "lb_affinity_sessions",
                "Live sessions bound to each backend, as this instance knows them.",
                MetricType::Gauge,
            )?;
            for (pool, affinity) in &sticky {
                let counts = affinity.counts();
                for backend in &pool.backends {
                    let labels = [
                        ("pool".to_string(), pool.name.to_string()),
                        ("backend".into(), backend.address.to_string()),
                    ];
                    let count = counts.get(&backend.address_key).copied().unwrap_or(0);
                    ConstGauge::new(count as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        if let Some(errors) = self.store_errors {
            let family = describe(
                encoder,
                "lb_shared_store_errors",
                "Commands to the shared store (redis) that failed, timed out or were skipped during an outage.",
                MetricType::Counter,
            )?;
            ConstCounter::new(errors).encode(family)?;
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
}
