//! Active health checks: one task per backend probes it (HTTP `GET path`,
//! a TCP connect or a gRPC health call, [`crate::grpc_health`]) every `interval` — `unhealthy_interval` while it is
//! down — with ±10% jitter so probes of many backends do not align. The
//! core's rise/fall checker decides the state; every transition is logged
//! with its reason. A backend that comes back starts its slow-start ramp.
//!
//! The probe tasks of one pool generation belong to one [`Probers`] value
//! (pingora's background service per config): the proxy keeps it next to
//! the pool it built, and dropping it — when a reload replaces the pool's
//! config, or the proxy stops — aborts every probe at once, whatever client
//! connections still hold the old pool. A backend's health is therefore
//! written by exactly one generation's prober.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use fulcrum_balance::resilience::{Health, HealthChecker, ProbeResult};
use fulcrum_config::{HealthCheck, ProbeKind};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::backend::Backend;
use crate::grpc_health;
use crate::pool::Pool;
use crate::upstream_tls::Offer;

/// Largest probe body read.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// The probe tasks of one pool generation; dropping it stops them all.
#[derive(Debug)]
pub struct Probers {
    _tasks: JoinSet<()>,
}

impl Probers {
    /// Starts probing every backend of `pool`, when it configures health
    /// checks. Must be called inside a tokio runtime.
    pub fn start(pool: &Pool) -> Option<Self> {
        let check = pool.config.health_check.as_ref()?;
        let slow_start = pool.config.slow_start.is_some();
        let reach = Reach { proxy_header: pool.config.send_proxy_protocol, tls: pool.tls.clone() };
        let mut tasks = JoinSet::new();
        for backend in &pool.backends {
            let (pool, backend, check) = (pool.name.to_string(), Arc::clone(backend), check.clone());
            tasks.spawn(probe_forever(pool, backend, check, slow_start, reach.clone()));
        }
        Some(Self { _tasks: tasks })
    }
}

async fn probe_forever(
    pool: String,
    backend: Arc<Backend>,
    check: HealthCheck,
    slow_start: bool,
    reach: Reach,
) {
    let mut checker = HealthChecker::new(check.rise, check.fall);
    // Spread the first probes of a pool over one interval.
    tokio::time::sleep(jittered(check.interval, 0.0, 1.0)).await;
    loop {
        let (result, reason) = probe(&backend, &check, &reach).await;
        if let Some(health) = checker.record(result) {
            let before = backend.guards.health();
            backend.guards.set_health(health);
            if health == Health::Unhealthy {
                tracing::warn!(%pool, backend = %backend.address, %reason, "backend is down");
            } else {
                tracing::info!(%pool, backend = %backend.address, from = %before, to = %health, %reason, "backend health changed");
                if before == Health::Unhealthy && slow_start {
                    backend.start_ramp(crate::clock::now_nanos());
                }
            }
        }
        let interval =
            if checker.health() == Health::Unhealthy { check.unhealthy_interval } else { check.interval };
        tokio::time::sleep(jittered(interval, 0.9, 1.1)).await;
    }
}

fn jittered(interval: Duration, low: f64, high: f64) -> Duration {
    interval.mul_f64(low + (high - low) * crate::rng::with_rng(|rng| rng.next_f64()))
}

/// One probe: its result and, for the log, why.
/// How a pool's backends are reached besides TCP: a PROXY header first,
/// TLS (HTTP probes speak it too).
#[derive(Debug, Clone)]
struct Reach {
    proxy_header: Option<fulcrum_config::ProxyVersion>,
    tls: Option<Arc<crate::upstream_tls::TlsClient>>,
}

async fn probe(backend: &Backend, check: &HealthCheck, reach: &Reach) -> (ProbeResult, String) {
    let started = Instant::now();
    let authority = backend.address.to_string();
    let outcome = tokio::time::timeout(check.timeout, async {
        let mut stream =
            TcpStream::connect(backend.address).await.map_err(|e| format!("connect failed: {e}"))?;
        if let Some(version) = reach.proxy_header {
            // A backend that expects PROXY headers gets one naming no client.
            let header = crate::proxy_protocol::local_header(version);
            tokio::io::AsyncWriteExt::write_all(&mut stream, &header)
                .await
                .map_err(|e| format!("sending the PROXY header failed: {e}"))?;
        }
        match (check.kind, &reach.tls) {
            (ProbeKind::Tcp, _) => Ok(()),
            (ProbeKind::Grpc, None) => grpc_health::probe(stream, &authority, &check.service).await,
            (ProbeKind::Grpc, Some(tls)) => {
                let stream = tls
                    .connect(backend.address, stream, Offer::H2)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                grpc_health::probe(stream, &authority, &check.service).await
            }
            (ProbeKind::Http, None) => http_probe(stream, backend, check).await,
            (ProbeKind::Http, Some(tls)) => {
                let stream = tls
                    .connect(backend.address, stream, Offer::Http1)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                http_probe(stream, backend, check).await
            }
        }
    })
    .await;
    match outcome {
        Err(_) => (ProbeResult::Fail, format!("no answer within {:?}", check.timeout)),
        Ok(Err(reason)) => (ProbeResult::Fail, reason),
        Ok(Ok(())) => {
            let took = started.elapsed();
            match check.degraded_latency {
                Some(limit) if took > limit => {
                    (ProbeResult::Slow, format!("answered in {took:?}, over {limit:?}"))
                }
                _ => (ProbeResult::Pass, format!("answered in {took:?}")),
            }
        }
    }
}

async fn http_probe<S>(stream: S, backend: &Backend, check: &HealthCheck) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    let request = http::Request::get(check.path.as_str())
        .header(http::header::HOST, backend.address.to_string())
        .header(http::header::USER_AGENT, "fulcrum-health-check")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("bad probe request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), MAX_PROBE_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body failed: {e}"))?
        .to_bytes();
    let (low, high) = check.expect_status;
    if !(low..=high).contains(&status) {
        return Err(format!("status {status}, expected {low}..={high}"));
    }
    let text = String::from_utf8_lossy(&body);
    if let Some(expected) = &check.expect_body {
        if !text.contains(expected.as_str()) {
            return Err(format!("body does not contain {expected:?}"));
        }
    }
    // A JSON health document whose "status" is not ok is a failure.
    if let Ok(serde_json::Value::Object(document)) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Some(status) = document.get("status").and_then(|s| s.as_str()) {
            if !matches!(status.to_ascii_lowercase().as_str(), "ok" | "up" | "healthy" | "pass") {
                return Err(format!("health document says status {status:?}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fulcrum_balance::resilience::Health;

    use super::Probers;
    use crate::testing::pool;

    #[tokio::test(start_paused = true)]
    async fn probers_mark_a_dead_backend_down_and_stop_when_dropped() {
        // Nothing listens on a port just released: every probe fails.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pool = pool(
            &[&format!("127.0.0.1:{port}")],
            "health_check = { kind = \"tcp\", interval = \"1s\", timeout = \"500ms\", rise = 1, fall = 2 }",
        );
        let backend = std::sync::Arc::clone(&pool.backends[0]);
        let probers = Probers::start(&pool).expect("the pool has health checks");
        while backend.guards.health() != Health::Unhealthy {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(probers);
        backend.guards.set_health(Health::Healthy);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(backend.guards.health(), Health::Healthy, "a dropped generation's prober wrote health");
    }

    #[tokio::test(start_paused = true)]
    async fn no_health_check_no_probers() {
        assert!(Probers::start(&pool(&["127.0.0.1:9"], "")).is_none());
    }
}
