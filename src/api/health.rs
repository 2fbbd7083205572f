//! Liveness, readiness and the spec: the routes that never need a token.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::AppState;
use crate::error::ApiResult;

/// The spec is compiled in, so the binary serves the one that describes it.
pub(super) const OPENAPI: &str = include_str!("../../openapi.yaml");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.yaml", get(openapi))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when the database answers; 503 `unavailable` (with `Retry-After`) while it does not.
async fn readyz(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    state.store().ping().await?;
    Ok(axum::Json(json!({"status": "ready"})))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI)
}
