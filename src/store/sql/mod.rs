//! Sessions in SQLite (one process per file) or PostgreSQL (several replicas), through sqlx.
//!
//! SQLite: WAL mode with `synchronous = FULL`, so a commit is on disk when it returns. All
//! writes go through one writer task that commits whatever has queued up meanwhile as one
//! transaction, sent as one query (group commit: one fsync and one round trip to sqlx's
//! SQLite thread for a batch of concurrent requests; see `writes.rs`). Reads (a session not
//! yet in the cache, a listing) use a small pool of read-only connections. The process
//! holds an exclusive lock on the file: this process is its only writer, so its cache is
//! the truth and is never re-validated.
//!
//! PostgreSQL: every change is a transaction of its own (PostgreSQL groups concurrent
//! commits itself). A replica's cached copy of a session is checked against the row's
//! `version` on each request and re-read (only what changed) when another replica moved
//! it on. A session's changes take turns across replicas under its advisory lock, held on a
//! dedicated connection for the change's duration: a replica that dies drops its
//! connections, and PostgreSQL releases the lock.
//!
//! The schema is migrated at start by `sqlx::migrate!` (`migrations/sqlite/`,
//! `migrations/postgres/`); a database with a migration this binary does not know (a
//! newer version wrote it), or one that is not ours, is refused with words saying so.

mod codec;
mod queries;
mod writes;

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Postgres};
use tokio::sync::{mpsc, oneshot};

use self::codec::DatasetRow;
use super::{
    History, Job, JobCommit, KeyInfo, KeyRecord, Location, Owner, Session, Stamp, StoreError,
    StoreResult,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// `PRAGMA application_id` of our SQLite files ("BPSV"): a file with another is not ours.
const APPLICATION_ID: i64 = 0x4250_5356;

/// How long a request waits for a connection before it answers 503 `unavailable` (while
/// PostgreSQL restarts, sqlx retries refused connections until then).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `/readyz` waits for the database's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a starting replica waits for PostgreSQL to accept connections.
const START_WAIT: Duration = Duration::from_secs(30);

/// PostgreSQL connections per replica: a change holds one for its whole turn (its advisory
/// lock lives on it), the rest serve short queries. Two replicas stay well under
/// PostgreSQL's default `max_connections` of 100.
const PG_CONNECTIONS: u32 = 32;

/// The advisory lock (PostgreSQL) that creates take, so that two replicas cannot both
/// count 9999 sessions and both add one. An arbitrary constant: "backprop" in ASCII.
const CREATE_LOCK: i64 = 0x6261_636b_7072_6f70;

/// Most changes the SQLite writer commits in one transaction.
const MAX_BATCH: usize = 64;

/// Sessions the sweeper deletes per pass at most (the next pass takes the rest).
const SWEEP_BATCH: i64 = 1000;

/// Encoding or decoding more numbers than this runs on the blocking pool.
const INLINE_NUMBERS: usize = 1 << 18;

/// A new session's row.
pub(super) struct NewRow<'a> {
    pub id: &'a str,
    pub owner: Option<Owner<'a>>,
    pub created_at: i64,
    pub touched: i64,
    pub session: &'a Arc<Session>,
}

/// What a change wrote, besides the session's version and clock.
pub(super) enum Part {
    Dataset,
    /// New weights, and a new, empty history.
    Weights,
    /// A train: new weights, `losses` appended to the history at `from`, `initial_loss`,
    /// and a background train's progress.
    Trained {
        from: usize,
        /// Shared, so the encoding can run on the blocking pool without a copy.
        losses: Arc<Vec<f64>>,
        job: Option<JobCommit>,
    },
}

/// A job's progress as a train's commit writes it, with the session's numbers after it.
pub(super) struct JobCommitRow {
    pub id: String,
    pub epochs_done: i64,
    pub last_loss: Option<f64>,
    pub epochs_trained: i64,
    pub initial_loss: Option<f64>,
    pub final_loss: Option<f64>,
}

/// A session's row as far as a replica needs it to tell whether its copy is current.
#[derive(Debug, Clone, Copy)]
pub(super) struct RowState {
    pub stamp: Stamp,
    pub touched: i64,
}

/// A session read from the database.
pub(super) struct Loaded {
    pub seq: i64,
    pub created_at: i64,
    pub owner: Option<String>,
    pub touched: i64,
    pub stamp: Stamp,
    pub session: Session,
}

/// What a cached copy already holds: a read skips the dataset if it is the same, and reads
/// the history only from where the copy's ends.
#[derive(Debug, Clone, Copy)]
struct Since {
    dataset_gen: i64,
    history_gen: i64,
    history_len: i64,
}

