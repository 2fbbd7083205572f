//! backprop-server: trains small neural networks by backpropagation over HTTP, with the
//! numbers of the course's NumPy notebook.
//!
//! `nn` is the numeric core (no HTTP in it); `api` is the thin HTTP layer over it; `store`
//! keeps the sessions they share, in memory, SQLite or PostgreSQL; `connections` accepts and
//! times the connections `api` is served on.

pub mod admission;
pub mod api;
pub mod auth;
pub mod config;
pub mod connections;
pub mod datasets;
pub mod error;
pub mod jobs;
pub mod nn;
pub mod priority;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::time::Duration;

pub use api::{AppState, app};
pub use config::Config;
use store::{Limits, Store, StoreError};

/// Opens the store `config.database` names: a clear [`StoreError::Startup`] for a database
/// from a newer version, a file that is not ours, or one another server holds.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let limits = Limits {
        max_sessions: config.max_sessions,
        ttl_secs: config.session_ttl_secs,
    };
    Store::open(&config.database, limits).await
}

/// After `shutdown` resolves, running requests get this long to finish; then serve returns.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` resolves. Then it stops accepting
/// connections, tells running trains to stop at their next epoch boundary (they answer with
/// what they did, status `cancelled`; background trains commit theirs and record it), and
/// waits up to [`SHUTDOWN_GRACE`] for them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open_files = connections::raise_open_file_limit();
    let connection_settings = connections::Settings::new(&config, open_files.now);
    let state = AppState::new(config, store);
    let budget = state.budget();
    tracing::info!(
        budget = %admission::bytes_text(u128::from(budget.limit())),
        per_request = %admission::bytes_text(u128::from(budget.per_request())),
        in_use = %admission::bytes_text(u128::from(budget.used())),
        source = state.config().memory_budget.map_or_else(
            || admission::default_budget().map_or("none readable", |(_, what)| what),
            |_| "--memory-budget",
        ),
        "memory budget"
    );
    let sweeper = state.store().ttl().map(|ttl| {
        let state = state.clone();
        // Sweep often enough that a session is held at most ~10% past its TTL (a request
        // for an expired session gets 404 at once, swept or not).
        let every = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                state.rates().forget_idle();
                match state.store().expire_idle().await {
                    Ok(0) => {}
                    Ok(gone) => tracing::info!(sessions = gone, "expired idle sessions"),
                    Err(e) => tracing::warn!(error = %e, "could not expire idle sessions"),
                }
            }
        })
    });
    let (began_tx, mut began) = tokio::sync::watch::channel(false);
    let stopping = state.clone();
    let background = state.clone();
    let connections = connections::serve(listener, app(state), connection_settings, async move {
        shutdown.await;
        stopping.begin_shutdown();
        let _ = began_tx.send(true);
    });
    let server = async move {
        connections.await;
        // Background trains have no connection to wait for: wait for their last commits.
        background.jobs().all_ended().await;
    };
    let deadline = async move {
        let _ = began.wait_for(|b| *b).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        () = server => Ok(()),
        () = deadline => {
            tracing::warn!("requests still running {SHUTDOWN_GRACE:?} after shutdown began; exiting");
            Ok(())
        }
    };
    if let Some(s) = sweeper {
        s.abort();
    }
    result
}
