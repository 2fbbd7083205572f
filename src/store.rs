//! The session store: every live session, shared by all requests.
//!
//! Locking rules. The map from id to session is one `std::sync::Mutex`, held only to look
//! up, insert, remove or list, never across an `.await` or a computation. Each session's
//! state is an immutable snapshot (`Arc<Session>`) behind a `RwLock` that is likewise held
//! only to clone or swap that `Arc`: readers (every `GET`, predict, gradients) take a
//! snapshot and never wait for anything longer. Every change to a session (train, `PUT
//! /dataset`, `PUT /weights`) first takes that session's writer lock, a fair
//! `tokio::sync::Mutex`, so changes run one at a time in arrival order; a waiting change
//! holds no worker. The change works on its own copy of the snapshot and publishes it in
//! one swap at the end, so a failed, stopped or abandoned run leaves either the old state or
//! the new one, never a mix. Deleting only removes the map entry: a train still running on
//! that session finishes on its own copy, answers its client, and publishes into a session
//! nobody can reach any more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::datasets::StoredDataset;
use crate::error::{ApiError, ApiResult};
use crate::nn::{Init, Network};

/// How a session's weights were initialised, as the API echoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitEcho {
    pub method: &'static str,
    pub seed: Option<u32>,
}

impl From<&Init> for InitEcho {
    fn from(init: &Init) -> Self {
        Self {
            method: init.method(),
            seed: init.seed(),
        }
    }
}

/// One consistent state of a session.
#[derive(Debug, Clone)]
pub struct Session {
    pub net: Network,
    pub init: InitEcho,
    pub dataset: Option<Arc<StoredDataset>>,
    /// Entry k (0-based) is the mean loss after update k + 1 since the weights were set.
    pub history: Vec<f64>,
    /// The loss at the starting weights, set by the first train after they were set.
    pub initial_loss: Option<f64>,
}

/// A session as the store holds it.
#[derive(Debug)]
pub struct Entry {
    pub id: String,
    pub created_at: OffsetDateTime,
    seq: u64,
    state: RwLock<Arc<Session>>,
    writer: Arc<tokio::sync::Mutex<()>>,
    last_used: AtomicU64,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Entry {
    /// The current state; never waits for a change in progress.
    pub fn snapshot(&self) -> Arc<Session> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publishes a new state. Call only while holding the writer lock.
    pub fn publish(&self, session: Session) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(session);
    }

    /// Waits (without a worker) for this session's turn to change it.
    pub async fn writer(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.writer.clone().lock_owned().await
    }

    fn touch(&self) {
        self.last_used.store(now_millis(), Ordering::Relaxed);
    }

    /// Unix milliseconds of the last request that named this session.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }
}

pub struct Store {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    next_seq: AtomicU64,
    max_sessions: usize,
    ttl: Option<Duration>,
}

impl Store {
    pub fn new(max_sessions: usize, ttl_secs: u64) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(0),
            max_sessions,
            ttl: (ttl_secs > 0).then(|| Duration::from_secs(ttl_secs)),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Adds a session under a new id, unless the store is full.
    pub fn insert(&self, session: Session) -> ApiResult<Arc<Entry>> {
        let id = Uuid::new_v4().hyphenated().to_string();
        let entry = Arc::new(Entry {
            id: id.clone(),
            created_at: OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            state: RwLock::new(Arc::new(session)),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            last_used: AtomicU64::new(now_millis()),
        });
        let mut map = self.map();
        if map.len() >= self.max_sessions {
            return Err(ApiError::TooManySessions(format!(
                "this server holds at most {} sessions; DELETE the ones you no longer need",
                self.max_sessions
            )));
        }
        map.insert(id, entry.clone());
        Ok(entry)
    }

    /// The session with this id, marking it used (idle sessions expire).
    /// A session past its TTL is gone here even if the sweeper has not reached it yet.
    pub fn get(&self, id: &str) -> ApiResult<Arc<Entry>> {
        let mut map = self.map();
        let entry = map
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found_session(id))?;
        if self.is_idle(&entry, now_millis()) {
            map.remove(id);
            return Err(ApiError::not_found_session(id));
        }
        entry.touch();
        Ok(entry)
    }

    /// Untouched for longer than the TTL, and not training (a held writer lock).
    fn is_idle(&self, entry: &Entry, now: u64) -> bool {
        self.ttl.is_some_and(|ttl| {
            now.saturating_sub(entry.last_used()) > ttl.as_millis() as u64
                && entry.writer.try_lock().is_ok()
        })
    }

    pub fn remove(&self, id: &str) -> ApiResult<()> {
        self.map()
            .remove(id)
            .map(drop)
            .ok_or_else(|| ApiError::not_found_session(id))
    }

    /// A page of sessions, newest first, and the total count.
    pub fn list(&self, offset: usize, limit: usize) -> (Vec<Arc<Entry>>, usize) {
        let mut all: Vec<Arc<Entry>> = self.map().values().cloned().collect();
        let total = all.len();
        all.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq));
        (all.into_iter().skip(offset).take(limit).collect(), total)
    }

    /// Removes sessions idle for longer than the TTL; returns how many went.
    /// A session whose writer lock is held (a train in progress) is not idle.
    pub fn expire_idle(&self) -> usize {
        if self.ttl.is_none() {
            return 0;
        }
        let now = now_millis();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, e| !self.is_idle(e, now));
        before - map.len()
    }

    /// When this entry expires if nobody touches it, as Unix seconds (rounded up).
    pub fn expires_at(&self, entry: &Entry) -> Option<u64> {
        self.ttl
            .map(|t| (entry.last_used() + t.as_millis() as u64).div_ceil(1000))
    }
}
