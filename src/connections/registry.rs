//! Which connections are open, which of them wait for a request, and which to close first
//! when there are too many.
//!
//! A connection *waits* from its start until its request's headers are complete, and again
//! from the end of each response until the next request's headers are complete: it holds a
//! descriptor and a little memory, and nothing is lost by closing it (no request of its has
//! begun). It is *busy* from the end of a request's headers to the end of its response.
//!
//! Past `--max-connections`, each new connection closes a waiting one, so thousands of
//! half-open or idle connections cannot keep a new client (or `/healthz`) out. Connections
//! that never finished a request go first (an attacker's half-open connections never do, and
//! a client that has made a request is likely to make another on the same connection), then
//! those idle between requests; in each group, the one that has waited longest.
//! When every connection is busy, there is nothing to close: the new connection is admitted
//! *over the limit* and answers only `/healthz` (503 `overloaded` otherwise; see
//! [`super::serve`]). Such connections wait too, so they are the first to go in turn.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// At most one warning about the limit this often; the rest is counted into the next one.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub struct Registry {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Admitted and not yet released, `closing` included.
    open: usize,
    /// Closed to make room, and not yet released: their descriptors are on their way back.
    closing: usize,
    /// Stamps the moments connections begin to wait; the smallest key waited longest.
    next_stamp: u64,
    /// The waiting connections that never finished a request's headers, by when they began to
    /// wait, and those that did, idle between requests.
    fresh: BTreeMap<u64, Arc<Conn>>,
    kept: BTreeMap<u64, Arc<Conn>>,
    /// Connections closed to make room, and admitted over the limit, since the last warning.
    shed_since_warning: u64,
    over_since_warning: u64,
    warned: Option<Instant>,
}

/// What an open connection shares with the registry and with its own timer and IO.
pub struct Conn {
    registry: Arc<Registry>,
    /// Its key in `fresh` or `kept` while it waits, 0 otherwise. Changed only under the registry's lock.
    stamp: AtomicU64,
    busy: AtomicBool,
    requests: AtomicU64,
    bytes_read: AtomicU64,
    /// Set when the header timeout struck after part of a request had come: it gets a 408.
    head_timed_out: AtomicBool,
    /// Closed to make room. Changed only under the registry's lock.
    closing: AtomicBool,
    /// Notified when the registry closes this connection to make room.
    shed: Notify,
}

/// A new connection; whether another was closed to make room for it, or it was admitted
/// over the limit.
pub struct Admission {
    pub conn: Arc<Conn>,
    pub made_room: bool,
    pub over_limit: bool,
}

impl Registry {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Connections open now (admitted and not yet released).
    pub fn open(&self) -> usize {
        self.lock().open
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock guards plain bookkeeping that no panic can leave half-done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts in a new connection, waiting from now on; at the limit, first closes one that
    /// waits. A connection waits from its admission, not from when its task first runs: in a
    /// burst the acceptor runs ahead of the tasks it spawns, and connections it has admitted
    /// must already be candidates, or kept-alive clients would go before them.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let conn = Arc::new(Conn {
            registry: self.clone(),
            stamp: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            head_timed_out: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            shed: Notify::new(),
        });
        let mut inner = self.lock();
        let (mut made_room, mut over_limit) = (false, false);
        // Those already closing have made their room: in a burst, counting them would close
        // one connection per newcomer twice over, and reach kept-alive clients.
        if inner.open - inner.closing >= self.max {
            if Self::shed_longest_waiting(&mut inner) {
                made_room = true;
            } else {
                inner.over_since_warning += 1;
                over_limit = true;
            }
            self.maybe_warn(&mut inner);
        }
        inner.open += 1;
        conn.list_waiting(&mut inner);
        drop(inner);
        Admission {
            conn,
            made_room,
            over_limit,
        }
    }

    /// The process is out of descriptors: unless some are already on their way back, closes
    /// a waiting connection. Returns whether a descriptor is coming back.
    pub fn out_of_descriptors(&self) -> bool {
        let mut inner = self.lock();
        inner.closing > 0 || Self::shed_longest_waiting(&mut inner)
    }

    /// Closes the waiting connection that never made a request and waited longest, or if
    /// none, the one idle between requests that waited longest. Returns whether one was.
    fn shed_longest_waiting(inner: &mut Inner) -> bool {
        let Some((_, conn)) = inner.fresh.pop_first().or_else(|| inner.kept.pop_first()) else {
            return false;
        };
        conn.stamp.store(0, Ordering::Relaxed);
        conn.closing.store(true, Ordering::Relaxed);
        inner.closing += 1;
        inner.shed_since_warning += 1;
        // Its task closes it and releases it.
        conn.shed.notify_one();
        true
    }

    fn maybe_warn(&self, inner: &mut Inner) {
        let now = Instant::now();
        if inner.warned.is_some_and(|t| now < t + WARN_EVERY) {
            return;
        }
        tracing::warn!(
            open = inner.open,
            max_connections = self.max,
            closed_waiting = inner.shed_since_warning,
            admitted_over_limit = inner.over_since_warning,
            "connection limit reached: closing connections that wait for a request, those \
             that never made one and waited longest first; over the limit, only /healthz is \
             served"
        );
        inner.warned = Some(now);
        inner.shed_since_warning = 0;
        inner.over_since_warning = 0;
    }
}

