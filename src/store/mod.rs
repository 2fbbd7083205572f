//! The session store: every session, shared by all requests, kept where `--database` says.
//!
//! Three places to keep them, one interface: `memory` (nothing survives the process),
//! `sqlite:PATH` (the default; one process per file) and `postgres://...` (several replicas
//! on one database). [`memory`] is the map of [`Entry`]s every request goes through: the
//! whole truth with `memory`, a cache in front of the database otherwise. [`sql`] speaks to
//! both databases through sqlx.
//!
//! Durability. A change is written to the database before it is published to the map, so
//! every answer a client gets describes a state that is on disk, and no reader ever sees a
//! state that is not. A train's result (new weights, its losses appended to the history,
//! `initial_loss`) is one transaction: a crash mid-train leaves the session as it was.
//!
//! Locking rules. The map from id to session is one `std::sync::Mutex`, held only to look
//! up, insert, remove or list, never across an `.await` or a computation. Each session's
//! state is an immutable snapshot (`Arc<Session>`) behind a `RwLock` that is likewise held
//! only to clone or swap that `Arc`: readers (every `GET`, predict, gradients) take a
//! snapshot and never wait for anything longer. A snapshot's parts are shared, not copied:
//! the network, the dataset and the history's append-only log each sit behind their own
//! `Arc`, so a train copies only the weights it updates. Every change to a session (train,
//! `PUT /dataset`, `PUT /weights`) first takes its turn with [`Store::lock`]: that session's
//! fair `tokio::sync::Mutex` (changes run one at a time in arrival order; a waiting change
//! holds no worker) and, on PostgreSQL, the session's advisory lock, held on a connection
//! of its own for the change's duration (so replicas take turns too, and a replica that
//! dies releases it), after which the state is re-read if another replica changed it. The
//! change works on its own copy and publishes it in one swap at the end, so a failed,
//! stopped or abandoned run leaves either the old state or the new one, never a mix.
//! Deleting does not wait for a turn: a train still running on a deleted session finishes,
//! answers its client, and its commit finds nothing to update.
//!
//! TTL. A session's clock is the second (rounded up) of the last request that named it; it
//! expires `--session-ttl-secs` after that, unless it is training. The clock is written to
//! the database only when that second changes, so reads do not each cost a write, and
//! `expires_at` comes back exactly after a restart.

mod history;
mod jobs;
mod memory;
mod sql;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::datasets::StoredDataset;
use crate::nn::{Init, Network};

pub use history::History;
pub use jobs::{Job, JobCommit, JobError, JobState, JobStatus, STALE_AFTER_MS};

use jobs::JobSlot;

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

impl InitEcho {
    /// The echo for a stored method name; `None` for a name no build of ours writes.
    fn parse(method: &str, seed: Option<u32>) -> Option<Self> {
        let method = ["numpy_rand", "xavier", "he", "explicit"]
            .into_iter()
            .find(|m| *m == method)?;
        Some(Self { method, seed })
    }
}

/// One consistent state of a session. Cloning it is cheap: its parts are shared.
#[derive(Debug, Clone)]
pub struct Session {
    pub net: Arc<Network>,
    pub init: InitEcho,
    pub dataset: Option<Arc<StoredDataset>>,
    /// Entry k (0-based) is the mean loss after update k + 1 since the weights were set.
    pub history: History,
    /// The loss at the starting weights, set by the first train after they were set.
    pub initial_loss: Option<f64>,
}

/// Bytes a session holds in memory with `parameters` parameters, `data` numbers of dataset
/// (x and y) and `history` losses: every number's 8 bytes, the history's log counted at
/// twice its length (it grows by doubling), and a kilobyte for its entry, id and settings.
/// An estimate of what the process holds, for the memory budget: parts that forks share
/// (a dataset, a log) count once per session, so it errs high, never low.
pub fn held_bytes(parameters: u128, data: u128, history: u128) -> u128 {
    8u128
        .saturating_mul(parameters.saturating_add(data).saturating_add(2 * history))
        .saturating_add(1024)
}

impl Session {
    /// What this state holds in memory ([`held_bytes`]).
    pub fn held_bytes(&self) -> u64 {
        let data = self
            .dataset
            .as_ref()
            .map_or(0, |d| d.data.x().len() + d.data.y().len());
        let bytes = held_bytes(
            self.net.config().parameter_count(),
            data as u128,
            self.history.len() as u128,
        );
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }
}

/// The key a new session belongs to (`None`: the admin key, or everyone on a server
/// without keys, stored with no owner), and how many sessions that key may hold.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub name: Option<&'a str>,
    pub max_sessions: usize,
}

/// Whose session limit a refused create reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Quota {
    /// The server's (`--max-sessions`).
    Server,
    /// A key's (`--max-sessions-per-key`): a named key's, or (`None`) the admin's or, without
    /// keys, everyone's.
    Key(Option<String>),
}

/// An API key as stored: its name and the hash of its secret (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub name: String,
    pub hash: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A key and how many sessions it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: KeyRecord,
    pub sessions: usize,
}

