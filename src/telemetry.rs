//! What the server measures about itself, by name, through the `metrics` facade: any module
//! (the HTTP layer, training, the store) records with `metrics::counter!(NAME)` and friends,
//! and `GET /metrics` renders the lot in Prometheus' text format.
//!
//! Without `--no-metrics` the Prometheus recorder is installed once per process; with it,
//! nothing is installed and every recording is the facade's no-op.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `method`, `route` (the route's template, such as
/// `/sessions/{id}/train`, or `unmatched` for a path no route has) and `status`.
pub const HTTP_REQUESTS: &str = "backprop_http_requests_total";
/// Time from a request's arrival to its response's head, by `method` and `route`.
pub const HTTP_REQUEST_SECONDS: &str = "backprop_http_request_duration_seconds";
/// Epochs applied by every train since the process started.
pub const EPOCHS_TRAINED: &str = "backprop_epochs_trained_total";
/// Trains started, by the `threads` their epochs ran on (every core on an idle server).
pub const TRAINS: &str = "backprop_trains_total";
/// Trains running epochs now.
pub const TRAININGS_RUNNING: &str = "backprop_trainings_running";
/// Trains accepted and waiting: for their session's earlier trains, or for a worker.
pub const TRAININGS_QUEUED: &str = "backprop_trainings_queued";
/// Sessions the server holds (read when `/metrics` is scraped).
pub const SESSIONS: &str = "backprop_sessions";
/// Bytes of `--memory-budget` in use; fed by the memory admission (0 until it exists).
pub const MEMORY_BUDGET_USED_BYTES: &str = "backprop_memory_budget_used_bytes";
/// Time of each database call; fed by the durable store (no samples until it exists).
pub const DATABASE_QUERY_SECONDS: &str = "backprop_database_query_duration_seconds";

/// Histogram buckets, in seconds: from a 100 µs predict to a train at its 60 s time limit.
const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// How often histogram samples are folded into their buckets. The exporter keeps raw samples
/// until then, so this bounds their memory when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .clone()
}

/// Help texts, and the series that exist before anything feeds them.
fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route"
    );
    describe_counter!(
        EPOCHS_TRAINED,
        "Epochs applied by trains since the server started"
    );
    describe_counter!(
        TRAINS,
        "Trains started, by the number of threads their epochs ran on"
    );
    describe_gauge!(TRAININGS_RUNNING, "Trains running epochs now");
    describe_gauge!(
        TRAININGS_QUEUED,
        "Trains waiting for their session's earlier trains or for a worker"
    );
    describe_gauge!(SESSIONS, "Sessions held");
    describe_gauge!(
        MEMORY_BUDGET_USED_BYTES,
        Unit::Bytes,
        "Bytes of the memory budget in use"
    );
    describe_histogram!(
        DATABASE_QUERY_SECONDS,
        Unit::Seconds,
        "Time of each database call"
    );
    metrics::counter!(EPOCHS_TRAINED).absolute(0);
    gauge!(TRAININGS_RUNNING).set(0.0);
    gauge!(TRAININGS_QUEUED).set(0.0);
    gauge!(MEMORY_BUDGET_USED_BYTES).set(0.0);
    // Registered without a sample, so the series is there for dashboards from the start.
    let _ = histogram!(DATABASE_QUERY_SECONDS);
}

/// A train that is waiting; counted in [`TRAININGS_QUEUED`] until it starts or is dropped
/// (a refused request, or a client that went away while it waited).
#[must_use]
pub struct QueuedTraining(());

impl QueuedTraining {
    pub fn enter() -> Self {
        gauge!(TRAININGS_QUEUED).increment(1.0);
        Self(())
    }

    /// The train got its turn and a worker: from now on it is running.
    pub fn start(self) -> RunningTraining {
        gauge!(TRAININGS_RUNNING).increment(1.0);
        RunningTraining(())
    }
}

impl Drop for QueuedTraining {
    fn drop(&mut self) {
        gauge!(TRAININGS_QUEUED).decrement(1.0);
    }
}

/// A train running epochs; counted in [`TRAININGS_RUNNING`] until dropped.
#[must_use]
pub struct RunningTraining(());

impl RunningTraining {
    /// Counts the train by the threads it runs on.
    pub fn threads(&self, n: usize) {
        metrics::counter!(TRAINS, "threads" => n.to_string()).increment(1);
    }

    /// Counts epochs applied (once per run, not per epoch: an epoch can take a microsecond).
    pub fn epochs(&self, n: u64) {
        metrics::counter!(EPOCHS_TRAINED).increment(n);
    }
}

impl Drop for RunningTraining {
    fn drop(&mut self) {
        gauge!(TRAININGS_RUNNING).decrement(1.0);
    }
}
