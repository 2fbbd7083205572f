//! The `backprop-server` binary: settings, logging, bind, serve until SIGINT/SIGTERM.

use backprop_server::Config;
use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    // Before any thread: the allocator's settings (see prepare_allocator).
    let allocator = backprop_server::admission::prepare_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Bounded, so the blocking threads' stacks and packing buffers are in the budget.
        .max_blocking_threads(backprop_server::admission::blocking_threads(&config))
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run(config, allocator)),
        Err(e) => {
            eprintln!("backprop-server: cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, allocator: String) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info")),
        )
        .init();
    tracing::info!("allocator: {allocator}");
    // The store first: a database that cannot be used is a start-up error, not a server
    // that answers 500.
    let store = match backprop_server::open_store(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("backprop-server: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(sessions = %store.describe(), "store open");
    let listener = match backprop_server::connections::bind(config.addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("backprop-server: cannot listen on {}: {e}", config.addr);
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(config.addr, |a| a);
    tracing::info!(%addr, workers = config.workers, "backprop-server listening");
    match backprop_server::serve(listener, config, store, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backprop-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM; running requests then finish before the process exits.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing running requests");
}
