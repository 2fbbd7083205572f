//! Keys: `POST /keys`, `GET /keys`, `DELETE /keys/{name}`, for the admin key only.
//!
//! A key's secret is shown once, in the answer that makes it; the server keeps its SHA-256
//! (see `crate::auth`). Revoking a key leaves its sessions (they expire with their TTL); a
//! new key of the same name is a new key, which owns them again.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::extract::{ApiJson, RequestBody};
use super::{AppState, Caller};
use crate::auth;
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/keys", get(list).post(create))
        .route("/keys/{name}", delete(revoke))
}

/// Keys are the admin's to manage; on a server without `--token` there are none.
fn admin_only(state: &AppState, caller: &Caller) -> ApiResult<()> {
    if state.config().token.is_none() {
        return Err(ApiError::NotFound(
            "this server has no keys: it is open to everyone. Start it with --token <admin \
             key> (or BACKPROP_TOKEN) to turn keys on; then POST /keys with the admin key \
             makes a key per student"
                .into(),
        ));
    }
    if !caller.tenant.is_admin() {
        return Err(ApiError::Unauthorized(
            "keys are managed with the admin key (the server's --token); this key is a \
             user key"
                .into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRequest {
    name: String,
}

impl RequestBody for KeyRequest {}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<KeyRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin_only(&state, &caller)?;
    auth::check_name(&req.name).map_err(ApiError::InvalidValue)?;
    let secret = auth::new_secret().map_err(ApiError::Internal)?;
    let key = state
        .store()
        .create_key(&req.name, &auth::hash_secret(&secret))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": key.name, "key": secret})),
    ))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    admin_only(&state, &caller)?;
    let keys: Vec<Value> = state
        .store()
        .keys()
        .await?
        .into_iter()
        .map(|k| {
            let created = OffsetDateTime::from_unix_timestamp(k.key.created_at)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok());
            json!({"name": k.key.name, "sessions": k.sessions, "created_at": created})
        })
        .collect();
    Ok(Json(json!({ "keys": keys })))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    admin_only(&state, &caller)?;
    if state.store().delete_key(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no key named {name:?}; GET /keys lists them"
        )))
    }
}
