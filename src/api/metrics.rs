//! `GET /metrics` (Prometheus' text format), and how every request is counted and timed by
//! its route.
//!
//! The route is the template (`/sessions/{id}/train`), never the path: ids would make a new
//! series per session. The request log's `TraceLayer` already times every request from
//! arrival to response and carries one object per request from one to the other, its
//! response classifier; [`CountRequests`] makes that classifier, which records the request
//! (method, route, status, latency) when the response is classified, then classifies it as
//! tower-http's default does (5xx are failures). Counting thus adds no layer to the stack: a
//! layer on every route (to read axum's `MatchedPath`) and a response extension to carry it
//! out cost a one-sample predict about 7% more instructions; this costs it about 2%
//! (`bench/overhead.sh metrics` counts them).
//!
//! The route is found as axum finds it, with the same matcher (`matchit`) over the same
//! templates: the paths of `openapi.yaml`, which `tests/openapi.rs` holds to be exactly the
//! server's routes (and checks are the labels `/metrics` shows). A path no route has is
//! `unmatched`.

use std::cell::RefCell;
use std::fmt;
use std::sync::LazyLock;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, Request, Response, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{Counter, Histogram, counter, gauge, histogram};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, MakeClassifier, NeverClassifyEos, ServerErrorsAsFailures,
    ServerErrorsFailureClass,
};

