//! The `/stats` and `/api/v1` handlers: JSON in, JSON out.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::{AdminState, ApiError, BackendUpdate, CanaryAction, NewBackend, Rebalance};

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload
        .map(|Json(value)| value)
        .map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))
}

pub async fn stats(State(state): State<AdminState>) -> Response {
    Json(state.control.stats()).into_response()
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the classic
/// text format otherwise.
pub async fn metrics(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(axum::http::header::CONTENT_TYPE, content_type)], state.control.metrics(openmetrics)).into_response()
}

pub async fn recommendations(State(state): State<AdminState>) -> Response {
    Json(serde_json::json!({ "recommendations": crate::recommend::recommendations(&state.control.stats()) }))
        .into_response()
}

pub async fn pools(State(state): State<AdminState>) -> Response {
    Json(state.control.stats()).into_response()
}

pub async fn add_backend(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
    payload: Result<Json<NewBackend>, JsonRejection>,
) -> Result<Response, ApiError> {
    let backend = state.control.add_backend(&pool, body(payload)?)?;
    Ok((StatusCode::CREATED, Json(backend)).into_response())
}

pub async fn update_backend(
    State(state): State<AdminState>,
    Path((pool, id)): Path<(String, String)>,
    payload: Result<Json<BackendUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let update = body(payload)?;
    if update.weight.is_none() && update.state.is_none() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "give `weight` and/or `state`"));
    }
    Ok(Json(state.control.update_backend(&pool, &id, update)?).into_response())
}

pub async fn remove_backend(
    State(state): State<AdminState>,
    Path((pool, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let backend = state.control.remove_backend(&pool, &id)?;
    Ok((StatusCode::ACCEPTED, Json(backend)).into_response())
}

pub async fn sessions(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(state.control.sessions(&pool)?).into_response())
}

pub async fn rebalance_sessions(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
    payload: Result<Json<Rebalance>, JsonRejection>,
) -> Result<Response, ApiError> {
    let fraction = body(payload)?.fraction;
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "`fraction` is a share of the sessions, above 0 and at most 1",
        ));
    }
    let forgotten = state.control.rebalance_sessions(pool.clone(), fraction).await?;
    tracing::info!(%pool, fraction, forgotten, "sessions rebalanced through the admin API");
    Ok(Json(serde_json::json!({ "pool": pool, "forgotten": forgotten })).into_response())
}

pub async fn flush_sessions(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
) -> Result<Response, ApiError> {
    let forgotten = state.control.flush_sessions(pool.clone()).await?;
    tracing::info!(%pool, forgotten, "sessions flushed through the admin API");
    Ok(Json(serde_json::json!({ "pool": pool, "forgotten": forgotten })).into_response())
}

pub async fn reload(State(state): State<AdminState>) -> Response {
    match state.control.reload() {
        Ok(changes) => Json(serde_json::json!({ "changes": changes })).into_response(),
        Err(errors) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": "the config has errors; the running config stays", "errors": errors })),
        )
            .into_response(),
    }
}

pub async fn routes(State(state): State<AdminState>) -> Response {
    Json(serde_json::json!({ "routes": state.control.routes() })).into_response()
}

pub async fn switch_route(
    State(state): State<AdminState>,
    Path((listener, route)): Path<(String, String)>,
    payload: Result<Json<fulcrum_config::RouteSwitch>, JsonRejection>,
) -> Result<Response, ApiError> {
    let switch = body(payload).map_err(|e| {
        ApiError::new(
            e.status,
            format!(
                "give {{\"pool\": NAME}} or {{\"split\": [{{\"pool\": NAME, \"weight\": N}}, ...]}}: {}",
                e.message
            ),
        )
    })?;
    Ok(Json(state.control.switch_route(&listener, &route, switch)?).into_response())
}

pub async fn canary_action(
    State(state): State<AdminState>,
    Path((listener, route)): Path<(String, String)>,
    payload: Result<Json<CanaryAction>, JsonRejection>,
) -> Result<Response, ApiError> {
    let action = body(payload)?.action;
    Ok(Json(state.control.canary_action(&listener, &route, &action)?).into_response())
}

pub async fn events(State(state): State<AdminState>) -> Response {
    Json(serde_json::json!({ "events": state.control.events() })).into_response()
}

pub async fn autoscale(State(state): State<AdminState>) -> Response {
    Json(serde_json::json!({ "pools": state.control.autoscale() })).into_response()
}