enum DatasetRead {
    Unchanged,
    None,
    Row(DatasetRow),
}

/// A session's rows as read, before decoding.
struct RawSession {
    seq: i64,
    owner: Option<String>,
    created_at: i64,
    touched: i64,
    stamp: Stamp,
    layers: String,
    activation: String,
    learning_rate: f64,
    grad_reduction: String,
    bias: bool,
    init_method: String,
    init_seed: Option<i64>,
    epochs: i64,
    initial_loss: Option<f64>,
    params: Vec<u8>,
    dataset: DatasetRead,
    history_from: i64,
    chunks: Vec<(i64, Vec<u8>)>,
}

/// A new session, encoded.
struct Insert {
    id: String,
    owner: Option<String>,
    owner_max: Option<i64>,
    max: i64,
    created_at: i64,
    touched: i64,
    settings: codec::Settings,
    params: Vec<u8>,
    dataset: Option<DatasetRow>,
    history: Option<Vec<u8>>,
    epochs: i64,
    initial_loss: Option<f64>,
}

/// One write, as the writer (or a PostgreSQL transaction) applies it.
enum Op {
    Insert(Box<Insert>),
    Delete {
        id: String,
    },
    /// Deletes the session if its clock is still before `cutoff`.
    DeleteIdle {
        id: String,
        cutoff: i64,
    },
    Touch {
        id: String,
        touched: i64,
    },
    /// A change to the session at `version` (the state its writer holds); a session at
    /// another version is left as it is (see `writes.rs`).
    Dataset {
        id: String,
        touched: i64,
        version: i64,
        dataset: DatasetRow,
    },
    Weights {
        id: String,
        touched: i64,
        version: i64,
        params: Vec<u8>,
    },
    Trained {
        id: String,
        touched: i64,
        version: i64,
        /// `None` when no update was applied (only `initial_loss` is new).
        params: Option<Vec<u8>>,
        first_epoch: i64,
        losses: Vec<u8>,
        epochs: i64,
        initial_loss: Option<f64>,
        job: Option<JobCommitRow>,
    },
    CreateKey(KeyRecord),
    DeleteKey(String),
    /// A new job for the session `id`, unless it has one queued or running.
    SubmitJob {
        id: String,
        job: Box<Job>,
    },
    /// A job's new state, by the job's id (its cancel flag is left as it is).
    SaveJob(Box<Job>),
    /// Asks the session's queued or running job to stop.
    CancelJob {
        id: String,
    },
    /// Marks a job interrupted if it is unfinished and its heartbeat is before `cutoff`.
    InterruptJob {
        job: String,
        cutoff: i64,
    },
}

/// What a write did.
enum Done {
    Seq(i64),
    Existed(bool),
    /// The new stamp; `None` if the session is gone.
    Stamp(Option<Stamp>),
    /// Not done, and nothing written: a limit or a taken name.
    Refused(StoreError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Self::Unavailable(e.to_string())
        } else {
            Self::Internal(format!("database: {e}"))
        }
    }
}

/// Whether an error says the database is out of reach (worth a retry) rather than a bug.
fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite's primary result codes: BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN.
                let primary = code.parse::<i64>().unwrap_or(0) & 0xff;
                matches!(primary, 5 | 6 | 8 | 10 | 13 | 14)
            } else {
                // PostgreSQL: connection exceptions, insufficient resources, operator
                // intervention (shutting down, cannot connect now).
                code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
            }
        }
        _ => false,
    }
}

/// The URL without its password, for logs and messages.
pub(super) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.find("password=") {
        Some(at) => {
            let value_end = tail[at..].find('&').map_or(tail.len(), |e| at + e);
            format!("{}password=***{}", &tail[..at], &tail[value_end..])
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A session's advisory-lock key: the first 64 bits of its UUID.
fn lock_key(id: &str) -> i64 {
    uuid::Uuid::parse_str(id).map_or_else(
        |_| {
            id.bytes()
                .fold(0i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)))
        },
        |u| u.as_u64_pair().0 as i64,
    )
}

/// Runs `f` inline when it handles few numbers, else on the blocking pool.
async fn off_runtime<T: Send + 'static>(
    numbers: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> StoreResult<T> {
    if numbers <= INLINE_NUMBERS {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Internal(format!("encoding failed: {e}")))
}

fn param_count(s: &Session) -> usize {
    usize::try_from(s.net.config().parameter_count()).unwrap_or(usize::MAX)
}

pub(super) struct Db {
    backend: Backend,
    what: String,
}

enum Backend {
    Sqlite(Lite),
    Postgres(PgPool),
}

