//! A JSON-ready snapshot of every pool and backend, for `/stats` and the
//! admin API.

use serde::Serialize;

/// Every listener and pool.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Listeners, in config order.
    pub listeners: Vec<ListenerStats>,
    /// Pools by name order.
    pub pools: Vec<PoolStats>,
}

/// One listener.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerStats {
    /// Its name.
    pub name: String,
    /// Its address.
    pub listen: String,
    /// `http`, `https` or `tcp`.
    pub protocol: &'static str,
    /// Its default pool.
    pub pool: String,
    /// How many routing rules it has.
    pub routes: usize,
}

/// One pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStats {
    /// Its name.
    pub name: String,
    /// Its algorithm's config name.
    pub algorithm: &'static str,
    /// Its backends, in config order.
    pub backends: Vec<BackendStats>,
    /// Its admission control, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<AdmissionStats>,
    /// Its autoscaling advice, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::autoscale::AutoscaleView>,
}

/// A pool's admission control now.
#[derive(Debug, Clone, Serialize)]
pub struct AdmissionStats {
    /// Requests admitted at once (fixed, or the adaptive limit now).
    pub limit: u32,
    /// Requests holding a slot.
    pub in_flight: u32,
    /// Requests waiting, by class.
    pub queued: std::collections::BTreeMap<String, usize>,
    /// Requests shed so far, by class (deadline and queue full together).
    pub shed: std::collections::BTreeMap<String, u64>,
}

/// One backend's counters.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStats {
    /// The backend's id in the admin API (its address, unique in a pool).
    pub id: String,
    /// `IP:port`.
    pub address: String,
    /// Configured weight.
    pub weight: u32,
    /// Weight in effect now: lower while slow start ramps or when degraded.
    pub effective_weight: f64,
    /// Zone, if any.
    pub zone: Option<String>,
    /// Operator state: `active`, `draining` or `maintenance`.
    pub state: &'static str,
    /// Where it came from: `static` (the file), `dns` (discovery) or `api`.
    pub origin: &'static str,
    /// Requests in flight now.
    pub active_requests: u64,
    /// Requests since the backend was added.
    pub requests_total: u64,
    /// Failed requests (transport errors and 5xx) since it was added.
    pub errors_total: u64,
    /// `healthy`, `unhealthy`, `degraded` or `unknown` (no probe yet, or none configured).
    pub health: &'static str,
    /// Circuit breaker: `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    /// Whether outlier detection has it ejected now.
    pub ejected: bool,
    /// EWMA of response-header latency, milliseconds.
    pub latency_ewma_ms: f64,
    /// Median response time, milliseconds (from the metrics histogram).
    pub p50_ms: Option<f64>,
    /// 99th percentile response time, milliseconds.
    pub p99_ms: Option<f64>,
    /// Errors over requests in the last minute.
    pub error_rate: f64,
    /// Times the circuit breaker opened in the last 10 minutes.
    pub circuit_opens_10m: usize,
}

/// The sessions of a pool with affinity, as this instance knows them.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSessions {
    /// The pool's name.
    pub pool: String,
    /// `cookie`, `header` or `client_ip`.
    pub kind: &'static str,
    /// `local` or `redis`.
    pub store: &'static str,
    /// Live sessions in all.
    pub sessions: usize,
    /// Live sessions per backend, in config order.
    pub backends: Vec<BackendSessions>,
    /// Requests by placement since the pool's sessions began: hit, new, failover, invalid.
    pub placements: std::collections::BTreeMap<&'static str, u64>,
}

/// One backend's share of a pool's sessions.
#[derive(Debug, Clone, Serialize)]
pub struct BackendSessions {
    /// Its address.
    pub backend: String,
    /// Live sessions bound to it.
    pub sessions: usize,
}

/// Why a sessions request cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionsError {
    /// No pool of that name.
    #[error("no pool named `{0}`")]
    NoPool(String),
    /// The pool has no `affinity`.
    #[error("pool `{0}` has no affinity configured")]
    NoAffinity(String),
    /// The shared store did not answer; the local sessions changed anyway.
    #[error("the shared store (redis) did not answer; only this instance forgot the sessions")]
    StoreUnavailable,
}
