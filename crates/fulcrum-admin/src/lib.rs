//! Fulcrum's admin listener: `/health`, the `/stats` JSON snapshot and a
//! small live page at `/`. With a token configured every route but
//! `/health` needs `Authorization: Bearer TOKEN` (or `?token=` for the page).

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use fulcrum_proxy::Proxy;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
struct AdminState {
    proxy: Arc<Proxy>,
    token: Option<Arc<str>>,
}

/// Serves the admin API on `listener` until `stop` fires; `token`, when
/// set, is required on every route but `/health`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: Option<String>,
    proxy: Arc<Proxy>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "admin API listening");
    let state = AdminState { proxy, token: token.map(Arc::from) };
    axum::serve(listener, router(state)).with_graceful_shutdown(stop.cancelled_owned()).await?;
    Ok(())
}

fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/", get(page))
        .route("/stats", get(stats))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new().route("/health", get(health)).merge(protected).with_state(state)
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn require_token(
    State(state): State<AdminState>,
    Query(query): Query<TokenQuery>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else { return next.run(request).await };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer == Some(&**token) || query.token.as_deref() == Some(&**token) {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "missing or wrong bearer token"})))
            .into_response()
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn stats(State(state): State<AdminState>) -> Json<fulcrum_proxy::Stats> {
    Json(state.proxy.stats())
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