struct Lite {
    writer: mpsc::Sender<Write>,
    readers: SqlitePool,
    /// Held open for the process's life: the exclusive lock on the file.
    _lock: File,
}

/// A change's turn on one session across replicas: its advisory lock, on a connection of
/// its own. Dropping it unlocks and returns the connection (or closes it if that fails,
/// which ends the lock just the same).
pub(super) struct SessionLock {
    conn: Option<PoolConnection<Postgres>>,
    key: i64,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let key = self.key;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(key)
                        .execute(&mut *conn)
                        .await;
                    if unlocked.is_err() {
                        conn.close_on_drop();
                    }
                });
            }
            Err(_) => conn.close_on_drop(),
        }
    }
}

struct Write {
    op: Op,
    done: oneshot::Sender<StoreResult<Done>>,
}

impl Db {
    pub async fn open(location: &Location) -> StoreResult<Self> {
        match location {
            Location::Memory => Err(StoreError::Internal("memory has no database".into())),
            Location::Sqlite(path) => open_sqlite(path).await,
            Location::Postgres(url) => open_postgres(url).await,
        }
    }

    pub fn describe(&self) -> String {
        self.what.clone()
    }

    /// SQLite: this process is the database's only writer, so its cache is the truth.
    pub fn is_sole_writer(&self) -> bool {
        matches!(self.backend, Backend::Sqlite(_))
    }

