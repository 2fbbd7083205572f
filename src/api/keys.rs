//! Keys: `POST /keys`, `GET /keys`, `DELETE /keys/{name}`, for the admin key only.
//!
//! A key's secret is shown once, in the answer that makes it; the server keeps its SHA-256
//! (see `crate::auth`). Revoking a key leaves its sessions (they expire with their TTL); a
//! new key of the same name is a new key, which owns them again.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
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

/// The admin, making a request on `/keys`: an extractor, so that it is checked before the
/// body is read (an open server's `/keys` is 404 whatever the body).
struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let caller = Caller::from_request_parts(parts, state).await?;
        admin_only(state, &caller)?;
        Ok(Self)
    }
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
    _: Admin,
    ApiJson(req): ApiJson<KeyRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
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

async fn list(State(state): State<AppState>, _: Admin) -> ApiResult<Json<Value>> {
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
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store().delete_key(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no key named {name:?}; GET /keys lists them"
        )))
    }
}
