//! The autoscaling advisor at work (`[pools.NAME.autoscale]`): each second
//! the pool's requests in flight are sampled; every `interval` their mean
//! and the serving backend count go to the core's
//! [`fulcrum_balance::autoscale::Advisor`]. A change of advice is logged
//! with its figures, shown at `GET /api/v1/autoscale`, in `/stats` and as
//! `lb_autoscale_desired_backends{pool}`, and sent to the hooks: POSTed as
//! JSON to `webhook` (3 attempts, 5 s each) and/or run as `exec` with
//! `FULCRUM_POOL`, `FULCRUM_CURRENT` and `FULCRUM_DESIRED` in its
//! environment. The hooks start and stop instances; those join through
//! discovery or the admin API.
//!
//! One live advisor per pool, kept across reloads while its settings are
//! unchanged; dropping it (settings changed, pool removed) aborts a hook
//! still being delivered.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fulcrum_balance::autoscale::{Advisor, Decision, Direction, Policy};
use fulcrum_balance::resilience::Health;
use fulcrum_config::{Autoscale, BackendState};
use http_body_util::Full;
use serde::Serialize;

use crate::pool::Pool;

/// Attempts to deliver a decision to the webhook.
const WEBHOOK_ATTEMPTS: u32 = 3;
/// Time one webhook attempt may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the exec hook may run before it is killed.
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool's advisor with its samples, last evaluation and hook delivery.
#[derive(Debug)]
pub struct LiveAdvisor {
    pool: String,
    /// The settings it runs with (a reload with others replaces it).
    pub config: Autoscale,
    state: Mutex<State>,
    delivery: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
struct State {
    advisor: Advisor,
    /// Sum and count of in-flight samples since the last evaluation.
    sum: f64,
    samples: u32,
    period_start: u64,
    last: Option<(Decision, u64)>,
    last_change: Option<(Decision, u64)>,
}

/// One evaluation as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    /// Wall-clock time, Unix milliseconds.
    pub at_ms: u64,
    /// `up`, `down` or `hold`.
    pub direction: &'static str,
    /// Serving backends then.
    pub current: u32,
    /// Backends advised.
    pub desired: u32,
    /// Mean requests in flight over the period.
    pub load: f64,
    /// Load over capacity.
    pub utilization: f64,
    /// Forecast load over capacity, `predict` ahead.
    pub predicted_utilization: f64,
    /// Why, with the figures.
    pub reason: String,
}

/// A pool's advisor as `GET /api/v1/autoscale` and `/stats` show it.
#[derive(Debug, Clone, Serialize)]
pub struct AutoscaleView {
    /// The pool.
    pub pool: String,
    /// Serving backends now (active and not unhealthy).
    pub current: u32,
    /// Backends advised (the current count before any advice).
    pub desired: u32,
    /// Bounds of the advice.
    pub min: u32,
    /// Bounds of the advice.
    pub max: u32,
    /// The utilization it sizes for.
    pub target_utilization: f64,
    /// The latest evaluation, if any yet.
    pub last_evaluation: Option<DecisionView>,
    /// The latest change of advice, if any yet.
    pub last_decision: Option<DecisionView>,
}

impl LiveAdvisor {
    /// A fresh advisor for `pool` starting its first period at `now`.
    pub fn new(pool: &str, config: Autoscale, now: u64) -> Self {
        let policy = Policy {
            min: config.min,
            max: config.max,
            target_utilization: config.target_utilization,
            per_backend_concurrency: f64::from(config.per_backend_concurrency),
            scale_up_cooldown: config.scale_up_cooldown.as_nanos() as u64,
            scale_down_cooldown: config.scale_down_cooldown.as_nanos() as u64,
            predict: config.predict.as_nanos() as u64,
        };
        let state = State {
            advisor: Advisor::new(policy),
            sum: 0.0,
            samples: 0,
            period_start: now,
            last: None,
            last_change: None,
        };
        Self { pool: pool.to_string(), config, state: Mutex::new(state), delivery: Mutex::new(None) }
    }