    pub async fn ping(&self) -> StoreResult<()> {
        tokio::time::timeout(PING_TIMEOUT, self.ping_now())
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "no answer within {PING_TIMEOUT:?}"
                )))
            })
    }

    async fn ping_now(&self) -> StoreResult<()> {
        match &self.backend {
            Backend::Sqlite(lite) => {
                if lite.writer.is_closed() {
                    return Err(StoreError::Unavailable("the SQLite writer stopped".into()));
                }
                sqlx::query("SELECT count(*) FROM backprop_meta")
                    .execute(&lite.readers)
                    .await?;
            }
            Backend::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Runs one write: through the SQLite writer, or as a PostgreSQL transaction (on the
    /// session's locked connection when the change holds one).
    async fn write(&self, op: Op, lock: Option<&mut SessionLock>) -> StoreResult<Done> {
        let done = match &self.backend {
            Backend::Sqlite(lite) => {
                let (done, answer) = oneshot::channel();
                lite.writer
                    .send(Write { op, done })
                    .await
                    .map_err(|_| StoreError::Unavailable("the SQLite writer stopped".into()))?;
                answer
                    .await
                    .map_err(|_| StoreError::Unavailable("the SQLite writer stopped".into()))??
            }
            Backend::Postgres(pool) => {
                let mut own;
                let conn: &mut sqlx::PgConnection = match lock.and_then(|l| l.conn.as_mut()) {
                    Some(c) => c,
                    None => {
                        own = pool.acquire().await?;
                        &mut own
                    }
                };
                let mut tx = conn.begin().await?;
                if matches!(op, Op::Insert(_)) {
                    // Creates take turns across replicas, so the count they check is exact.
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(CREATE_LOCK)
                        .execute(&mut *tx)
                        .await?;
                }
                let reports = queries::postgres::run(&mut tx, &writes::statements(&op, 0)).await?;
                let done = match writes::verdict(&op, reports.first().copied()) {
                    writes::Verdict::Done(done) => done,
                    writes::Verdict::Ask => queries::postgres::why(&mut tx, &op).await?,
                };
                // A change that reports nothing wrote nothing: committing is as good as not.
                tx.commit().await?;
                done
            }
        };
        match done {
            Done::Refused(e) => Err(e),
            other => Ok(other),
        }
    }

    pub async fn insert(&self, row: NewRow<'_>, max: usize) -> StoreResult<i64> {
        let session = row.session.clone();
        let numbers = param_count(&session)
            + session.history.len()
            + session
                .dataset
                .as_ref()
                .map_or(0, |d| d.data.x().len() + d.data.y().len());
        let (settings, params, dataset, history) = off_runtime(numbers, move || {
            let history = (!session.history.is_empty())
                .then(|| session.history.with(|h| codec::blob(h, h.len())));
            (
                codec::settings(&session),
                codec::params_blob(session.net.params()),
                session.dataset.as_deref().map(codec::dataset_row),
                history,
            )
        })
        .await?;
        let s = row.session;
        let op = Op::Insert(Box::new(Insert {
            id: row.id.to_owned(),
            owner: row.owner.and_then(|o| o.name).map(str::to_owned),
            owner_max: row
                .owner
                .map(|o| i64::try_from(o.max_sessions).unwrap_or(i64::MAX)),
            max: i64::try_from(max).unwrap_or(i64::MAX),
            created_at: row.created_at,
            touched: row.touched,
            settings,
            params,
            dataset,
            history,
            epochs: i64::try_from(s.history.len()).unwrap_or(i64::MAX),
            initial_loss: s.initial_loss,
        }));
        match self.write(op, None).await? {
            Done::Seq(seq) => Ok(seq),
            _ => Err(StoreError::Internal("an insert wrote no row".into())),
        }
    }

    fn existed(done: Done) -> bool {
        matches!(done, Done::Existed(true))
    }

    pub async fn delete(&self, id: &str) -> StoreResult<bool> {
        let op = Op::Delete { id: id.to_owned() };
        Ok(Self::existed(self.write(op, None).await?))
    }

    /// Deletes the session if its clock is before `cutoff` and no change holds it (on
    /// PostgreSQL: its advisory lock is free, so no replica is training it).
    pub async fn delete_idle(&self, id: &str, cutoff: i64) -> StoreResult<bool> {
        let op = Op::DeleteIdle {
            id: id.to_owned(),
            cutoff,
        };
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(Self::existed(self.write(op, None).await?));
        };
        let key = lock_key(id);
        let mut conn = pool.acquire().await?;
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !free {
            return Ok(false);
        }
        let mut lock = SessionLock {
            conn: Some(conn),
            key,
        };
        Ok(Self::existed(self.write(op, Some(&mut lock)).await?))
    }

    pub async fn touch(&self, id: &str, touched: i64) -> StoreResult<()> {
        let op = Op::Touch {
            id: id.to_owned(),
            touched,
        };
        self.write(op, None).await.map(drop)
    }

    pub async fn row(&self, id: &str) -> StoreResult<Option<RowState>> {
        Ok(match &self.backend {
            Backend::Sqlite(lite) => {
                queries::sqlite::row(&mut *lite.readers.acquire().await?, id).await?
            }
            Backend::Postgres(pool) => {
                queries::postgres::row(&mut *pool.acquire().await?, id).await?
            }
        })
    }

    /// Reads a session; with `cached`, only what changed since that copy.
    pub async fn load(
        &self,
        id: &str,
        cached: Option<(Arc<Session>, Stamp)>,
    ) -> StoreResult<Option<Loaded>> {
        let since = cached.as_ref().map(|(s, st)| Since {
            dataset_gen: st.dataset_gen,
            history_gen: st.history_gen,
            history_len: i64::try_from(s.history.len()).unwrap_or(i64::MAX),
        });
        let raw = match &self.backend {
            Backend::Sqlite(lite) => {
                let mut tx = lite.readers.begin().await?;
                let raw = queries::sqlite::load(&mut tx, id, since).await?;
                tx.commit().await?;
                raw
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let raw = queries::postgres::load(&mut tx, id, since).await?;
                tx.commit().await?;
                raw
            }
        };
        let Some(raw) = raw else { return Ok(None) };
        let bytes = raw.params.len()
            + raw.chunks.iter().map(|(_, c)| c.len()).sum::<usize>()
            + match &raw.dataset {
                DatasetRead::Row(d) => {
                    d.x.as_ref().map_or(0, Vec::len) + d.y.as_ref().map_or(0, Vec::len)
                }
                _ => 0,
            };
        let id = id.to_owned();
        off_runtime(bytes / 8, move || decode(&id, raw, cached.map(|(s, _)| s)))
            .await?
            .map(Some)
    }

    /// A page of sessions (ids and states), newest first, and the total count.
    pub async fn page(
        &self,
        offset: usize,
        limit: usize,
        owner: Option<&str>,
    ) -> StoreResult<(Vec<(String, RowState)>, usize)> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (rows, total) = match &self.backend {
            Backend::Sqlite(lite) => {
                let mut tx = lite.readers.begin().await?;
                let rows = queries::sqlite::page(&mut tx, offset, limit, owner).await?;
                let total = queries::sqlite::count(&mut tx, owner).await?;
                tx.commit().await?;
                (rows, total)
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let rows = queries::postgres::page(&mut tx, offset, limit, owner).await?;
                let total = queries::postgres::count(&mut tx, owner).await?;
                tx.commit().await?;
                (rows, total)
            }
        };
        Ok((rows, usize::try_from(total).unwrap_or(0)))
    }

    pub async fn count(&self, owner: Option<&str>) -> StoreResult<usize> {
        let n = match &self.backend {
            Backend::Sqlite(lite) => {
                queries::sqlite::count(&mut *lite.readers.acquire().await?, owner).await?
            }
            Backend::Postgres(pool) => {
                queries::postgres::count(&mut *pool.acquire().await?, owner).await?
            }
        };
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Sessions whose clock is before `cutoff`.
    pub async fn idle_ids(&self, cutoff: i64) -> StoreResult<Vec<String>> {
        Ok(match &self.backend {
            Backend::Sqlite(lite) => {
                queries::sqlite::idle_ids(&mut *lite.readers.acquire().await?, cutoff, SWEEP_BATCH)
                    .await?
            }
            Backend::Postgres(pool) => {
                queries::postgres::idle_ids(&mut *pool.acquire().await?, cutoff, SWEEP_BATCH)
                    .await?
            }
        })
    }

    /// Waits for the session's advisory lock (PostgreSQL; waiters are served in order).
    pub async fn lock_session(&self, id: &str) -> StoreResult<SessionLock> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Internal(
                "SQLite sessions take no advisory lock".into(),
            ));
        };
        let key = lock_key(id);
        let mut conn = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut *conn)
            .await?;
        Ok(SessionLock {
            conn: Some(conn),
            key,
        })
    }

    /// Writes a change to `session` (`part` says which); the new stamp, or `None` if the
    /// session was deleted meanwhile.
    pub async fn commit(
        &self,
        lock: Option<&mut SessionLock>,
        id: &str,
        session: &Session,
        part: &Part,
        touched: i64,
        version: i64,
    ) -> StoreResult<Option<Stamp>> {
        let id = id.to_owned();
        let op = match part {
            Part::Dataset => {
                let Some(d) = session.dataset.clone() else {
                    return Err(StoreError::Internal(
                        "a dataset change without a dataset".into(),
                    ));
                };
                let n = d.data.x().len() + d.data.y().len();
                let dataset = off_runtime(n, move || codec::dataset_row(&d)).await?;
                Op::Dataset {
                    id,
                    touched,
                    version,
                    dataset,
                }
            }
            Part::Weights => {
                let net = session.net.clone();
                let params = off_runtime(param_count(session), move || {
                    codec::params_blob(net.params())
                })
                .await?;
                Op::Weights {
                    id,
                    touched,
                    version,
                    params,
                }
            }
            Part::Trained { from, losses, job } => {
                let net = session.net.clone();
                let (trained, n) = (!losses.is_empty(), losses.len());
                // Up to a million losses and the weights: encoded on the blocking pool when big.
                let shared = losses.clone();
                let (params, blob) = off_runtime(param_count(session) + n, move || {
                    let params = trained.then(|| codec::params_blob(net.params()));
                    (params, codec::blob(shared.iter(), shared.len()))
                })
                .await?;
                Op::Trained {
                    id,
                    touched,
                    version,
                    params,
                    first_epoch: i64::try_from(*from).unwrap_or(i64::MAX),
                    losses: blob,
                    epochs: i64::try_from(from + n).unwrap_or(i64::MAX),
                    initial_loss: session.initial_loss,
                    job: job.as_ref().map(|j| JobCommitRow {
                        id: j.id.clone(),
                        epochs_done: i64::try_from(j.epochs_done).unwrap_or(i64::MAX),
                        last_loss: j.last_loss,
                        epochs_trained: i64::try_from(from + n).unwrap_or(i64::MAX),
                        initial_loss: session.initial_loss,
                        final_loss: losses.last().copied().or(session.history.last()),
                    }),
                }
            }
        };
        match self.write(op, lock).await? {
            Done::Stamp(stamp) => Ok(stamp),
            _ => Err(StoreError::Internal("a change wrote no stamp".into())),
        }
    }

    pub async fn create_key(&self, key: KeyRecord) -> StoreResult<KeyRecord> {
        self.write(Op::CreateKey(key.clone()), None).await?;
        Ok(key)
    }

    pub async fn keys(&self) -> StoreResult<Vec<KeyInfo>> {
        Ok(match &self.backend {
            Backend::Sqlite(lite) => {
                queries::sqlite::keys(&mut *lite.readers.acquire().await?).await?
            }
            Backend::Postgres(pool) => queries::postgres::keys(&mut *pool.acquire().await?).await?,
        })
    }

    pub async fn delete_key(&self, name: &str) -> StoreResult<bool> {
        Ok(Self::existed(
            self.write(Op::DeleteKey(name.to_owned()), None).await?,
        ))
    }

    /// Records a new job for the session `id`: [`StoreError::JobActive`] if it has one queued
    /// or running, [`StoreError::NotFound`] if the session is gone.
    pub async fn submit_job(&self, id: &str, job: &Job) -> StoreResult<()> {
        let op = Op::SubmitJob {
            id: id.to_owned(),
            job: Box::new(job.clone()),
        };
        self.write(op, None).await.map(drop)
    }

    /// The session's current or last job.
    pub async fn job(&self, id: &str) -> StoreResult<Option<Job>> {
        Ok(match &self.backend {
            Backend::Sqlite(lite) => {
                queries::sqlite::job(&mut *lite.readers.acquire().await?, id).await?
            }
            Backend::Postgres(pool) => {
                queries::postgres::job(&mut *pool.acquire().await?, id).await?
            }
        })
    }

    /// Writes a job's state by its id; false if no such job is stored.
    pub async fn save_job(&self, job: &Job) -> StoreResult<bool> {
        Ok(Self::existed(
            self.write(Op::SaveJob(Box::new(job.clone())), None).await?,
        ))
    }

    pub async fn cancel_job(&self, id: &str) -> StoreResult<bool> {
        let op = Op::CancelJob { id: id.to_owned() };
        Ok(Self::existed(self.write(op, None).await?))
    }

    /// Marks the job interrupted if it is unfinished and has not beaten since `cutoff`.
    pub async fn interrupt_job(&self, job: &str, cutoff: i64) -> StoreResult<bool> {
        let op = Op::InterruptJob {
            job: job.to_owned(),
            cutoff,
        };
        Ok(Self::existed(self.write(op, None).await?))
    }

    /// A runner's heartbeat (PostgreSQL): its progress in, the cancel flag out; `None` if the
    /// job is no longer an unfinished one.
    pub async fn beat_job(
        &self,
        job: &str,
        now: i64,
        (epochs, loss): (u64, Option<f64>),
    ) -> StoreResult<Option<bool>> {
        let Backend::Postgres(pool) = &self.backend else {
            return Err(StoreError::Internal("only PostgreSQL jobs beat".into()));
        };
        Ok(sqlx::query_scalar(
            "UPDATE jobs SET heartbeat_at = $2, live_epochs = $3, live_loss = $4 \
             WHERE id = $1 AND state <> 'done' RETURNING cancel_requested",
        )
        .bind(job)
        .bind(now)
        .bind(i64::try_from(epochs).unwrap_or(i64::MAX))
        .bind(loss)
        .fetch_optional(pool)
        .await?)
    }

    pub async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<KeyRecord>> {
        Ok(match &self.backend {
            Backend::Sqlite(lite) => {
                queries::sqlite::key_by_hash(&mut *lite.readers.acquire().await?, hash).await?
            }
            Backend::Postgres(pool) => {
                queries::postgres::key_by_hash(&mut *pool.acquire().await?, hash).await?
            }
        })
    }
}

