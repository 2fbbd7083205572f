//! The HTTP layer: one file per resource, each with its handlers and `router()`.
//! Handlers parse, call the core on a blocking worker, and shape the answer.

mod charts;
mod dashboard;
mod datasets;
mod events;
mod extract;
mod formats;
mod gate;
mod grading;
mod health;
mod jobs;
mod keys;
mod metrics;
mod sessions;
mod training;
mod wire;
mod words;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tower_http::LatencyUnit;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::admission::{self, Budget, Holder, Need, Part};
use crate::auth::{RateLimits, Shares};
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::jobs::Jobs;
use crate::store::{Entry, Store};

pub use gate::Caller;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    store: Store,
    /// The workers, and each key's share of them.
    shares: Shares,
    /// Each key's request rate.
    rates: RateLimits,
    /// The memory budget every request reserves from.
    budget: Arc<Budget>,
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

/// The store as the budget sees it: what its sessions hold, and dropping cached ones.
struct Held(Store);

impl Holder for Held {
    fn held(&self) -> u64 {
        self.0.held_bytes()
    }

    fn shed(&self, bytes: u64) -> u64 {
        self.0.shed(bytes)
    }
}

/// Answers holding more numbers than this are serialised on a worker, not on the runtime.
const JSON_INLINE_MAX: usize = 100_000;

impl AppState {
    /// The state around an opened store (`crate::open_store`).
    pub fn new(config: Config, store: Store) -> Self {
        let metrics = match config.no_metrics {
            true => None,
            false => crate::telemetry::install()
                .inspect_err(|e| tracing::warn!(error = %e, "metrics are off"))
                .ok(),
        };
        let budget = Budget::new(&config, admission::baseline(&config), Held(store.clone()));
        Self(Arc::new(Inner {
            shares: Shares::new(config.workers, config.workers_per_key()),
            rates: RateLimits::new(config.rate_limit_per_key),
            budget,
            config,
            store,
            stopping: AtomicBool::new(false),
            shutdown: watch::Sender::new(false),
            jobs: Jobs::default(),
            metrics,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }))
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.0.budget
    }

    pub fn rates(&self) -> &RateLimits {
        &self.0.rates
    }

    /// The session `id` as `caller` may see it: another key's session is the same 404 as
    /// one that does not exist, and is not touched (its idle clock does not move).
    pub async fn session(&self, caller: &Caller, id: &str) -> ApiResult<Arc<Entry>> {
        let tenant = &caller.tenant;
        Ok(self
            .0
            .store
            .get_visible(id, |owner| tenant.sees(owner))
            .await?)
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
        if self.0.shares.idle_workers() + 1 >= workers {
            self.0.cores
        } else {
            1
        }
    }

    /// Runs CPU work on tokio's blocking pool, for `caller`: the one door every computation
    /// goes through (requests, and background jobs with a [`Caller::new`] of their own).
    ///
    /// `need`, the memory the work holds, is held to `--max-request-memory` first (422 at
    /// once, before any wait); then the caller waits, holding no thread and no memory, for a
    /// place in its key's share of the workers (`--max-workers-per-key`) and then for a
    /// worker (`--workers`), both in arrival order; then `need` is reserved from the budget
    /// (503 if it is full: the worker is given straight back) and `f` runs. A panic in `f`
    /// becomes a 500, not a crash. The work runs at the lower scheduling priority of compute
    /// work (`crate::priority`), so the runtime's threads, which answer `/healthz` and small
    /// requests, get a core first.
    pub async fn compute<T: Send + 'static>(
        &self,
        caller: &Caller,
        need: Option<(Part, Need)>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> ApiResult<T> {
        if let Some((part, need)) = &need {
            caller.memory.check(*part, need)?;
        }
        let permit = self
            .0
            .shares
            .acquire(&caller.tenant)
            .await
            .map_err(ApiError::Internal)?;
        if let Some((part, need)) = need {
            caller.need(part, need)?;
        }
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
    /// Its memory is the caller's to have reserved (see [`admission::answer`]).
    pub async fn json(
        &self,
        caller: &Caller,
        numbers: usize,
        write: impl FnOnce() -> serde_json::Result<Vec<u8>> + Send + 'static,
    ) -> ApiResult<Response> {
        let write =
            move || write().map_err(|e| ApiError::Internal(format!("writing an answer: {e}")));
        let bytes = if numbers > JSON_INLINE_MAX {
            self.compute(caller, None, write).await??
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
        .merge(keys::router())
        .merge(charts::router())
        .merge(metrics::router())
        .fallback(unknown_route)
        .with_state(state.clone());
    // The layers wrap the routed service as a whole: the key is checked before routing,
    // and the 405 rewrite sees the `Allow` header axum adds after its route layers. The trace
    // logs one line per request at info (the method and path in its span, then the status
    // and latency), and its classifier counts the request for the metrics.
    let count = metrics::CountRequests {
        on: state.metrics().is_some(),
    };
    Router::new()
        .fallback_service(routes)
        .layer(middleware::map_response(problem_for_405))
        .layer(middleware::from_fn_with_state(state.clone(), gate::gate))
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