    /// Samples `pool` at `now` (once a second); evaluates when a period
    /// ended, and sends a change of advice to the hooks.
    pub fn tick(&self, pool: &Pool, now: u64) {
        let in_flight: u64 = pool.backends.iter().map(|b| b.load.in_flight()).sum();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.sum += in_flight as f64;
        state.samples += 1;
        if now.saturating_sub(state.period_start) < self.config.interval.as_nanos() as u64 {
            return;
        }
        let load = state.sum / f64::from(state.samples.max(1));
        (state.sum, state.samples, state.period_start) = (0.0, 0, now);
        let decision = state.advisor.evaluate(now, load, serving(pool));
        let at_ms = unix_millis();
        state.last = Some((decision.clone(), at_ms));
        if decision.direction == Direction::Hold {
            return;
        }
        state.last_change = Some((decision.clone(), at_ms));
        drop(state);
        tracing::info!(
            pool = %self.pool,
            current = decision.current,
            desired = decision.desired,
            utilization = format!("{:.2}", decision.utilization),
            predicted = format!("{:.2}", decision.predicted_utilization),
            reason = %decision.reason,
            "autoscale advice changed"
        );
        let payload =
            serde_json::to_vec(&view_of(&decision, at_ms, &self.pool)).expect("a decision serializes");
        let delivery = tokio::spawn(deliver(self.config.clone(), self.pool.clone(), decision, payload));
        // The newest advice supersedes one still being delivered.
        if let Some(previous) = self.delivery.lock().unwrap_or_else(|p| p.into_inner()).replace(delivery) {
            previous.abort();
        }
    }

    /// The advice as the API shows it; `pool` gives the current count.
    pub fn view(&self, pool: &Pool) -> AutoscaleView {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let current = serving(pool);
        let desired = state
            .last_change
            .as_ref()
            .map_or(current.clamp(self.config.min, self.config.max), |(d, _)| d.desired);
        AutoscaleView {
            pool: self.pool.clone(),
            current,
            desired,
            min: self.config.min,
            max: self.config.max,
            target_utilization: self.config.target_utilization,
            last_evaluation: state.last.as_ref().map(|(d, at)| decision_view(d, *at)),
            last_decision: state.last_change.as_ref().map(|(d, at)| decision_view(d, *at)),
        }
    }
}

impl Drop for LiveAdvisor {
    fn drop(&mut self) {
        if let Some(delivery) = self.delivery.lock().unwrap_or_else(|p| p.into_inner()).take() {
            delivery.abort();
        }
    }
}

/// Backends that take traffic: active and not failing their health checks.
fn serving(pool: &Pool) -> u32 {
    pool.backends
        .iter()
        .filter(|b| b.state == BackendState::Active && b.guards.health() != Health::Unhealthy)
        .count() as u32
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn decision_view(decision: &Decision, at_ms: u64) -> DecisionView {
    DecisionView {
        at_ms,
        direction: decision.direction.name(),
        current: decision.current,
        desired: decision.desired,
        load: decision.load,
        utilization: decision.utilization,
        predicted_utilization: decision.predicted_utilization,
        reason: decision.reason.clone(),
    }
}

/// The webhook's JSON body.
#[derive(Serialize)]
struct Payload<'a> {
    pool: &'a str,
    #[serde(flatten)]
    decision: DecisionView,
}

fn view_of<'a>(decision: &Decision, at_ms: u64, pool: &'a str) -> Payload<'a> {
    Payload { pool, decision: decision_view(decision, at_ms) }
}

/// Sends one decision to the configured hooks, both at once.
async fn deliver(config: Autoscale, pool: String, decision: Decision, payload: Vec<u8>) {
    let webhook = async {
        if let Some(url) = &config.webhook {
            post(url, &pool, payload).await;
        }
    };
    let exec = async {
        if let Some(program) = &config.exec {
            run(program, &pool, &decision).await;
        }
    };
    tokio::join!(webhook, exec);
}

async fn post(url: &str, pool: &str, payload: Vec<u8>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let payload = Bytes::from(payload);
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%pool, %url, error = %e, "autoscale webhook: bad URL");
                return;
            }
        };
        let outcome = match tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return,
            Ok(Ok(response)) => format!("answered {}", response.status()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {WEBHOOK_TIMEOUT:?}"),
        };
        tracing::warn!(%pool, %url, attempt, error = %outcome, "autoscale webhook failed");
        if attempt < WEBHOOK_ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
    }
}

async fn run(program: &str, pool: &str, decision: &Decision) {
    let child = tokio::process::Command::new(program)
        .env("FULCRUM_POOL", pool)
        .env("FULCRUM_CURRENT", decision.current.to_string())
        .env("FULCRUM_DESIRED", decision.desired.to_string())
        .env("FULCRUM_DIRECTION", decision.direction.name())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(%pool, %program, error = %e, "autoscale exec hook cannot start");
            return;
        }
    };
    match tokio::time::timeout(EXEC_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) if status.success() => {}
        Ok(Ok(status)) => tracing::warn!(%pool, %program, %status, "autoscale exec hook failed"),
        Ok(Err(e)) => tracing::warn!(%pool, %program, error = %e, "autoscale exec hook failed"),
        Err(_) => {
            tracing::warn!(%pool, %program, timeout = ?EXEC_TIMEOUT, "autoscale exec hook killed: too slow")
        }
    }
}