/// A session from its rows (and, for what did not change, from the cached copy).
fn decode(id: &str, raw: RawSession, cached: Option<Arc<Session>>) -> StoreResult<Loaded> {
    let damaged =
        |what: String| StoreError::Internal(format!("session {id} in the database: {what}"));
    let config = codec::net_config(
        &raw.layers,
        &raw.activation,
        raw.learning_rate,
        &raw.grad_reduction,
        raw.bias,
    )?;
    let (n_in, n_out) = (config.n_in(), config.n_out());
    let net = codec::network(config, &raw.params)?;
    let dataset = match raw.dataset {
        DatasetRead::Unchanged => cached.as_ref().and_then(|s| s.dataset.clone()),
        DatasetRead::None => None,
        DatasetRead::Row(row) => Some(codec::dataset(row, n_in, n_out)?),
    };
    let mut losses = Vec::new();
    let mut next = raw.history_from;
    for (first, chunk) in &raw.chunks {
        if *first != next {
            return Err(damaged(format!("its history has a gap at epoch {next}")));
        }
        let part = codec::floats(chunk, "history")?;
        next += i64::try_from(part.len()).unwrap_or(i64::MAX);
        losses.extend(part);
    }
    if next != raw.epochs {
        return Err(damaged(format!(
            "its history holds {next} losses, its row says {}",
            raw.epochs
        )));
    }
    let history = match (&cached, raw.history_from) {
        (_, 0) => History::from_vec(losses),
        (Some(s), _) => s.history.appended(&losses),
        (None, from) => {
            return Err(damaged(format!(
                "a history read from {from} without a copy"
            )));
        }
    };
    Ok(Loaded {
        seq: raw.seq,
        created_at: raw.created_at,
        owner: raw.owner,
        touched: raw.touched,
        stamp: raw.stamp,
        session: Session {
            net: Arc::new(net),
            init: codec::init_echo(&raw.init_method, raw.init_seed)?,
            dataset,
            history,
            initial_loss: raw.initial_loss,
        },
    })
}

