//! backprop-server: trains small neural networks by backpropagation over HTTP, with the
//! numbers of the course's NumPy notebook.
//!
//! `nn` is the numeric core (no HTTP in it); `api` is the thin HTTP layer over it; `store`
//! holds the sessions they share.

pub mod api;
pub mod config;
pub mod datasets;
pub mod error;
pub mod nn;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::time::Duration;

pub use api::{AppState, app};
pub use config::Config;

/// After `shutdown` resolves, running requests get this long to finish; then serve returns.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` resolves. Then it stops accepting
/// connections, tells running trains to stop at their next epoch boundary (they answer with
/// what they did, status `time_limit`), and waits up to [`SHUTDOWN_GRACE`] for them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(config);
    let sweeper = state.store().ttl().map(|ttl| {
        let state = state.clone();
        // Sweep often enough that a session is held at most ~10% past its TTL (a request
        // for an expired session gets 404 at once, swept or not).
        let every = (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let gone = state.store().expire_idle();
                if gone > 0 {
                    tracing::info!(sessions = gone, "expired idle sessions");
                }
            }
        })
    });
    let (began_tx, mut began) = tokio::sync::watch::channel(false);
    let stopping = state.clone();
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(async move {
        shutdown.await;
        stopping.begin_shutdown();
        let _ = began_tx.send(true);
    });
    let deadline = async move {
        let _ = began.wait_for(|b| *b).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        r = server.into_future() => r,
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
