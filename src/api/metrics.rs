//! `GET /metrics` (Prometheus' text format), and the middleware that counts and times every
//! request by the route it matched.
//!
//! The route is the template (`/sessions/{id}/train`), never the path: ids would make a new
//! series per session. The router knows the template only once it has matched, inside;
//! the counting happens outside, where 401s (refused before routing) and the final status are
//! seen. So [`tag_route`], a layer on the routes, puts the template on the response, and
//! [`track`], around everything, reads it back (`unmatched` when no route matched).

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{counter, gauge, histogram};

use super::AppState;
use crate::error::{ApiError, ApiResult};
use crate::telemetry::{HTTP_REQUEST_SECONDS, HTTP_REQUESTS, SESSIONS};

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>) -> ApiResult<Response> {
    let Some(handle) = state.metrics() else {
        return Err(ApiError::NotFound(
            "this server runs with --no-metrics, so it has no metrics to show".into(),
        ));
    };
    // Read when scraped rather than kept up to date on every create and delete.
    let (_, sessions) = state.store().list(usize::MAX, 0);
    gauge!(SESSIONS).set(sessions as f64);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

/// Puts the matched route's template on the response, for [`track`].
pub async fn tag_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut resp = next.run(req).await;
    if let Some(route) = route {
        resp.extensions_mut().insert(route);
    }
    resp
}

/// Counts and times every request by method, route and status.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |m| m.as_str().to_string());
    let status = resp.status().as_u16().to_string();
    counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!(HTTP_REQUEST_SECONDS, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// The method as a label: the standard ones, and `other` for the rest (a method is any token
/// a client likes, and each would be a new series).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