impl Conn {
    /// The connection begins to wait for a request's headers (again).
    pub fn waiting(self: &Arc<Self>) {
        let mut inner = self.registry.lock();
        let listed = self.stamp.load(Ordering::Relaxed) != 0;
        if self.closing.load(Ordering::Relaxed) || (listed && self.requests() == 0) {
            // Closing (its task has yet to see it), or waiting since its admission, keeping
            // its place in line.
            return;
        }
        self.list_waiting(&mut inner);
        self.busy.store(false, Ordering::Relaxed);
    }

    /// Puts the connection on its waiting list, as the one that waited least, under the
    /// registry's lock.
    fn list_waiting(self: &Arc<Self>, inner: &mut Inner) {
        self.unlist(inner);
        inner.next_stamp += 1;
        let stamp = inner.next_stamp;
        self.stamp.store(stamp, Ordering::Relaxed);
        if self.requests() == 0 {
            inner.fresh.insert(stamp, self.clone());
        } else {
            inner.kept.insert(stamp, self.clone());
        }
    }

    /// A request's headers are complete: the connection is busy until its response is out.
    pub fn begin_request(&self) {
        let mut inner = self.registry.lock();
        self.unlist(&mut inner);
        self.busy.store(true, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The connection is gone.
    pub fn release(&self) {
        let mut inner = self.registry.lock();
        self.unlist(&mut inner);
        inner.open -= 1;
        if self.closing.load(Ordering::Relaxed) {
            inner.closing -= 1;
        }
    }

    /// Takes the connection off the waiting lists, under the registry's lock.
    fn unlist(&self, inner: &mut Inner) {
        let stamp = self.stamp.swap(0, Ordering::Relaxed);
        if stamp != 0 && inner.fresh.remove(&stamp).is_none() {
            inner.kept.remove(&stamp);
        }
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Requests whose headers were complete on this connection.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    pub fn count_read(&self, n: usize) {
        self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn set_head_timed_out(&self) {
        self.head_timed_out.store(true, Ordering::Relaxed);
    }

    pub fn head_timed_out(&self) -> bool {
        self.head_timed_out.load(Ordering::Relaxed)
    }

    /// Resolves when the registry closes this connection to make room.
    pub async fn shed(&self) {
        self.shed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(c: &Conn) -> bool {
        c.stamp.load(Ordering::Relaxed) != 0
    }

    #[test]
    fn at_the_limit_the_longest_waiting_connection_goes_first() {
        let registry = Registry::new(3);
        let a = registry.admit().conn;
        let b = registry.admit().conn;
        let c = registry.admit().conn;
        // The first poll of a connection does not move it back in the line.
        a.waiting();
        let d = registry.admit();
        assert!(!d.over_limit);
        assert!(!waits(&a), "a waited longest, and was closed");
        assert!(waits(&b) && waits(&c) && waits(&d.conn));
        a.release();
        assert_eq!(registry.open(), 3);
    }

    #[test]
    fn a_connection_that_made_a_request_goes_after_those_that_never_did() {
        let registry = Registry::new(3);
        let a = registry.admit().conn;
        a.begin_request();
        a.waiting();
        let b = registry.admit().conn;
        let c = registry.admit().conn;
        let d = registry.admit().conn;
        assert!(
            waits(&a),
            "a is idle between requests and waited longest, but stays"
        );
        assert!(!waits(&b), "b never made a request: it goes first");
        let e = registry.admit().conn;
        assert!(!waits(&c) && waits(&a));
        let f = registry.admit().conn;
        assert!(!waits(&d) && waits(&a));
        e.begin_request();
        f.begin_request();
        registry.admit();
        assert!(
            !waits(&a),
            "no connection that never made a request waits: a goes"
        );
    }

    #[test]
    fn busy_connections_are_never_closed_to_make_room() {
        let registry = Registry::new(2);
        let a = registry.admit().conn;
        let b = registry.admit().conn;
        a.begin_request();
        b.begin_request();
        let c = registry.admit();
        assert!(c.over_limit, "every connection is busy: over the limit");
        assert!(a.is_busy() && b.is_busy());
        assert_eq!(registry.open(), 3);
        // The one over the limit waits, so it is the next to go.
        assert!(!registry.admit().over_limit);
        assert!(!waits(&c.conn));
    }
}