/// What can go wrong below the HTTP layer; `crate::error` turns each into a problem.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("no session {0:?}")]
    NotFound(String),
    #[error("at most {limit} sessions")]
    TooManySessions { limit: usize, quota: Quota },
    #[error("a key named {0:?} exists")]
    KeyExists(String),
    /// The session has a background train queued or running (this one).
    #[error("a job is queued or running")]
    JobActive(Box<Job>),
    /// The database does not answer (down, unreachable, out of disk); worth a retry.
    #[error("the database does not answer: {0}")]
    Unavailable(String),
    /// The store cannot start: the words say what is wrong and what to do.
    #[error("{0}")]
    Startup(String),
    #[error("{0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Where sessions are kept: `memory`, `sqlite:PATH` or `postgres://...`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Memory,
    Sqlite(PathBuf),
    Postgres(String),
}

impl FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory" {
            return Ok(Self::Memory);
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!(
                    "{s:?} names no file; write sqlite:PATH, e.g. sqlite:backprop.db"
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        Err(format!(
            "{s:?} is not a database; use sqlite:PATH (e.g. sqlite:backprop.db), \
             postgres://USER:PASSWORD@HOST/DATABASE, or memory (keeps nothing)"
        ))
    }
}

impl fmt::Display for Location {
    /// The URL as given (a PostgreSQL password included: this is for `--database=`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Self::Postgres(url) => f.write_str(url),
        }
    }
}

impl fmt::Debug for Location {
    /// Without a PostgreSQL password, since settings end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(url) => f.write_str(&sql::redacted(url)),
            other => write!(f, "{other}"),
        }
    }
}

/// What the store needs of the server's settings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `--max-sessions`.
    pub max_sessions: usize,
    /// `--session-ttl-secs`; 0 never expires.
    pub ttl_secs: u64,
}

/// A train's losses up to this many are appended to the history on the runtime.
const APPEND_INLINE_MAX: usize = 1 << 16;

/// Unix milliseconds now.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The TTL clock's second for a use at `millis`: rounded up, so `expires_at` is never early.
fn clock_second(millis: i64) -> i64 {
    millis.div_euclid(1000) + i64::from(millis.rem_euclid(1000) != 0)
}

/// What the database knows of a state, so a replica can tell whether its copy is current
/// and what it must re-read (`dataset_gen` and `history_gen` change when the dataset is
/// replaced and when the history starts anew).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Stamp {
    version: i64,
    dataset_gen: i64,
    history_gen: i64,
}

#[derive(Debug)]
struct Published {
    session: Arc<Session>,
    stamp: Stamp,
    /// `session.held_bytes()`, and whether the store's total counts it (while the entry is
    /// in the map): kept under the same lock as the state, so the total never drifts.
    bytes: u64,
    counted: bool,
}

impl Published {
    fn new(session: Arc<Session>, stamp: Stamp) -> Self {
        Self {
            bytes: session.held_bytes(),
            session,
            stamp,
            counted: false,
        }
    }

    /// Replaces the state, moving the store's total by the difference if it counts this.
    fn replace(&mut self, session: Arc<Session>, stamp: Stamp, held: &AtomicU64) {
        let bytes = session.held_bytes();
        if self.counted {
            held.fetch_add(bytes, Ordering::Relaxed);
            held.fetch_sub(self.bytes, Ordering::Relaxed);
        }
        self.session = session;
        self.stamp = stamp;
        self.bytes = bytes;
    }
}

/// A session as the store holds it.
#[derive(Debug)]
pub struct Entry {
    pub id: String,
    pub created_at: OffsetDateTime,
    /// The key that created it (`None`: the admin, or a server without keys).
    pub owner: Option<String>,
    seq: i64,
    state: RwLock<Published>,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The TTL clock: Unix second (rounded up) of the last request that named it.
    touched: AtomicI64,
    /// Its current or last background train, as far as this process knows it.
    job: JobSlot,
}

impl Entry {
    fn new(
        id: String,
        seq: i64,
        created_at: i64,
        owner: Option<String>,
        touched: i64,
        session: Arc<Session>,
        stamp: Stamp,
    ) -> Self {
        Self {
            id,
            created_at: OffsetDateTime::from_unix_timestamp(created_at)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            owner,
            seq,
            state: RwLock::new(Published::new(session, stamp)),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            touched: AtomicI64::new(touched),
            job: JobSlot::default(),
        }
    }

    /// The current state; never waits for a change in progress.
    pub fn snapshot(&self) -> Arc<Session> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .session
            .clone()
    }

    fn stamped(&self) -> (Arc<Session>, Stamp) {
        let p = self.state.read().unwrap_or_else(PoisonError::into_inner);
        (p.session.clone(), p.stamp)
    }

    fn publish(&self, session: Arc<Session>, stamp: Stamp, held: &AtomicU64) {
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(session, stamp, held);
    }

    /// Publishes a state read from the database unless a newer one is already here.
    fn publish_if_newer(&self, session: Arc<Session>, stamp: Stamp, held: &AtomicU64) {
        let mut p = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if stamp.version > p.stamp.version {
            p.replace(session, stamp, held);
        }
    }

    /// Counts this entry into the store's total `held` (it went into the map), or out of it
    /// (it left); each is done once, whatever the order of calls.
    fn count_in(&self, held: &AtomicU64) {
        let mut p = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if !p.counted {
            p.counted = true;
            held.fetch_add(p.bytes, Ordering::Relaxed);
        }
    }

    fn count_out(&self, held: &AtomicU64) {
        let mut p = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if p.counted {
            p.counted = false;
            held.fetch_sub(p.bytes, Ordering::Relaxed);
        }
    }

    /// What this entry's state holds ([`Session::held_bytes`]).
    fn bytes(&self) -> u64 {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    fn touched(&self) -> i64 {
        self.touched.load(Ordering::Relaxed)
    }

    fn set_touched(&self, second: i64) {
        self.touched.fetch_max(second, Ordering::Relaxed);
    }

    /// A change holds this session's writer lock (a train, or one waiting to run).
    fn is_changing(&self) -> bool {
        self.writer.try_lock().is_err()
    }
}

