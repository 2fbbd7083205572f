//! One error type for the whole API; every variant becomes an RFC 9457 problem response.
//!
//! Each variant's doc names the status and `code` it maps to; `into_response` is the one
//! place that decides them. Internal errors are logged and answered with a generic detail,
//! never their inner text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::nn::NnError;
use crate::store::StoreError;

/// What a 503 tells the client to wait before trying again, in seconds.
pub const RETRY_AFTER_SECS: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_json`: not JSON, numbers beyond f64, or an empty body where one is required.
    #[error("{0}")]
    InvalidJson(String),
    /// 400 `invalid_request`: JSON of the wrong form (types, missing or unknown fields, enum words).
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `unauthorized`, with `WWW-Authenticate: Bearer`.
    #[error("{0}")]
    Unauthorized(String),
    /// 404 `not_found`: unknown session, built-in dataset or route.
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`; the `Allow` header is kept from the router's answer.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 408 `request_timeout`: the body did not arrive within `--body-timeout-secs` (the
    /// connection layer also answers it when the headers did not arrive in time).
    #[error("{0}")]
    RequestTimeout(String),
    /// 409 `no_dataset`.
    #[error("{0}")]
    NoDataset(String),
    /// 413 `body_too_large`.
    #[error("{0}")]
    BodyTooLarge(String),
    /// 415 `unsupported_media_type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 `invalid_value`: a number out of its range.
    #[error("{0}")]
    InvalidValue(String),
    /// 422 `shape_mismatch`.
    #[error("{0}")]
    ShapeMismatch(String),
    /// 422 `invalid_labels`.
    #[error("{0}")]
    InvalidLabels(String),
    /// 422 `too_large`: over max parameters, samples or history.
    #[error("{0}")]
    TooLarge(String),
    /// 422 `non_finite_result`: predict or gradients overflowed.
    #[error("{0}")]
    NonFiniteResult(String),
    /// 409 `conflict`: a key name already taken.
    #[error("{0}")]
    Conflict(String),
    /// 429 `too_many_sessions`.
    #[error("{0}")]
    TooManySessions(String),
    /// 503 `overloaded`, with `Retry-After`: the server cannot take this request now, and
    /// waiting that long may help.
    #[error("{detail}")]
    Overloaded {
        detail: String,
        retry_after_secs: u64,
    },
    /// 503 `unavailable`, with `Retry-After`: the database does not answer.
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal_error`: a bug. The text is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<NnError> for ApiError {
    fn from(e: NnError) -> Self {
        match e {
            NnError::InvalidValue(m) => Self::InvalidValue(m),
            NnError::ShapeMismatch(m) => Self::ShapeMismatch(m),
            NnError::InvalidLabels(m) => Self::InvalidLabels(m),
            NnError::TooLarge(m) => Self::TooLarge(m),
            NnError::NonFinite(m) => Self::NonFiniteResult(m),
        }
    }
}

/// The one place the store's errors become the API's.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::not_found_session(&id),
            StoreError::TooManySessions { limit, owner: None } => Self::TooManySessions(format!(
                "this server holds at most {limit} sessions (--max-sessions); DELETE the ones \
                 you no longer need"
            )),
            StoreError::TooManySessions {
                limit,
                owner: Some(key),
            } => Self::TooManySessions(format!(
                "the key {key:?} holds {limit} sessions, its most (--max-sessions-per-key); \
                 DELETE the ones you no longer need"
            )),
            StoreError::KeyExists(name) => Self::Conflict(format!(
                "a key named {name:?} exists; choose another name, or DELETE /keys/{name} first"
            )),
            StoreError::JobActive(job) => Self::Conflict(format!(
                "this session already has a background train {}; wait for it or DELETE its \
                 /training first",
                job.state.as_str()
            )),
            StoreError::Unavailable(inner) => {
                tracing::warn!(error = %inner, "the database does not answer");
                Self::Unavailable(format!(
                    "the session database does not answer (it may be restarting); try again in \
                     {RETRY_AFTER_SECS} seconds (GET /readyz answers 200 once it is back)"
                ))
            }
            StoreError::Startup(words) | StoreError::Internal(words) => Self::Internal(words),
        }
    }
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::NoDataset(_) => (StatusCode::CONFLICT, "no_dataset"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::InvalidValue(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value"),
            Self::ShapeMismatch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "shape_mismatch"),
            Self::InvalidLabels(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_labels"),
            Self::TooLarge(_) => (StatusCode::UNPROCESSABLE_ENTITY, "too_large"),
            Self::NonFiniteResult(_) => (StatusCode::UNPROCESSABLE_ENTITY, "non_finite_result"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::TooManySessions(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"),
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// 409: `what` ("training", "a trace", ...) needs the session's dataset and it has none.
    pub fn no_dataset(id: &str, what: &str) -> Self {
        Self::NoDataset(format!(
            "session {id} has no dataset, and {what} needs one; PUT /sessions/{id}/dataset \
             first, e.g. {{\"builtin\": \"cat-dog-ship\"}}"
        ))
    }

    pub fn not_found_session(id: &str) -> Self {
        Self::NotFound(format!(
            "no session {id:?}; it was never created, was deleted, or expired \
             (GET /sessions lists the live ones)"
        ))
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    r#type: &'static str,
    title: &'a str,
    status: u16,
    code: &'static str,
    detail: &'a str,
}

impl ApiError {
    /// The `detail` a client gets: the words, or for an internal error a generic sentence
    /// (the inner text is logged, never sent).
    pub fn public_detail(&self) -> String {
        if let Self::Internal(inner) = self {
            tracing::error!(error = %inner, "internal error");
            "an internal error occurred; it has been logged".into()
        } else {
            self.to_string()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let detail = self.public_detail();
        let detail = detail.as_str();
        let body = Problem {
            r#type: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            code,
            detail,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (status, bytes).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body is never read, so this connection cannot carry another
            // request; say so (RFC 9112 section 9.6) instead of letting the client find out.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::Overloaded {
            retry_after_secs, ..
        } = &self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        if let Self::Unavailable(_) = &self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
