//! Active health checks: one task per backend probes it (HTTP `GET path`
//! or a TCP connect) every `interval` — `unhealthy_interval` while it is
//! down — with ±10% jitter so probes of many backends do not align. The
//! core's rise/fall checker decides the state; every transition is logged
//! with its reason. A backend that comes back starts its slow-start ramp.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum_balance::resilience::{Health, HealthChecker, ProbeResult};
use fulcrum_config::{HealthCheck, ProbeKind};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;

/// Largest probe body read.
const MAX_PROBE_BODY: usize = 64 * 1024;

/// Starts probing every backend; cancel the token to stop.
pub fn spawn(
    pool: &str,
    backends: &[Arc<Backend>],
    check: &HealthCheck,
    slow_start: bool,
) -> CancellationToken {
    let stop = CancellationToken::new();
    for backend in backends {
        let (pool, backend, check, stop) =
            (pool.to_string(), Arc::clone(backend), check.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = probe_forever(pool, backend, check, slow_start) => {}
            }
        });
    }
    stop
}

async fn probe_forever(pool: String, backend: Arc<Backend>, check: HealthCheck, slow_start: bool) {
    let mut checker = HealthChecker::new(check.rise, check.fall);
    // Spread the first probes of a pool over one interval.
    tokio::time::sleep(jittered(check.interval, 0.0, 1.0)).await;
    loop {
        let (result, reason) = probe(&backend, &check).await;
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
async fn probe(backend: &Backend, check: &HealthCheck) -> (ProbeResult, String) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(check.timeout, async {
        let stream = TcpStream::connect(backend.address).await.map_err(|e| format!("connect failed: {e}"))?;
        match check.kind {
            ProbeKind::Tcp => Ok(()),
            ProbeKind::Http => http_probe(stream, backend, check).await,
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

async fn http_probe(stream: TcpStream, backend: &Backend, check: &HealthCheck) -> Result<(), String> {
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
