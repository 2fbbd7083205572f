//! The HTTP layer: one file per resource, each with its handlers and `router()`.
//! Handlers parse, call the core on a blocking worker, and shape the answer.

mod charts;
mod dashboard;
mod datasets;
mod events;
mod extract;
mod formats;
mod grading;
mod health;
mod jobs;
mod metrics;
mod sessions;
mod training;
mod wire;
mod words;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, watch};
use tower_http::LatencyUnit;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::jobs::Jobs;
use crate::store::Store;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    store: Store,
    workers: Arc<Semaphore>,
    /// Set when shutdown begins: training runs stop at their next epoch boundary (an atomic:
    /// the loop reads it every epoch).
    stopping: AtomicBool,
    /// The same, for tasks that wait for it (event streams end).
    shutdown: watch::Sender<bool>,
    /// The background trains this process runs.
    jobs: Jobs,
    /// The Prometheus recorder's handle; `None` with `--no-metrics`.
    metrics: Option<PrometheusHandle>,
    /// The machine's cores: the threads a train may use on an otherwise idle server.
    cores: usize,
}

/// Answers holding more numbers than this are serialised on a worker, not on the runtime.
const JSON_INLINE_MAX: usize = 100_000;

impl AppState {
    /// The state around an opened store (`crate::open_store`).
    pub fn new(config: Config, store: Store) -> Self {
        let workers = Arc::new(Semaphore::new(config.workers.max(1) as usize));
        let metrics = match config.no_metrics {
            true => None,
            false => crate::telemetry::install()
                .inspect_err(|e| tracing::warn!(error = %e, "metrics are off"))
                .ok(),
        };
        Self(Arc::new(Inner {
            config,
            store,
            workers,
            stopping: AtomicBool::new(false),
            shutdown: watch::Sender::new(false),
            jobs: Jobs::default(),
            metrics,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }))
    }

    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.0.metrics.as_ref()
    }

    /// Asks running trains to stop at their next epoch boundary (for shutdown).
    pub fn begin_shutdown(&self) {
        self.0.stopping.store(true, Ordering::Relaxed);
        self.0.shutdown.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::Relaxed)
    }

    /// Resolves once shutdown has begun.
    pub async fn stopping(&self) {
        let mut rx = self.0.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn jobs(&self) -> &Jobs {
        &self.0.jobs
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    pub fn train_time_limit(&self) -> Duration {
        Duration::from_secs_f64(self.0.config.train_time_limit_secs)
    }

    pub fn job_time_limit(&self) -> Duration {
        Duration::from_secs_f64(self.0.config.job_time_limit_secs)
    }

    pub fn job_checkpoint(&self) -> Duration {
        Duration::from_secs_f64(self.0.config.job_checkpoint_secs)
    }

    /// Threads for a train that holds a worker now: every core when no other job holds one
    /// (an otherwise idle server), else one. A trainer's numbers are the same bits for every
    /// thread count, so this changes how soon a train ends, never what it computes. A train
    /// keeps its count to the end: one that arrives meanwhile shares the cores with it.
    pub fn train_threads(&self) -> usize {
        let workers = self.0.config.workers.max(1) as usize;
        if self.0.workers.available_permits() + 1 >= workers {
            self.0.cores
        } else {
            1
        }
    }

    /// Runs CPU work on tokio's blocking pool, at most `--workers` at a time, at the lower
    /// scheduling priority of compute work (`crate::priority`), so the runtime's threads,
    /// which answer `/healthz` and small requests, get a core first. Waiting for a permit
    /// holds no thread; a panic in `f` becomes a 500, not a crash.
    pub async fn compute<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        let permit = self
            .0
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::Internal(format!("worker semaphore closed: {e}")))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            crate::priority::lower_this_thread();
            f()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("a worker failed: {e}")))
    }

    /// A JSON answer of about `numbers` numbers, as `write` serialises it: on a worker when
    /// it is big (a long history, big weights), so that writing it never stalls the runtime.
    pub async fn json(
        &self,
        numbers: usize,
        write: impl FnOnce() -> serde_json::Result<Vec<u8>> + Send + 'static,
    ) -> ApiResult<Response> {
        let write =
            move || write().map_err(|e| ApiError::Internal(format!("writing an answer: {e}")));
        let bytes = if numbers > JSON_INLINE_MAX {
            self.compute(write).await??
        } else {
            write()?
        };
        Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
    }
}

/// The whole application; tests and `main` serve this.
pub fn app(state: AppState) -> Router {
    let routes = Router::new()
        .merge(health::router())
        .merge(datasets::router())
        .merge(sessions::router())
        .merge(training::router())
        .merge(jobs::router())
        .merge(events::router())
        .merge(dashboard::router())
        .merge(grading::router())
        .merge(charts::router())
        .merge(metrics::router())
        .fallback(unknown_route)
        .with_state(state.clone());
    // The layers wrap the routed service as a whole: the token is checked before routing,
    // and the 405 rewrite sees the `Allow` header axum adds after its route layers. The trace
    // logs one line per request at info (the method and path in its span, then the status
    // and latency), and its classifier counts the request for the metrics.
    let count = metrics::CountRequests {
        on: state.metrics().is_some(),
    };
    Router::new()
        .fallback_service(routes)
        .layer(middleware::map_response(problem_for_405))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(
            TraceLayer::new(count)
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                ),
        )
        .with_state(state)
}

async fn unknown_route(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}; see GET /openapi.yaml for the routes (paths are exact: no trailing slash)",
        req.method(),
        req.uri().path()
    ))
}

/// axum answers a wrong method with an empty 405 and an `Allow` header; give it our body.
async fn problem_for_405(resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED
        || resp.headers().contains_key(header::CONTENT_TYPE)
    {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut out = ApiError::MethodNotAllowed(format!(
        "this route does not take that method; it takes {allowed}"
    ))
    .into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// With `--token`, every route but the dashboard, the health checks and the spec needs
/// `Bearer <token>`.
/// Runs before routing, so an unknown route without a token is 401, not 404.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.config().token else {
        return next.run(req).await;
    };
    // The dashboard's page holds no data: it loads without a token, then asks for it.
    if matches!(
        req.uri().path(),
        "/" | "/healthz" | "/readyz" | "/openapi.yaml"
    ) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if bool::from(given.as_bytes().ct_eq(token.as_bytes())) => next.run(req).await,
        Some(_) => ApiError::Unauthorized("the bearer token is wrong".into()).into_response(),
        None => ApiError::Unauthorized(
            "this server needs a token: send 'Authorization: Bearer <token>'".into(),
        )
        .into_response(),
    }
}
