//! What every request passes before its route: who it is (the key), whether its key may
//! make another request now (the rate), and the memory reservation it carries to the end of
//! its answer.
//!
//! The gate runs before routing, so an unknown route without a key is 401, not 404. The
//! health checks and the spec pass untouched: no key, no rate, no reservation. A request's
//! [`Caller`] (its tenant and its reservation) goes into the request's extensions for the
//! extractors and handlers; when the handler has answered, the reservation shrinks to the
//! answer's size and rides with the answer's body, given back when the body is dropped
//! (sent, or abandoned by the client).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as _, Frame, SizeHint};

use super::AppState;
use crate::admission::{Need, Part, Reservation};
use crate::auth::{self, Tenant};
use crate::error::{ApiError, ApiResult};

/// Routes that need no key and count against nothing (the dashboard's page holds no data:
/// it loads without a key, then asks for one).
fn is_open(path: &str) -> bool {
    matches!(path, "/" | "/healthz" | "/readyz" | "/openapi.yaml")
}

/// Who a request is, and its memory reservation.
#[derive(Clone)]
pub struct Caller {
    pub tenant: Tenant,
    pub memory: Reservation,
}

impl Caller {
    /// A caller for work that outlives a request (a background job): the tenant's shares and
    /// a reservation of its own.
    pub fn new(tenant: Tenant, memory: Reservation) -> Self {
        Self { tenant, memory }
    }

    /// Reserves `need` as `part` of this request's memory (see [`Reservation::need`]).
    pub fn need(&self, part: Part, need: Need) -> ApiResult<()> {
        Ok(self.memory.need(part, need)?)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> ApiResult<Self> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("a request reached a route without a caller".into()))
    }
}

/// The gate itself (an axum middleware over the whole router).
pub async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if is_open(req.uri().path()) {
        return next.run(req).await;
    }
    // The header copied out: a `&Request` may not be held across an await (its body is
    // not `Sync`).
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let tenant = match authenticate(&state, given.as_deref()).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    if let Err(wait) = rate(&state, &tenant) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let per_second = state.config().rate_limit_per_key;
        return ApiError::RateLimited {
            detail: format!(
                "this key made more than {per_second} requests a second (bursts of {}; \
                 --rate-limit-per-key); wait {secs} s (Retry-After) and send fewer",
                per_second.saturating_mul(2)
            ),
            retry_after_secs: secs,
        }
        .into_response();
    }
    let memory = state.budget().reservation();
    req.extensions_mut().insert(Caller {
        tenant,
        memory: memory.clone(),
    });
    let resp = next.run(req).await;
    if state.config().no_admission {
        return resp;
    }
    if let Some(len) = resp.body().size_hint().exact() {
        memory.settle(len);
    }
    resp.map(|body| {
        Body::new(Guarded {
            body,
            _memory: memory,
        })
    })
}

/// Whether `tenant` may make a request now (user keys only are rate-limited).
fn rate(state: &AppState, tenant: &Tenant) -> Result<(), std::time::Duration> {
    if tenant.is_limited() {
        state.rates().check(tenant)
    } else {
        Ok(())
    }
}

/// The request's key (`given`, from `Authorization: Bearer <key>`): the admin's, a user's,
/// or none needed (an open server).
async fn authenticate(state: &AppState, given: Option<&str>) -> ApiResult<Tenant> {
    let Some(token) = &state.config().token else {
        return Ok(Tenant::Open);
    };
    let Some(given) = given else {
        return Err(ApiError::Unauthorized(
            "this server needs a key: send 'Authorization: Bearer <key>' (with curl: \
             -H 'Authorization: Bearer <key>')"
                .into(),
        ));
    };
    if auth::same_secret(given, token) {
        return Ok(Tenant::Admin);
    }
    let wrong = || {
        ApiError::Unauthorized(
            "the key is wrong, or it was revoked; ask the server's admin for a key".into(),
        )
    };
    if !given.starts_with(auth::KEY_PREFIX) {
        return Err(wrong());
    }
    let hash = auth::hash_secret(given);
    match state.store().key_by_hash(&hash).await? {
        Some(key) if auth::same_secret(&key.hash, &hash) => Ok(Tenant::Key(key.name.into())),
        _ => Err(wrong()),
    }
}

/// An answer's body that holds its request's reservation until it is dropped.
struct Guarded {
    body: Body,
    _memory: Reservation,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