/// What to do about a migration error, in words naming the database.
fn migrate_error(what: &str, known: &Migrator, e: MigrateError) -> StoreError {
    let newest = known.iter().map(|m| m.version).max().unwrap_or(0);
    StoreError::Startup(match e {
        MigrateError::VersionMissing(v) => format!(
            "{what} was written by a newer backprop-server: its schema has migration {v}, and \
             this binary knows migrations up to {newest}. Run the newer backprop-server on it, \
             or give this one another database with --database; nothing was changed"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "{what} has a schema migration {v} that differs from this binary's; it was written \
             by another build of backprop-server. Run that build on it, or give this one \
             another database with --database; nothing was changed"
        ),
        MigrateError::Dirty(v) => format!(
            "{what}: schema migration {v} was left half-applied; restore the database from a \
             backup, or give this server another database with --database"
        ),
        other => format!("cannot bring the schema of {what} up to date: {other}"),
    })
}

async fn open_sqlite(path: &Path) -> StoreResult<Db> {
    let shown = path.display().to_string();
    let startup = |words: String| StoreError::Startup(words);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| startup(format!("cannot open the SQLite file {shown}: {e}")))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(startup(format!(
                "{shown} is in use by another backprop-server process (one process per SQLite \
                 file). Stop that one, or give this one another file with --database \
                 sqlite:OTHER.db; for several replicas, share a PostgreSQL database \
                 (--database postgres://...)"
            )));
        }
        Err(TryLockError::Error(e)) => {
            return Err(startup(format!("cannot lock the SQLite file {shown}: {e}")));
        }
    }
    let mut head = Vec::with_capacity(16);
    (&mut file)
        .take(16)
        .read_to_end(&mut head)
        .map_err(|e| startup(format!("cannot read {shown}: {e}")))?;
    if !head.is_empty() && head.as_slice() != b"SQLite format 3\0" {
        return Err(startup(format!(
            "{shown} is not a SQLite database, so it is not backprop-server's; nothing was \
             changed. Move it away, or give the server another file with --database sqlite:PATH"
        )));
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .busy_timeout(ACQUIRE_TIMEOUT)
        // The writer's batches are cached prepared statements by their shape (which changes
        // in what order): keep many.
        .statement_cache_capacity(1024);
    let mut conn = options
        .connect()
        .await
        .map_err(|e| startup(format!("cannot open {shown} as SQLite: {e}")))?;
    let opened = |e: sqlx::Error| startup(format!("cannot read {shown}: {e}"));
    // Ours, or new and empty? Asked before anything (even the journal mode) is written.
    let app: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut conn)
        .await
        .map_err(opened)?;
    if app != APPLICATION_ID {
        let objects: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema")
            .fetch_one(&mut conn)
            .await
            .map_err(opened)?;
        if app != 0 || objects > 0 {
            return Err(startup(format!(
                "{shown} is a SQLite database, but not backprop-server's (its application id \
                 is {app:#x}, with {objects} tables and indexes of its own); nothing was \
                 changed. Give the server another file with --database sqlite:PATH"
            )));
        }
        sqlx::query(&format!("PRAGMA application_id = {APPLICATION_ID}"))
            .execute(&mut conn)
            .await
            .map_err(opened)?;
    }
    for pragma in ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL"] {
        sqlx::query(pragma)
            .execute(&mut conn)
            .await
            .map_err(opened)?;
    }
    SQLITE_MIGRATIONS
        .run(&mut conn)
        .await
        .map_err(|e| migrate_error(&shown, &SQLITE_MIGRATIONS, e))?;
    // One process per file: a job still unfinished here was cut by the last one's end (a
    // crash, a kill -9). What it committed stands; it is reported interrupted.
    let cut = sqlx::query(
        "UPDATE jobs SET state = 'done', status = 'interrupted', live_epochs = epochs_done, \
         live_loss = last_loss WHERE state <> 'done'",
    )
    .execute(&mut conn)
    .await
    .map_err(opened)?
    .rows_affected();
    if cut > 0 {
        tracing::warn!(
            jobs = cut,
            "background trains cut by the last process's end are marked interrupted"
        );
    }
    let writer_options = options
        .clone()
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let readers = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options.read_only(true))
        .await
        .map_err(opened)?;
    let (writer, jobs) = mpsc::channel(1024);
    // A task, not a thread of its own: a hand-off between tasks costs no wake-up of an OS
    // thread, and on a busy machine each of those can wait for a core (measured: a third of
    // the flows per second with a writer thread, benches/flows.rs).
    tokio::spawn(write_loop(conn, writer_options, jobs));
    Ok(Db {
        backend: Backend::Sqlite(Lite {
            writer,
            readers,
            _lock: file,
        }),
        what: format!("SQLite file {}", absolute(path).display()),
    })
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The SQLite writer: commits what has queued up as one transaction (one fsync for all of
/// them), then answers each.
async fn write_loop(
    mut conn: SqliteConnection,
    options: SqliteConnectOptions,
    mut jobs: mpsc::Receiver<Write>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let results = match write_batch(&mut conn, &batch).await {
            Ok(results) => results,
            Err(e) if is_unavailable(&e) || batch.len() == 1 => {
                tracing::warn!(error = %e, changes = batch.len(), "a SQLite commit failed");
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                if conn.ping().await.is_err() {
                    match options.connect().await {
                        Ok(fresh) => conn = fresh,
                        Err(e) => tracing::error!(error = %e, "cannot reopen the SQLite file"),
                    }
                }
                let e = StoreError::from(e);
                batch.iter().map(|_| Err(e.clone())).collect()
            }
            Err(_) => {
                // One change failed for a reason of its own (not the database's): nothing of
                // the batch was kept; commit each alone, so that only that one fails.
                let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                let mut results = Vec::with_capacity(batch.len());
                for job in &batch {
                    let one = std::slice::from_ref(job);
                    results.push(match write_batch(&mut conn, one).await {
                        Ok(mut one) => one
                            .pop()
                            .unwrap_or(Err(StoreError::Internal("no result".into()))),
                        Err(e) => {
                            let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                            Err(e.into())
                        }
                    });
                }
                results
            }
        };
        for (job, result) in batch.drain(..).zip(results) {
            let _ = job.done.send(result);
        }
    }
}

