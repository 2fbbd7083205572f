//! backprop-server: trains small neural networks by backpropagation over HTTP, with the
//! numbers of the course's NumPy notebook.

pub mod config;
pub mod nn;

pub use config::Config;

/// Serves the API on `listener` until `shutdown` resolves, then lets running requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _ = (listener, config, shutdown);
    todo!("the HTTP layer is being written")
}
