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