use super::health::OPENAPI;
use super::{AppState, Caller};
use crate::error::{ApiError, ApiResult};
use crate::telemetry::{HTTP_REQUEST_SECONDS, HTTP_REQUESTS, SESSIONS};

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::response::Response> {
    if state.config().token.is_some() && !caller.tenant.is_admin() {
        return Err(ApiError::Unauthorized(
            "the metrics are the admin's: send the admin key (the server's --token); this \
             key is a user key"
                .into(),
        ));
    }
    let Some(handle) = state.metrics() else {
        return Err(ApiError::NotFound(
            "this server runs with --no-metrics, so it has no metrics to show".into(),
        ));
    };
    // Read when scraped rather than kept up to date on every create and delete.
    let sessions = state.store().count(None).await?;
    gauge!(SESSIONS).set(sessions as f64);
    state.budget().publish();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

/// The route templates, by the index [`route_of`] gives; 0 is `unmatched`.
struct Routes {
    templates: Vec<&'static str>,
    matcher: matchit::Router<usize>,
}

static ROUTES: LazyLock<Routes> = LazyLock::new(|| {
    let mut routes = Routes {
        templates: vec!["unmatched"],
        matcher: matchit::Router::new(),
    };
    for template in spec_paths(OPENAPI) {
        // A template matchit refuses would be a route axum refuses too: such a spec does not
        // get past tests/openapi.rs. Its requests would count as unmatched.
        if routes
            .matcher
            .insert(template, routes.templates.len())
            .is_ok()
        {
            routes.templates.push(template);
        }
    }
    routes
});

/// The keys of the spec's `paths:` mapping: the lines `  /path:` after `paths:` and before
/// the next top-level key.
fn spec_paths(spec: &'static str) -> impl Iterator<Item = &'static str> {
    spec.lines()
        .skip_while(|l| *l != "paths:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter_map(|l| l.strip_prefix("  /").map(|_| &l[2..]))
        .filter_map(|l| l.strip_suffix(':'))
}

/// The index of the route `path` falls under (0: none).
fn route_of(path: &str) -> usize {
    ROUTES.matcher.at(path).map_or(0, |m| *m.value)
}

/// The methods as labels: the standard ones, and `other` for the rest (a method is any token
/// a client likes, and each would be a new series).
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

/// The index of `m`'s label in [`METHODS`].
fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The request log's classifier maker: with `on`, each request's classifier counts it.
#[derive(Clone, Copy)]
pub struct CountRequests {
    pub on: bool,
}

impl MakeClassifier for CountRequests {
    type Classifier = Counted;
    type FailureClass = ServerErrorsFailureClass;
    type ClassifyEos = NeverClassifyEos<ServerErrorsFailureClass>;

    fn make_classifier<B>(&self, req: &Request<B>) -> Counted {
        Counted(self.on.then(|| Arrival {
            method: method_index(req.method()),
            route: route_of(req.uri().path()),
            at: Instant::now(),
        }))
    }
}

#[derive(Clone)]
struct Arrival {
    method: usize,
    route: usize,
    at: Instant,
}

/// One request's classifier: records the request, then classifies as tower-http does.
#[derive(Clone)]
pub struct Counted(Option<Arrival>);

impl ClassifyResponse for Counted {
    type FailureClass = ServerErrorsFailureClass;
    type ClassifyEos = NeverClassifyEos<ServerErrorsFailureClass>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        if let Some(a) = self.0 {
            record(&a, res.status().as_u16());
        }
        ServerErrorsAsFailures::new().classify_response(res)
    }

    fn classify_error<E: fmt::Display + 'static>(self, error: &E) -> Self::FailureClass {
        ServerErrorsAsFailures::new().classify_error(error)
    }
}

/// One series' handles: its request counter and its latency histogram.
struct Series {
    requests: Counter,
    seconds: Histogram,
}

/// A route and method's series, by status.
type ByStatus = Vec<(u16, Series)>;

thread_local! {
    /// This thread's handles, by route and method (at `route * METHODS.len() + method`), then
    /// by status; each registered with the recorder once per thread (the recorder hands every
    /// thread the same series). Per thread, so a request takes no lock that the other
    /// workers also take: on a busy server that cache line would move between cores on every
    /// request. A route sees a handful of statuses, so a short list searched in order beats
    /// hashing.
    static SERIES: RefCell<Vec<ByStatus>> = const { RefCell::new(Vec::new()) };
}

fn record(a: &Arrival, status: u16) {
    let seconds = a.at.elapsed().as_secs_f64();
    SERIES.with_borrow_mut(|series| {
        if series.is_empty() {
            series.resize_with(ROUTES.templates.len() * METHODS.len(), Vec::new);
        }
        let Some(list) = series.get_mut(a.route * METHODS.len() + a.method) else {
            return;
        };
        let i = match list.iter().position(|(s, _)| *s == status) {
            Some(i) => i,
            None => {
                let (method, route) = (METHODS[a.method], ROUTES.templates[a.route]);
                let requests = counter!(
                    HTTP_REQUESTS,
                    "method" => method,
                    "route" => route,
                    "status" => status.to_string()
                );
                let seconds =
                    histogram!(HTTP_REQUEST_SECONDS, "method" => method, "route" => route);
                list.push((status, Series { requests, seconds }));
                list.len() - 1
            }
        };
        list[i].1.requests.increment(1);
        list[i].1.seconds.record(seconds);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_the_specs_paths_matched_as_axum_matches_them() {
        let paths: Vec<&str> = spec_paths(OPENAPI).collect();
        assert!(paths.contains(&"/sessions/{id}/train"), "{paths:?}");
        assert!(paths.contains(&"/healthz"), "{paths:?}");
        assert_eq!(
            ROUTES.templates.len(),
            paths.len() + 1,
            "every path is matched"
        );
        let of = |p| ROUTES.templates[route_of(p)];
        assert_eq!(
            of("/sessions/7d1c3a52-5c2e-4a53-9f0e-2b8e6f1d9c40/train"),
            "/sessions/{id}/train"
        );
        assert_eq!(of("/sessions/import"), "/sessions/import");
        assert_eq!(of("/sessions/x/loss.svg"), "/sessions/{id}/loss.svg");
        assert_eq!(of("/sessions/"), "unmatched");
        assert_eq!(of("/sessions/x/train/"), "unmatched");
        assert_eq!(of("/nope"), "unmatched");
    }
}