/// The store the handlers call. Cloning it is cheap.
#[derive(Clone)]
pub struct Store(Arc<Inner>);

struct Inner {
    sessions: memory::Sessions,
    keys: memory::Keys,
    /// `None` for `--database memory`.
    db: Option<sql::Db>,
    limits: Limits,
    /// This process, as the runner of the jobs it starts: a UUID made at each start.
    instance: String,
}

impl Store {
    /// Opens the store `location` names: creates or migrates the database's schema, and
    /// refuses one written by a newer version or a file that is not ours.
    pub async fn open(location: &Location, limits: Limits) -> StoreResult<Self> {
        let db = match location {
            Location::Memory => None,
            other => Some(sql::Db::open(other).await?),
        };
        let keys = memory::Keys::default();
        if let Some(db) = db.as_ref().filter(|db| db.is_sole_writer()) {
            // The only writer: the keys are read once and kept (written through), so a
            // request's key is found without a query.
            for info in db.keys().await? {
                keys.create(info.key)?;
            }
        }
        Ok(Self(Arc::new(Inner {
            sessions: memory::Sessions::default(),
            keys,
            db,
            limits,
            instance: Uuid::new_v4().hyphenated().to_string(),
        })))
    }

    /// This process's name as a job runner (new at every start).
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// Whether other processes share the database (PostgreSQL): then jobs may run elsewhere,
    /// and what this process caches of them may be behind.
    pub fn is_shared(&self) -> bool {
        self.0.db.as_ref().is_some_and(|db| !db.is_sole_writer())
    }

    /// Bytes the sessions in memory hold ([`Session::held_bytes`] summed over the map: every
    /// session with `memory`, the cached ones with a database).
    pub fn held_bytes(&self) -> u64 {
        self.0.sessions.held().load(Ordering::Relaxed)
    }

    /// Drops idle sessions from the cache (never with `memory`, where the map is the only
    /// copy) until about `bytes` are freed, least recently used first; a dropped session is
    /// read back from the database when a request names it. A session in use (a request or
    /// a change holds it) stays. Returns the bytes freed.
    pub fn shed(&self, bytes: u64) -> u64 {
        if self.0.db.is_none() {
            return 0;
        }
        self.0.sessions.shed(bytes)
    }

    /// Where the sessions are kept, for the start-up log line.
    pub fn describe(&self) -> String {
        match &self.0.db {
            None => "memory (nothing is kept after the process ends)".into(),
            Some(db) => db.describe(),
        }
    }

    pub fn ttl(&self) -> Option<Duration> {
        (self.0.limits.ttl_secs > 0).then(|| Duration::from_secs(self.0.limits.ttl_secs))
    }

    /// Whether the database answers (always, for `memory`); any failure is `Unavailable`.
    pub async fn ping(&self) -> StoreResult<()> {
        match &self.0.db {
            None => Ok(()),
            Some(db) => db.ping().await.map_err(|e| match e {
                StoreError::Unavailable(_) => e,
                other => StoreError::Unavailable(other.to_string()),
            }),
        }
    }

    /// Adds a session under a new id, unless the server (or `owner`) holds its limit.
    pub async fn insert(
        &self,
        session: Session,
        owner: Option<Owner<'_>>,
    ) -> StoreResult<Arc<Entry>> {
        let id = Uuid::new_v4().hyphenated().to_string();
        let now = now_millis();
        let created_at = now.div_euclid(1000);
        let touched = clock_second(now);
        let session = Arc::new(session);
        let max = self.0.limits.max_sessions;
        let owner_name = owner.and_then(|o| o.name).map(str::to_owned);
        let Some(db) = &self.0.db else {
            return self.0.sessions.insert_capped(max, owner, |seq| {
                let e = Entry::new(
                    id,
                    seq,
                    created_at,
                    owner_name,
                    touched,
                    session,
                    Stamp::default(),
                );
                // A new session has no job (a loaded one's is read when first asked for).
                e.job.set(None);
                e
            });
        };
        let row = sql::NewRow {
            id: &id,
            owner,
            created_at,
            touched,
            session: &session,
        };
        let seq = db.insert(row, max).await?;
        let stamp = Stamp {
            version: 1,
            ..Stamp::default()
        };
        let entry = Arc::new(Entry::new(
            id, seq, created_at, owner_name, touched, session, stamp,
        ));
        entry.job.set(None);
        Ok(self.0.sessions.insert_if_absent(entry))
    }

    /// The session with this id, marking it used (idle sessions expire). A session past
    /// its TTL is gone here even if the sweeper has not reached it yet.
    pub async fn get(&self, id: &str) -> StoreResult<Arc<Entry>> {
        self.get_visible(id, |_| true).await
    }