/// Applies `batch` as one transaction in one round trip (`writes.rs` says why and how);
/// then asks why each change that wrote nothing did not.
async fn write_batch(
    conn: &mut SqliteConnection,
    batch: &[Write],
) -> Result<Vec<StoreResult<Done>>, sqlx::Error> {
    let mut sql = String::from("BEGIN IMMEDIATE;\n");
    let mut args = Vec::new();
    let statements: Vec<Vec<writes::Stmt<'_>>> = batch
        .iter()
        .enumerate()
        .map(|(k, job)| writes::statements(&job.op, k as i64))
        .collect();
    for stmt in statements.iter().flatten() {
        writes::append(&mut sql, stmt, args.len());
        args.extend_from_slice(&stmt.args);
    }
    sql.push_str("COMMIT;");
    let mut reports = vec![None; batch.len()];
    for r in queries::sqlite::run_batch(conn, &sql, &args).await? {
        if let Some(slot) = usize::try_from(r.change)
            .ok()
            .and_then(|k| reports.get_mut(k))
        {
            *slot = Some(r);
        }
    }
    let mut out = Vec::with_capacity(batch.len());
    for (job, report) in batch.iter().zip(reports) {
        let done = match writes::verdict(&job.op, report) {
            writes::Verdict::Done(done) => done,
            writes::Verdict::Ask => queries::sqlite::why(conn, &job.op).await?,
        };
        out.push(Ok(done));
    }
    Ok(out)
}

