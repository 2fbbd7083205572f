//! The connection layer: accepts connections and serves the API on them over HTTP/1.1 with
//! hyper, so that slow and idle clients cannot take the server down (contract, "Sharing one
//! server safely", "Connections").
//!
//! - Request headers are due within `--header-timeout-secs`, whole bodies within
//!   `--body-timeout-secs`, and a kept-alive connection may wait `--idle-timeout-secs` for
//!   its next request ([`deadlines`]). Overdue headers close the connection, with a 408
//!   problem if part of a request came; an overdue body is 408 `request_timeout`. A client
//!   that reads nothing of its answer for `--idle-timeout-secs` loses its connection too.
//! - At most `--max-connections` are held; past it, the connections that waited longest for
//!   a request are closed first ([`registry`]). If every connection is busy with a request,
//!   none is cut: the newcomer is admitted over the limit, answers `GET /healthz` (liveness
//!   is true), and 503 `overloaded` with `Retry-After` to anything else, then closes. A
//!   class's clients learn at once that they should retry, rather than hang in the listen
//!   queue; the reserve below the open-file limit pays for these short-lived connections.
//! - Out of descriptors all the same (`EMFILE`), the longest-waiting connection is closed
//!   and the accept retried at once (axum's own loop sleeps a second).
//! - Shutdown: no new connections; waiting ones close now, busy ones finish their response
//!   (with `Connection: close`) and close; [`serve`] returns when all are gone.

mod deadlines;
mod limits;
mod registry;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

pub use deadlines::{BodyTimedOut, body_timed_out};
pub use limits::{OpenFileLimit, default_max_connections, raise_open_file_limit};

use crate::config::Config;
use crate::error::ApiError;
use deadlines::{HeadTimer, Metered, TimedBody};
use registry::{Conn, Registry};

/// The listen queue: connections the kernel completes before the server accepts them. The
/// standard library's 128 overflows in a burst of new connections, and every connection
/// attempt it drops waits a whole second for the SYN to be sent again. The kernel caps it at
/// `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// The most a connection buffers of a request's headers (431 past it; hyper's default limit
/// is its read buffer's, about 400 KiB). Ours are a few hundred bytes; the cap bounds what a
/// slow client can make each held connection hold while its headers trickle in.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long a 408 may take to write to a client that is not reading.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// After an accept error that nothing here can mend (out of descriptors with no connection
/// to close, out of memory), wait this long before the next accept; the kernel holds new
/// connections in the listen queue meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Settings of the connection layer.
#[derive(Debug, Clone)]
pub struct Settings {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Settings {
    /// The settings in `config`; `--max-connections` defaults from `open_files`, the soft
    /// open-file limit in force.
    pub fn new(config: &Config, open_files: u64) -> Self {
        let fits = default_max_connections(open_files);
        let max = config.max_connections.unwrap_or(fits);
        if max > fits {
            tracing::warn!(
                max_connections = max,
                open_file_limit = open_files,
                "--max-connections leaves fewer than {} descriptors for the server's own \
                 files; when they run out, waiting connections are closed to make room",
                limits::reserve(open_files)
            );
        }
        Self {
            header_timeout: Duration::from_secs_f64(config.header_timeout_secs),
            body_timeout: Duration::from_secs_f64(config.body_timeout_secs),
            idle_timeout: Duration::from_secs_f64(config.idle_timeout_secs),
            max_connections: usize::try_from(max).unwrap_or(usize::MAX),
        }
    }
}

/// Listens on `addr` with a listen queue of [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As the standard library does: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What every connection's task shares.
struct Shared {
    app: Router,
    settings: Settings,
    http: http1::Builder,
    /// The whole 408 answer to headers that came too slowly, as written on the socket.
    header_timeout_answer: Vec<u8>,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, closes the
/// connections that wait, lets busy ones finish their response, and returns when all are
/// closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) {
    tracing::info!(
        max_connections = settings.max_connections,
        header_timeout_secs = settings.header_timeout.as_secs_f64(),
        body_timeout_secs = settings.body_timeout.as_secs_f64(),
        idle_timeout_secs = settings.idle_timeout.as_secs_f64(),
        "connections"
    );
    let registry = Registry::new(settings.max_connections);
    let mut http = http1::Builder::new();
    // Each connection replaces this timer with its own HeadTimer; hyper wants one here too.
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let header_timeout_answer = raw_answer(ApiError::RequestTimeout(format!(
        "the request's headers did not arrive within {} s (--header-timeout-secs); the \
         connection is closed. Send the whole request at once, as curl does",
        settings.header_timeout.as_secs_f64()
    )))
    .await;
    let shared = Arc::new(Shared {
        app,
        settings,
        http,
        header_timeout_answer,
    });
    // Each connection's task holds a receiver: `changed()` tells it to stop, and `closed()`
    // tells us all are gone (hyper-util's GracefulShutdown works the same way, but owns the
    // connection, and a 408 needs it back).
    let (stop, stopped) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let admission = registry.admit();
                tokio::spawn(drive(
                    stream,
                    admission.conn,
                    admission.over_limit,
                    shared.clone(),
                    stopped.clone(),
                ));
                if admission.made_room {
                    // Let the closed connection's task run and give its descriptor back
                    // before the next accept: in a flood, the acceptor would run ahead.
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => accept_failed(&e, &registry).await,
        }
    }
    drop(listener);
    drop(stopped);
    tracing::info!(
        open = registry.open(),
        "no longer accepting; closing idle connections"
    );
    let _ = stop.send(());
    stop.closed().await;
}

