//! Fulcrum's admin listener: health, `/stats`, the live page, and the
//! `/api/v1` routes that let an operator see and change pools at runtime.
//! With a token configured every route but `/health` needs
//! `Authorization: Bearer TOKEN` (or `?token=` for the page). Errors are
//! `{"error": "..."}` with a 4xx/5xx status.
//!
//! What a change means (validation, persistence, applying it to the
//! running proxy) is the [`Control`] implementation's business; this crate
//! only speaks HTTP and JSON.

mod access;
mod api;
mod control;
mod recommend;

pub use access::Access;
pub use control::{ApiError, BackendUpdate, CanaryAction, Control, NewBackend, Rebalance};

use std::sync::Arc;

use axum::http::StatusCode;
use axum::middleware;
use axum::response::Html;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct AdminState {
    control: Arc<dyn Control>,
    access: Arc<Access>,
}

/// Serves the admin API on `listener` until `stop` fires, to the clients
/// `access` lets in (its token, when set, is required on every route but
/// `/health`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    access: Access,
    control: Arc<dyn Control>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "admin API listening");
    let state = AdminState { control, access: Arc::new(access) };
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await?;
    Ok(())
}

fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/", get(page))
        .route("/stats", get(api::stats))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/pools", get(api::pools))
        .route("/api/v1/pools/{pool}/backends", post(api::add_backend))
        .route("/api/v1/pools/{pool}/backends/{id}", patch(api::update_backend).delete(api::remove_backend))
        .route("/api/v1/pools/{pool}/sessions", get(api::sessions).delete(api::flush_sessions))
        .route("/api/v1/pools/{pool}/sessions/rebalance", post(api::rebalance_sessions))
        .route("/api/v1/routes", get(api::routes))
        .route("/api/v1/routes/{listener}/{route}", patch(api::switch_route))
        .route("/api/v1/routes/{listener}/{route}/canary", post(api::canary_action))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/autoscale", get(api::autoscale))
        .route("/api/v1/reload", post(api::reload))
        .route("/api/v1/recommendations", get(api::recommendations))
        .route_layer(middleware::from_fn_with_state(state.clone(), access::require_token));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such route; see the README's admin API")
        })
        .layer(middleware::from_fn_with_state(state.clone(), access::require_network))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