async fn open_postgres(url: &str) -> StoreResult<Db> {
    let shown = redacted(url);
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::Startup(format!("{shown} is not a PostgreSQL URL I can use: {e}"))
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(PG_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);
    // A replica may start before its database: wait for it a while.
    let started = Instant::now();
    loop {
        match sqlx::query("SELECT 1").execute(&pool).await {
            Ok(_) => break,
            Err(e) if is_unavailable(&e) && started.elapsed() < START_WAIT => {
                tracing::warn!(database = %shown, error = %e, "waiting for PostgreSQL");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(StoreError::Startup(format!(
                    "cannot reach PostgreSQL at {shown}: {e}"
                )));
            }
        }
    }
    let failed = |e: sqlx::Error| StoreError::Startup(format!("cannot read {shown}: {e}"));
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
    )
    .fetch_one(&pool)
    .await
    .map_err(failed)?;
    let ours: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = 'backprop_meta')",
    )
    .fetch_one(&pool)
    .await
    .map_err(failed)?;
    if others > 0 && !ours {
        return Err(StoreError::Startup(format!(
            "the database {shown} holds {others} tables, but not backprop-server's schema; \
             nothing was changed. Give the server a database of its own (CREATE DATABASE ...) \
             with --database"
        )));
    }
    POSTGRES_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|e| migrate_error(&format!("the database {shown}"), &POSTGRES_MIGRATIONS, e))?;
    Ok(Db {
        backend: Backend::Postgres(pool),
        what: format!("PostgreSQL {shown}"),
    })
}