    /// As [`Store::get`], for a client that `sees` only the sessions of some owners: a
    /// session it does not see is `NotFound`, exactly as one that does not exist, and is
    /// left untouched (neither marked used nor expired).
    pub async fn get_visible(
        &self,
        id: &str,
        sees: impl Fn(Option<&str>) -> bool,
    ) -> StoreResult<Arc<Entry>> {
        let now = now_millis();
        let hidden = |entry: &Entry| !sees(entry.owner.as_deref());
        let Some(db) = &self.0.db else {
            let entry = self
                .0
                .sessions
                .get(id)
                .filter(|e| !hidden(e))
                .ok_or_else(|| StoreError::NotFound(id.into()))?;
            if self.is_idle(&entry, entry.touched(), now) {
                self.0.sessions.remove(id);
                return Err(StoreError::NotFound(id.into()));
            }
            entry.set_touched(clock_second(now));
            return Ok(entry);
        };
        let entry = if db.is_sole_writer() {
            // This process is the only writer: a cached entry is current.
            match self.0.sessions.get(id) {
                Some(e) => e,
                None => self.load(db, id, None).await?,
            }
        } else {
            let row = match db.row(id).await? {
                Some(row) => row,
                None => {
                    self.0.sessions.remove(id);
                    return Err(StoreError::NotFound(id.into()));
                }
            };
            let entry = self.current(db, id, row.stamp).await?;
            entry.set_touched(row.touched);
            entry
        };
        if hidden(&entry) {
            return Err(StoreError::NotFound(id.into()));
        }
        if self.is_idle(&entry, entry.touched(), now) && self.delete_idle(db, &entry, now).await? {
            return Err(StoreError::NotFound(id.into()));
        }
        let second = clock_second(now);
        if second > entry.touched() {
            db.touch(id, second).await?;
            entry.set_touched(second);
        }
        Ok(entry)
    }

    /// The cached entry if it is at `stamp`'s version, else one (re)loaded from the database.
    async fn current(&self, db: &sql::Db, id: &str, stamp: Stamp) -> StoreResult<Arc<Entry>> {
        match self.0.sessions.get(id) {
            Some(e) if e.stamped().1.version >= stamp.version => Ok(e),
            cached => self.load(db, id, cached).await,
        }
    }

    /// Reads a session from the database. With `cached`, only what changed since its state
    /// is read (the history from where it ends), and that entry is updated and returned.
    async fn load(
        &self,
        db: &sql::Db,
        id: &str,
        cached: Option<Arc<Entry>>,
    ) -> StoreResult<Arc<Entry>> {
        let deletes = self.0.sessions.deletes();
        let prev = cached.as_ref().map(|e| e.stamped());
        let loaded = db
            .load(id, prev)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        if let Some(entry) = cached {
            entry.publish_if_newer(
                Arc::new(loaded.session),
                loaded.stamp,
                self.0.sessions.held(),
            );
            entry.set_touched(loaded.touched);
            return Ok(entry);
        }
        let entry = Arc::new(Entry::new(
            id.to_owned(),
            loaded.seq,
            loaded.created_at,
            loaded.owner,
            loaded.touched,
            Arc::new(loaded.session),
            loaded.stamp,
        ));
        // A delete that ran while this was read must not see its session come back.
        Ok(self.0.sessions.cache_unless_deleted(entry, deletes))
    }

    /// Untouched for longer than the TTL (its clock second plus the TTL has passed), and
    /// not changing (a held writer lock: a train running or waiting).
    fn is_idle(&self, entry: &Entry, touched: i64, now: i64) -> bool {
        let ttl = self.0.limits.ttl_secs;
        ttl > 0
            && now > touched.saturating_add_unsigned(ttl).saturating_mul(1000)
            && !entry.is_changing()
    }

