//! What the admin API asks of the running balancer, and its errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fulcrum_proxy::{
    BackendStats, CanaryView, Event, PoolSessions, RouteError, RouteView, SessionsError, Stats,
};
use futures_util::future::BoxFuture;
use serde::Deserialize;

/// An error answered as `{"error": message}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// `POST /api/v1/pools/{pool}/backends`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBackend {
    /// `IP:port`.
    pub address: String,
    /// Weight (default 1).
    pub weight: Option<u32>,
    /// Zone.
    pub zone: Option<String>,
    /// Region.
    pub region: Option<String>,
}

/// `PATCH /api/v1/pools/{pool}/backends/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendUpdate {
    /// New weight.
    pub weight: Option<u32>,
    /// New state: `active`, `draining` or `maintenance`.
    pub state: Option<String>,
}

/// The balancer as the admin API steers it.
pub trait Control: Send + Sync + 'static {
    /// Every pool and backend.
    fn stats(&self) -> Stats;
    /// The metrics: OpenMetrics text when `openmetrics`, else Prometheus text 0.0.4.
    fn metrics(&self, openmetrics: bool) -> String;
    /// Adds a backend to a running pool; returns it.
    fn add_backend(&self, pool: &str, backend: NewBackend) -> Result<BackendStats, ApiError>;
    /// Changes a backend's weight and/or state; returns it.
    fn update_backend(&self, pool: &str, id: &str, update: BackendUpdate) -> Result<BackendStats, ApiError>;
    /// Drains a backend, then removes it once its requests have finished.
    fn remove_backend(&self, pool: &str, id: &str) -> Result<BackendStats, ApiError>;
    /// Reloads the config file: what changed, or every error (the running config stays).
    fn reload(&self) -> Result<Vec<String>, Vec<String>>;
    /// The sessions of a pool with affinity, per backend.
    fn sessions(&self, pool: &str) -> Result<PoolSessions, SessionsError>;
    /// Forgets `fraction` of a pool's sessions, busiest backends first; how many.
    fn rebalance_sessions(
        &self,
        pool: String,
        fraction: f64,
    ) -> BoxFuture<'static, Result<usize, SessionsError>>;
    /// Forgets every session of a pool; how many there were.
    fn flush_sessions(&self, pool: String) -> BoxFuture<'static, Result<usize, SessionsError>>;
    /// Every route with its live weights, canary and mirror.
    fn routes(&self) -> Vec<RouteView>;
    /// Switches a route to another pool or split (blue-green), persisted
    /// with the other runtime changes; returns the route.
    fn switch_route(
        &self,
        listener: &str,
        route: &str,
        switch: fulcrum_config::RouteSwitch,
    ) -> Result<RouteView, ApiError>;
    /// Promotes, aborts, pauses or resumes a route's canary.
    fn canary_action(&self, listener: &str, route: &str, action: &str) -> Result<CanaryView, RouteError>;
    /// What the balancer decided on its own, oldest first.
    fn events(&self) -> Vec<Event>;
    /// Every autoscaled pool's advice.
    fn autoscale(&self) -> Vec<fulcrum_proxy::autoscale::AutoscaleView>;
}

/// `POST /api/v1/routes/{listener}/{route}/canary`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryAction {
    /// `promote`, `abort`, `pause` or `resume`.
    pub action: String,
}

impl From<RouteError> for ApiError {
    fn from(error: RouteError) -> Self {
        let status = match error {
            RouteError::NoRoute(..) => StatusCode::NOT_FOUND,
            RouteError::NoCanary(..) | RouteError::NotNow(_) => StatusCode::CONFLICT,
            RouteError::UnknownAction(_) => StatusCode::BAD_REQUEST,
        };
        Self::new(status, error.to_string())
    }
}

/// `POST /api/v1/pools/{pool}/sessions/rebalance`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rebalance {
    /// Share of all sessions to forget, above 0 and at most 1.
    pub fraction: f64,
}

impl From<SessionsError> for ApiError {
    fn from(error: SessionsError) -> Self {
        let status = match error {
            SessionsError::NoPool(_) => StatusCode::NOT_FOUND,
            SessionsError::NoAffinity(_) => StatusCode::CONFLICT,
            SessionsError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.to_string())
    }
}