/// Out of descriptors: close a waiting connection and accept again at once. An error that
/// concerns one connection only (it was reset before it was accepted) is passed over; any
/// other (out of memory, say) gets a pause, so as not to spin on it.
async fn accept_failed(e: &io::Error, registry: &Registry) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        if registry.out_of_descriptors() {
            // Let the closing connections' tasks give their descriptors back.
            tokio::task::yield_now().await;
        } else {
            tracing::warn!(
                open = registry.open(),
                "out of descriptors, and every connection is busy: {e}"
            );
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    } else if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        tracing::debug!("accept: {e}");
    } else {
        tracing::warn!("accept: {e}");
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// Serves one connection until it closes, is closed to make room, or shutdown closes it.
async fn drive(
    stream: TcpStream,
    conn: Arc<Conn>,
    over_limit: bool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<()>,
) {
    let _release = Release(conn.clone());
    // Answers are written whole (head and body in one write), so this costs no extra packets
    // and saves a delayed-ACK stall on the rare split answer.
    let _ = stream.set_nodelay(true);
    let settings = &shared.settings;
    let mut http = shared.http.clone();
    http.timer(HeadTimer::new(
        conn.clone(),
        settings.header_timeout,
        settings.idle_timeout,
    ));
    if over_limit {
        http.keep_alive(false);
    }
    let service = ConnService {
        app: shared.app.clone(),
        conn: conn.clone(),
        body_timeout: settings.body_timeout,
        over_limit: over_limit.then_some(settings.max_connections),
    };
    let io = TokioIo::new(Metered::new(stream, conn.clone(), settings.idle_timeout));
    let mut connection = http.serve_connection(io, service);
    let mut stopping = false;
    let served = loop {
        tokio::select! {
            served = &mut connection => break served,
            () = conn.shed() => {
                if !conn.is_busy() {
                    return;
                }
                // Its request began just as it was picked: let it finish, then close.
                Pin::new(&mut connection).graceful_shutdown();
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if !conn.is_busy() {
                    return;
                }
                Pin::new(&mut connection).graceful_shutdown();
            }
        }
    };
    match served {
        Err(e) if e.is_timeout() && conn.head_timed_out() => {
            let stream = connection.into_parts().io.into_inner().into_inner();
            answer(stream, &shared.header_timeout_answer).await;
        }
        Err(e) => tracing::debug!("connection: {e}"),
        Ok(()) => {}
    }
}

/// Writes a whole answer and closes, giving up on a client that does not read it.
async fn answer(mut stream: TcpStream, bytes: &[u8]) {
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    })
    .await;
}

/// `error` as an HTTP/1.1 answer that closes the connection, byte for byte.
async fn raw_answer(error: ApiError) -> Vec<u8> {
    let (parts, body) = error.into_response().into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        if name != hyper::header::CONTENT_LENGTH && name != hyper::header::CONNECTION {
            out.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
        }
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Counts the connection out of the registry however its task ends.
struct Release(Arc<Conn>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// The API as one connection serves it: each request marks the connection busy and gets a
/// body with a deadline; a connection over the limit answers only `/healthz`.
#[derive(Clone)]
struct ConnService {
    app: Router,
    conn: Arc<Conn>,
    body_timeout: Duration,
    /// `Some(max_connections)` on a connection admitted over the limit.
    over_limit: Option<usize>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.conn.begin_request();
        if let Some(max) = self.over_limit
            && req.uri().path() != "/healthz"
        {
            let refused = ApiError::Overloaded {
                detail: format!(
                    "all of this server's {max} connections (--max-connections) are busy \
                     with requests; retry in a second"
                ),
                retry_after_secs: 1,
            };
            return Box::pin(std::future::ready(Ok(refused.into_response())));
        }
        let limit = self.body_timeout;
        let req: Request = req.map(|body| Body::new(TimedBody::new(body, limit)));
        Box::pin(self.app.clone().oneshot(req))
    }
}