    /// The clock second before which a session is idle at `now`.
    fn idle_cutoff(&self, now: i64) -> i64 {
        let ttl_ms = i64::try_from(self.0.limits.ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        clock_second(now.saturating_sub(ttl_ms))
    }

    /// Deletes an idle session unless something (here or on another replica) is changing
    /// it; true if it went.
    async fn delete_idle(&self, db: &sql::Db, entry: &Entry, now: i64) -> StoreResult<bool> {
        if entry.is_changing() {
            return Ok(false);
        }
        self.0.sessions.note_delete();
        let gone = db.delete_idle(&entry.id, self.idle_cutoff(now)).await?;
        if gone {
            self.0.sessions.remove(&entry.id);
        }
        Ok(gone)
    }

    pub async fn remove(&self, id: &str) -> StoreResult<()> {
        let Some(db) = &self.0.db else {
            return self
                .0
                .sessions
                .remove(id)
                .map(drop)
                .ok_or_else(|| StoreError::NotFound(id.into()));
        };
        self.0.sessions.note_delete();
        let existed = db.delete(id).await?;
        self.0.sessions.remove(id);
        if existed {
            Ok(())
        } else {
            Err(StoreError::NotFound(id.into()))
        }
    }

    /// A page of sessions, newest first, and the total count; only `owner`'s when given.
    /// Touches nothing.
    pub async fn list(
        &self,
        offset: usize,
        limit: usize,
        owner: Option<&str>,
    ) -> StoreResult<(Vec<Arc<Entry>>, usize)> {
        let Some(db) = &self.0.db else {
            return Ok(self.0.sessions.page(offset, limit, owner));
        };
        let (rows, total) = db.page(offset, limit, owner).await?;
        let mut page = Vec::with_capacity(rows.len());
        for (id, row) in rows {
            let entry = if db.is_sole_writer() {
                match self.0.sessions.get(&id) {
                    Some(e) => Ok(e),
                    None => self.load(db, &id, None).await,
                }
            } else {
                self.current(db, &id, row.stamp).await
            };
            match entry {
                Ok(e) => {
                    e.set_touched(row.touched);
                    page.push(e);
                }
                // Deleted since the page was read: leave it out.
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((page, total))
    }

    /// Sessions held, or `owner`'s.
    pub async fn count(&self, owner: Option<&str>) -> StoreResult<usize> {
        match &self.0.db {
            None => Ok(self.0.sessions.count(owner)),
            Some(db) => db.count(owner).await,
        }
    }

    /// Waits (without a worker) for this session's turn to change it: changes on one
    /// session run one at a time, in arrival order, across replicas too. The state seen
    /// through the returned [`Change`] is the latest committed one.
    pub async fn lock(&self, entry: &Arc<Entry>) -> StoreResult<Change> {
        let turn = entry.writer.clone().lock_owned().await;
        let remote = match &self.0.db {
            Some(db) if !db.is_sole_writer() => {
                let lock = db.lock_session(&entry.id).await?;
                let row = db
                    .row(&entry.id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(entry.id.clone()))?;
                if entry.stamped().1.version < row.stamp.version {
                    self.load(db, &entry.id, Some(entry.clone())).await?;
                }
                Some(lock)
            }
            _ => None,
        };
        Ok(Change {
            store: self.clone(),
            entry: entry.clone(),
            _turn: turn,
            remote,
        })
    }

    /// Removes sessions idle for longer than the TTL; returns how many went. A session
    /// being changed (a train in progress, here or on another replica) is not idle.
    pub async fn expire_idle(&self) -> StoreResult<usize> {
        if self.0.limits.ttl_secs == 0 {
            return Ok(0);
        }
        let now = now_millis();
        let Some(db) = &self.0.db else {
            return Ok(self
                .0
                .sessions
                .retain(|e| !self.is_idle(e, e.touched(), now)));
        };
        let mut gone = 0;
        for id in db.idle_ids(self.idle_cutoff(now)).await? {
            if let Some(e) = self.0.sessions.get(&id) {
                // Used here since the database was asked (its clock write may be in flight).
                if !self.is_idle(&e, e.touched(), now) {
                    continue;
                }
                gone += usize::from(self.delete_idle(db, &e, now).await?);
            } else {
                self.0.sessions.note_delete();
                gone += usize::from(db.delete_idle(&id, self.idle_cutoff(now)).await?);
            }
        }
        Ok(gone)
    }

    /// When this entry expires if nobody touches it, as Unix seconds.
    pub fn expires_at(&self, entry: &Entry) -> Option<u64> {
        let ttl = self.0.limits.ttl_secs;
        (ttl > 0).then(|| {
            u64::try_from(entry.touched())
                .unwrap_or(0)
                .saturating_add(ttl)
        })
    }

    /// Stores a new key; [`StoreError::KeyExists`] if the name is taken.
    pub async fn create_key(&self, name: &str, hash: &str) -> StoreResult<KeyRecord> {
        let key = KeyRecord {
            name: name.to_owned(),
            hash: hash.to_owned(),
            created_at: now_millis().div_euclid(1000),
        };
        match &self.0.db {
            None => self.0.keys.create(key),
            Some(db) => {
                let key = db.create_key(key).await?;
                if db.is_sole_writer() {
                    self.0.keys.create(key.clone())?;
                }
                Ok(key)
            }
        }
    }

    /// Every key, by name, with the number of sessions it owns.
    pub async fn keys(&self) -> StoreResult<Vec<KeyInfo>> {
        match &self.0.db {
            None => Ok(self
                .0
                .keys
                .list()
                .into_iter()
                .map(|key| {
                    let sessions = self.0.sessions.count(Some(&key.name));
                    KeyInfo { key, sessions }
                })
                .collect()),
            Some(db) => db.keys().await,
        }
    }

    /// Revokes a key; false if there was none of that name. Its sessions stay.
    pub async fn delete_key(&self, name: &str) -> StoreResult<bool> {
        match &self.0.db {
            None => Ok(self.0.keys.delete(name)),
            Some(db) => {
                let existed = db.delete_key(name).await?;
                self.0.keys.delete(name);
                Ok(existed)
            }
        }
    }

    /// The key whose secret has this hash: from memory when this process is the database's
    /// only writer, else from the database (so a key made or revoked on another replica
    /// counts at once).
    pub async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        match &self.0.db {
            Some(db) if !db.is_sole_writer() => db.key_by_hash(hash).await,
            _ => Ok(self.0.keys.by_hash(hash)),
        }
    }

    /// Records `job` as the session's new job, unless one is queued or running: then
    /// [`StoreError::JobActive`] with that one. (One statement decides, so two replicas
    /// cannot both start one.)
    pub async fn submit_job(&self, entry: &Arc<Entry>, job: Job) -> StoreResult<Job> {
        let Some(db) = &self.0.db else {
            return entry.job.update(|slot| {
                let current = slot.get_or_insert(None);
                match current {
                    Some(j) if j.is_active() => Err(StoreError::JobActive(Box::new(j.clone()))),
                    _ => {
                        *current = Some(job.clone());
                        Ok(job)
                    }
                }
            });
        };
        // A job a dead replica left "running" is marked interrupted first, so it does not
        // hold the session's jobs forever.
        self.job(entry).await?;
        match db.submit_job(&entry.id, &job).await {
            Ok(()) => {
                entry.job.set(Some(job.clone()));
                Ok(job)
            }
            Err(StoreError::JobActive(_)) => match self.read_job(db, entry).await? {
                Some(current) => Err(StoreError::JobActive(Box::new(current))),
                // Finished in between: take the free place.
                None => Box::pin(self.submit_job(entry, job)).await,
            },
            Err(e) => Err(e),
        }
    }

    /// The session's current or last job. On PostgreSQL, a job whose runner (another replica)
    /// has gone silent is marked interrupted here, with what it had committed.
    pub async fn job(&self, entry: &Arc<Entry>) -> StoreResult<Option<Job>> {
        let Some(db) = &self.0.db else {
            return Ok(entry.job.get().flatten());
        };
        if db.is_sole_writer()
            && let Some(known) = entry.job.get()
        {
            return Ok(known);
        }
        let job = self.read_job(db, entry).await?;
        match job {
            Some(j) if self.is_shared() && j.is_stale(&self.0.instance, now_millis()) => {
                db.interrupt_job(&j.id, now_millis() - STALE_AFTER_MS)
                    .await?;
                tracing::warn!(session = %entry.id, job = %j.id, runner = %j.runner,
                    "a job's runner went silent; marked interrupted");
                self.read_job(db, entry).await
            }
            other => Ok(other),
        }
    }

    async fn read_job(&self, db: &sql::Db, entry: &Arc<Entry>) -> StoreResult<Option<Job>> {
        let job = db.job(&entry.id).await?;
        if db.is_sole_writer() {
            entry.job.set(job.clone());
        }
        Ok(job)
    }

    /// Writes a job's new state (started, finished) by its id; false if the session no longer
    /// holds it. A cancel asked meanwhile is kept.
    pub async fn save_job(&self, entry: &Arc<Entry>, job: &Job) -> StoreResult<bool> {
        let cached = entry.job.update(|slot| match slot {
            Some(Some(current)) if current.id == job.id => {
                let cancel = current.cancel_requested;
                *current = job.clone();
                current.cancel_requested |= cancel;
                true
            }
            _ => false,
        });
        match &self.0.db {
            None => Ok(cached),
            Some(db) => db.save_job(job).await,
        }
    }

    /// Asks the session's queued or running job to stop (its runner, on whichever replica,
    /// stops at its next epoch boundary); the job as it stands, or `None` if it has none.
    pub async fn cancel_job(&self, entry: &Arc<Entry>) -> StoreResult<Option<Job>> {
        entry.job.update(|slot| {
            if let Some(Some(j)) = slot
                && j.is_active()
            {
                j.cancel_requested = true;
            }
        });
        if let Some(db) = &self.0.db {
            db.cancel_job(&entry.id).await?;
        }
        self.job(entry).await
    }

    /// A runner's heartbeat (PostgreSQL): says it is alive and how far it got, and hears
    /// whether a cancel was asked. `None` if the job is gone (its session deleted, or marked
    /// interrupted by a replica that took it for dead).
    pub async fn beat_job(
        &self,
        entry: &Arc<Entry>,
        job_id: &str,
        live: (u64, Option<f64>),
    ) -> StoreResult<Option<bool>> {
        match &self.0.db {
            Some(db) if !db.is_sole_writer() => db.beat_job(job_id, now_millis(), live).await,
            _ => Ok(entry
                .job
                .get()
                .flatten()
                .and_then(|j| (j.id == job_id && j.is_active()).then_some(j.cancel_requested))),
        }
    }
}

/// A session's turn to change: see [`Store::lock`]. Each way to finish it commits to the
/// database, then publishes the new state and gives it back; dropping it changes nothing.
pub struct Change {
    store: Store,
    entry: Arc<Entry>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
    remote: Option<sql::SessionLock>,
}

impl Change {
    /// The state to change: the latest committed one.
    pub fn snapshot(&self) -> Arc<Session> {
        self.entry.snapshot()
    }

    /// Replaces the dataset; the weights and history stay.
    pub async fn set_dataset(mut self, dataset: Arc<StoredDataset>) -> StoreResult<Arc<Session>> {
        let mut s = (*self.snapshot()).clone();
        s.dataset = Some(dataset);
        self.commit(s, sql::Part::Dataset).await
    }

    /// New weights (the network's), and with them a new, empty history (which drops the
    /// losses of the session's last job from its result).
    pub async fn set_network(mut self, net: Network) -> StoreResult<Arc<Session>> {
        let mut s = (*self.snapshot()).clone();
        s.net = Arc::new(net);
        s.history = History::default();
        s.initial_loss = None;
        let s = self.commit(s, sql::Part::Weights).await?;
        self.entry.job.update(|slot| {
            if let Some(Some(j)) = slot {
                j.first_epoch = None;
            }
        });
        Ok(s)
    }

    /// A train's result: the trained network, the losses it appended, and the loss at its
    /// starting weights (which becomes `initial_loss` if the history had none). A background
    /// train's `job` word is written in the same transaction.
    pub async fn record_train(
        mut self,
        net: Network,
        losses: Vec<f64>,
        start_loss: Option<f64>,
        job: Option<JobCommit>,
    ) -> StoreResult<Arc<Session>> {
        self.trained(net, losses, start_loss, job).await
    }

    /// A checkpoint of a long train: commits what it has done so far as [`Self::record_train`]
    /// does (weights and appended losses, atomically, with the job's progress), and keeps
    /// the session's turn for the rest of the run.
    pub async fn checkpoint(
        &mut self,
        net: Network,
        losses: Vec<f64>,
        start_loss: Option<f64>,
        job: Option<JobCommit>,
    ) -> StoreResult<Arc<Session>> {
        self.trained(net, losses, start_loss, job).await
    }

    async fn trained(
        &mut self,
        net: Network,
        losses: Vec<f64>,
        start_loss: Option<f64>,
        job: Option<JobCommit>,
    ) -> StoreResult<Arc<Session>> {
        let before = self.snapshot();
        let mut s = (*before).clone();
        // `+ 0.0`: a loss of -0.0 is 0.0, as every loss is written (and as SQLite keeps it).
        s.initial_loss = before.initial_loss.or(start_loss.map(|l| l + 0.0));
        if losses.is_empty() && s.initial_loss == before.initial_loss {
            // Nothing was applied (diverged or stopped at once): nothing to write.
            return Ok(before);
        }
        s.net = Arc::new(net);
        let from = before.history.len();
        let losses = Arc::new(losses);
        let session = self
            .commit(
                s,
                sql::Part::Trained {
                    from,
                    losses,
                    job: job.clone(),
                },
            )
            .await?;
        if let Some(commit) = job {
            self.entry.job.update(|slot| {
                if let Some(Some(j)) = slot
                    && j.id == commit.id
                {
                    j.epochs_done = commit.epochs_done;
                    j.last_loss = commit.last_loss;
                    j.epochs_trained = session.history.len() as u64;
                    j.initial_loss = session.initial_loss;
                    j.final_loss = session.history.last();
                }
            });
        }
        Ok(session)
    }

    async fn commit(&mut self, mut session: Session, part: sql::Part) -> StoreResult<Arc<Session>> {
        let (_, stamp) = self.entry.stamped();
        let touched = clock_second(now_millis());
        let new_stamp = match &self.store.0.db {
            None => stamp,
            Some(db) => {
                let written = db
                    .commit(
                        self.remote.as_mut(),
                        &self.entry.id,
                        &session,
                        &part,
                        touched,
                        stamp.version,
                    )
                    .await?;
                // None: deleted meanwhile; the state is still published (to nobody) and answered.
                written.unwrap_or(stamp)
            }
        };
        if let sql::Part::Trained { losses, .. } = &part {
            // Only now, with the losses on disk, does the shared log grow; a long run's
            // losses (up to a million) are copied in on the blocking pool.
            let (history, losses) = (session.history.clone(), losses.clone());
            session.history = if losses.len() <= APPEND_INLINE_MAX {
                history.appended(&losses)
            } else {
                tokio::task::spawn_blocking(move || history.appended(&losses))
                    .await
                    .map_err(|e| StoreError::Internal(format!("appending losses failed: {e}")))?
            };
        }
        self.entry.set_touched(touched);
        let session = Arc::new(session);
        self.entry
            .publish(session.clone(), new_stamp, self.store.0.sessions.held());
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_and_print_back() {
        for (text, want) in [
            ("memory", Location::Memory),
            ("sqlite:backprop.db", Location::Sqlite("backprop.db".into())),
            (
                "sqlite:///var/lib/b.db",
                Location::Sqlite("/var/lib/b.db".into()),
            ),
            (
                "postgres://u:secret@db/backprop",
                Location::Postgres("postgres://u:secret@db/backprop".into()),
            ),
        ] {
            let got: Location = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            let again: Location = got.to_string().parse().unwrap();
            assert_eq!(again, want, "{text} printed as {got}");
        }
        let pg: Location = "postgres://u:secret@db/backprop".parse().unwrap();
        assert!(!format!("{pg:?}").contains("secret"), "{pg:?}");
        for bad in ["", "sqlite:", "mysql://x", "backprop.db"] {
            let e = bad.parse::<Location>().unwrap_err();
            assert!(e.contains("sqlite:PATH"), "{bad:?}: {e}");
        }
    }

    fn a_session() -> Session {
        let init = Init::NumpyRand { seed: 0 };
        let net = Network::new(crate::nn::NetConfig::new(vec![4, 3]), &init).unwrap();
        Session {
            net: Arc::new(net),
            init: (&init).into(),
            dataset: None,
            history: History::default(),
            initial_loss: None,
        }
    }

    /// Keys at the store level (issue 9 builds the routes on this), in memory and in SQLite,
    /// where they outlive the process; PostgreSQL's are in tests/replicas.rs.
    #[tokio::test]
    async fn keys_own_sessions_and_are_kept_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_sessions: 10,
            ttl_secs: 0,
        };
        for location in [
            Location::Memory,
            Location::Sqlite(dir.path().join("keys.db")),
        ] {
            let store = Store::open(&location, limits.clone()).await.unwrap();
            let made = store.create_key("alice", "h-a").await.unwrap();
            assert_eq!((made.name.as_str(), made.hash.as_str()), ("alice", "h-a"));
            assert!(matches!(
                store.create_key("alice", "h-x").await,
                Err(StoreError::KeyExists(name)) if name == "alice"
            ));
            store.create_key("bob", "h-b").await.unwrap();
            let alice = Owner {
                name: Some("alice"),
                max_sessions: 2,
            };
            let s = store.insert(a_session(), Some(alice)).await.unwrap();
            store.insert(a_session(), Some(alice)).await.unwrap();
            assert!(matches!(
                store.insert(a_session(), Some(alice)).await,
                Err(StoreError::TooManySessions { limit: 2, quota: Quota::Key(Some(o)) })
                    if o == "alice"
            ));
            // The admin's sessions (no owner) have a limit of their own.
            let admin = Owner {
                name: None,
                max_sessions: 1,
            };
            store.insert(a_session(), Some(admin)).await.unwrap();
            assert!(matches!(
                store.insert(a_session(), Some(admin)).await,
                Err(StoreError::TooManySessions {
                    limit: 1,
                    quota: Quota::Key(None)
                })
            ));
            assert_eq!(store.count(Some("alice")).await.unwrap(), 2, "{location}");
            assert_eq!(store.count(None).await.unwrap(), 3, "{location}");
            let one = u64::try_from(held_bytes(12, 0, 0)).unwrap();
            assert_eq!(store.held_bytes(), 3 * one, "{location}");
            let (page, total) = store.list(0, 10, Some("alice")).await.unwrap();
            assert_eq!((page.len(), total), (2, 2));
            assert!(page.iter().all(|e| e.owner.as_deref() == Some("alice")));

            let kept = if location == Location::Memory {
                store
            } else {
                drop(store);
                Store::open(&location, limits.clone()).await.unwrap()
            };
            let keys: Vec<(String, usize)> = kept
                .keys()
                .await
                .unwrap()
                .into_iter()
                .map(|k| (k.key.name, k.sessions))
                .collect();
            assert_eq!(keys, [("alice".into(), 2), ("bob".into(), 0)], "{location}");
            let found = kept.key_by_hash("h-b").await.unwrap().unwrap();
            assert_eq!(found.name, "bob");
            assert!(kept.delete_key("alice").await.unwrap());
            assert!(!kept.delete_key("alice").await.unwrap());
            assert_eq!(kept.key_by_hash("h-a").await.unwrap(), None);
            // Revoking a key leaves its sessions.
            assert_eq!(
                kept.get(&s.id).await.unwrap().owner.as_deref(),
                Some("alice")
            );
            // Another key's session is not there for a client that does not see it.
            assert!(matches!(
                kept.get_visible(&s.id, |owner| owner == Some("bob")).await,
                Err(StoreError::NotFound(_))
            ));
        }
    }

    /// The store's count of what it holds follows every insert, change and removal, and a
    /// database-backed store can drop idle sessions from memory and read them back.
    #[tokio::test]
    async fn held_bytes_follow_the_sessions_and_a_database_store_sheds_idle_ones() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_sessions: 10,
            ttl_secs: 0,
        };
        for location in [
            Location::Memory,
            Location::Sqlite(dir.path().join("held.db")),
        ] {
            let store = Store::open(&location, limits.clone()).await.unwrap();
            assert_eq!(store.held_bytes(), 0);
            let a = store.insert(a_session(), None).await.unwrap();
            let b = store.insert(a_session(), None).await.unwrap();
            let one = a.snapshot().held_bytes();
            assert_eq!(store.held_bytes(), 2 * one);
            let trained = store
                .lock(&a)
                .await
                .unwrap()
                .record_train((*a.snapshot().net).clone(), vec![1.0; 100], Some(2.0), None)
                .await
                .unwrap();
            assert_eq!(
                trained.held_bytes(),
                one + 1600,
                "a history of 100 counts twice"
            );
            assert_eq!(store.held_bytes(), 2 * one + 1600);
            store.remove(&b.id).await.unwrap();
            assert_eq!(store.held_bytes(), one + 1600);
            let (id, shared) = (a.id.clone(), a.clone());
            let in_use = store.shed(u64::MAX);
            assert_eq!(in_use, 0, "{location}: a session in use is never shed");
            drop((a, shared));
            let shed = store.shed(1);
            if location == Location::Memory {
                assert_eq!(shed, 0, "the memory store's map is its only copy");
                continue;
            }
            assert_eq!(shed, one + 1600);
            assert_eq!(store.held_bytes(), 0);
            let back = store.get(&id).await.unwrap();
            assert_eq!(
                back.snapshot().history.len(),
                100,
                "read back from the database"
            );
            assert_eq!(store.held_bytes(), one + 1600);
        }
    }

    /// A long run's losses are appended on the blocking pool, a short one's inline: the
    /// history reads the same either way, and a snapshot from before keeps its prefix.
    #[tokio::test]
    async fn long_and_short_trains_append_the_same_way() {
        let limits = Limits {
            max_sessions: 10,
            ttl_secs: 0,
        };
        let store = Store::open(&Location::Memory, limits).await.unwrap();
        let entry = store.insert(a_session(), None).await.unwrap();
        let net = (*entry.snapshot().net).clone();
        let long: Vec<f64> = (0..APPEND_INLINE_MAX + 5).map(|k| k as f64).collect();
        let change = store.lock(&entry).await.unwrap();
        let s = change
            .record_train(net.clone(), long.clone(), Some(-1.0), None)
            .await
            .unwrap();
        assert_eq!(
            (s.history.len(), s.history.last()),
            (long.len(), long.last().copied())
        );
        let before = entry.snapshot();
        let change = store.lock(&entry).await.unwrap();
        let s = change
            .record_train(net, vec![0.5], None, None)
            .await
            .unwrap();
        assert_eq!(s.history.len(), long.len() + 1);
        assert_eq!(
            s.history.page(long.len() - 1, usize::MAX),
            vec![long[long.len() - 1], 0.5]
        );
        assert_eq!(before.history.to_vec(), long);
        assert_eq!(s.initial_loss, Some(-1.0));
    }

    #[test]
    fn the_clock_second_rounds_up() {
        assert_eq!(clock_second(5000), 5);
        assert_eq!(clock_second(5001), 6);
        assert_eq!(clock_second(5999), 6);
        assert_eq!(clock_second(-1), 0);
    }
}
