//! What the admin API reads and steers of routes: each route's action and
//! live weights, its canary and its mirror, and operators' canary actions.

use serde::Serialize;

use super::canary::{Action, CanaryView};
use crate::server::Proxy;

/// One route as it runs.
#[derive(Debug, Clone, Serialize)]
pub struct RouteView {
    /// Its listener.
    pub listener: String,
    /// Its name.
    pub name: String,
    /// `pool`, `split`, `canary` or `redirect`.
    pub action: &'static str,
    /// Pools and their weights now (percentages for a canary).
    pub weights: Vec<WeightView>,
    /// The canary's state, for a canary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryView>,
    /// The mirror's pool and copies by result, when mirrored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorView>,
}

/// A pool's weight in a route.
#[derive(Debug, Clone, Serialize)]
pub struct WeightView {
    /// The pool.
    pub pool: String,
    /// Its weight.
    pub weight: f64,
}

/// A route's mirror.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorView {
    /// The shadow pool.
    pub pool: String,
    /// Share of requests copied, percent.
    pub percent: f64,
    /// Copies by result.
    pub results: std::collections::BTreeMap<&'static str, u64>,
}

/// Why a canary action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No such listener or route.
    #[error("listener `{0}` has no route `{1}`")]
    NoRoute(String, String),
    /// The route has no canary.
    #[error("route `{1}` of listener `{0}` has no canary")]
    NoCanary(String, String),
    /// Not an action.
    #[error("`{0}` is not a canary action; expected promote, abort, pause or resume")]
    UnknownAction(String),
    /// The action does not apply now.
    #[error("{0}")]
    NotNow(String),
}

impl Proxy {
    /// Every route of every listener, with its live weights.
    pub fn routes(&self) -> Vec<RouteView> {
        let mut views = Vec::new();
        for state in self.listener_states() {
            for route in &state.routes {
                views.push(RouteView {
                    listener: state.name.clone(),
                    name: route.name.clone(),
                    action: route.action(),
                    weights: route
                        .weights()
                        .into_iter()
                        .map(|(pool, weight)| WeightView { pool, weight })
                        .collect(),
                    canary: route.canary().map(|c| c.view()),
                    mirror: route.mirror.as_ref().map(|m| MirrorView {
                        pool: m.pool.name.to_string(),
                        percent: f64::from(m.share) / 100.0,
                        results: m.slots.counts().map(|(r, n)| (r.name(), n)).collect(),
                    }),
                });
            }
        }
        views
    }

    /// Applies an operator's `action` to the canary of `route` of `listener`.
    pub fn canary_action(&self, listener: &str, route: &str, action: &str) -> Result<CanaryView, RouteError> {
        let action = Action::parse(action).ok_or_else(|| RouteError::UnknownAction(action.into()))?;
        let no_route = || RouteError::NoRoute(listener.into(), route.into());
        let state = self.listener_states().into_iter().find(|s| s.name == listener).ok_or_else(no_route)?;
        let compiled = state.routes.iter().find(|r| r.name == route).ok_or_else(no_route)?;
        let canary = compiled.canary().ok_or_else(|| RouteError::NoCanary(listener.into(), route.into()))?;
        canary.act(action).map_err(RouteError::NotNow)?;
        Ok(canary.view())
    }
}
