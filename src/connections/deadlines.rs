//! The three clocks of a connection: its request headers, its request bodies, and its
//! waits between requests.
//!
//! hyper's HTTP/1 server has a header read timeout, and it is used here; but hyper starts
//! that clock whenever it begins to wait for a request's headers, and on a kept-alive
//! connection that is the moment the previous response went out. Used as it is, a 10 s header
//! timeout would close every idle kept-alive connection after 10 s, and no idle timeout
//! longer than the header timeout could ever be reached (hyper has no idle timeout of its
//! own for HTTP/1). hyper takes its clocks from a [`Timer`], so each connection gets its own
//! [`HeadTimer`], which starts that clock where the contract says:
//!
//! - on a new connection, at its start: the headers are due within `--header-timeout-secs`;
//! - on a kept-alive connection, at the end of the previous response: until the first byte
//!   of the next request the connection is idle and may wait `--idle-timeout-secs`; from that
//!   byte on, its headers are due within `--header-timeout-secs`.
//!
//! When the clock strikes, hyper closes the connection (quietly if it was idle). The body has
//! a clock of its own, [`TimedBody`]: the whole body is due within `--body-timeout-secs` of
//! the end of the headers, whatever pace it comes at. And an answer the client stops reading
//! ([`Metered`]): a connection whose writes wait `--idle-timeout-secs` for the client to read
//! is closed, or a client that never reads would hold its connection, busy, forever.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::registry::Conn;

/// One connection's timer for hyper's header read timeout (see the module's doc).
pub struct HeadTimer {
    conn: Arc<Conn>,
    header: Duration,
    idle: Duration,
}

impl HeadTimer {
    pub fn new(conn: Arc<Conn>, header: Duration, idle: Duration) -> Self {
        Self { conn, header, idle }
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        TokioTimer::new().sleep(duration)
    }

    /// hyper calls this when it begins to wait for a request's headers, with the deadline
    /// `now + header timeout`.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        self.conn.waiting();
        let kept_alive = self.conn.requests() > 0;
        let deadline = if kept_alive {
            tokio::time::Instant::now() + self.idle
        } else {
            tokio::time::Instant::from_std(deadline)
        };
        Box::pin(HeadWait {
            conn: self.conn.clone(),
            read_before: self.conn.bytes_read(),
            header: self.header,
            idle: kept_alive,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        })
    }
}

/// The wait for one request's headers; resolves when they are overdue.
struct HeadWait {
    conn: Arc<Conn>,
    /// Bytes the connection had read when the wait began.
    read_before: u64,
    header: Duration,
    /// Still idle: no byte of the next request on a kept-alive connection yet.
    idle: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // hyper polls this right after each read that left the headers incomplete, so the
        // first byte of a request is seen here as it arrives.
        let heard = this.conn.bytes_read() != this.read_before;
        if this.idle && heard {
            this.idle = false;
            let due = tokio::time::Instant::now() + this.header;
            this.sleep.as_mut().reset(due);
        }
        ready!(this.sleep.as_mut().poll(cx));
        if heard {
            this.conn.set_head_timed_out();
        }
        Poll::Ready(())
    }
}

impl Sleep for HeadWait {}

/// The socket, counting what it reads for [`HeadWait`], and failing a write that has waited
/// `stall_limit` for the client to read.
pub struct Metered {
    stream: TcpStream,
    conn: Arc<Conn>,
    stall_limit: Duration,
    /// Since when writes wait, if they do.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Metered {
    pub fn new(stream: TcpStream, conn: Arc<Conn>, stall_limit: Duration) -> Self {
        Self {
            stream,
            conn,
            stall_limit,
            stalled: None,
        }
    }

    pub fn into_inner(self) -> TcpStream {
        self.stream
    }

    /// After a write that must wait: pending, or the error once writes have waited too long.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.stall_limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing of its answer for {limit:?}"),
        ))
    }

    /// The outcome of a write: the stall clock runs while it waits, and stops when it is done.
    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Pending => self.poll_stall(cx).map(Err),
            done => {
                self.stalled = None;
                done
            }
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.conn.count_read(read);
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.after_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body that fails with [`BodyTimedOut`] once it is overdue. Whoever reads it
/// stops there and drops what it collected.
pub struct TimedBody {
    inner: Incoming,
    due: tokio::time::Instant,
    limit: Duration,
    /// Made on the first wait, so a body read at once (or not at all) never sets a timer.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TimedBody {
    pub fn new(inner: Incoming, limit: Duration) -> Self {
        Self {
            inner,
            due: tokio::time::Instant::now() + limit,
            limit,
            sleep: None,
        }
    }

    fn overdue(&self) -> BodyError {
        Box::new(BodyTimedOut { limit: self.limit })
    }
}

type BodyError = Box<dyn Error + Send + Sync>;

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Checked before every frame, not only while waiting: a body that always has a little
        // more ready is still cut at its deadline.
        if tokio::time::Instant::now() >= self.due {
            return Poll::Ready(Some(Err(self.overdue())));
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let due = self.due;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Some(Err(self.overdue())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a [`TimedBody`] fails with.
#[derive(Debug)]
pub struct BodyTimedOut {
    pub limit: Duration,
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the body did not arrive within {} s",
            self.limit.as_secs_f64()
        )
    }
}

impl Error for BodyTimedOut {}

/// The limit a body broke, if `e` (or an error it wraps) is a [`BodyTimedOut`].
pub fn body_timed_out(e: &(dyn Error + 'static)) -> Option<Duration> {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(t) = e.downcast_ref::<BodyTimedOut>() {
            return Some(t.limit);
        }
        at = e.source();
    }
    None
}
