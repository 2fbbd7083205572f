//! The reads, and the runners of the writes (`writes.rs`), for both databases.
//!
//! The SQL text is the same for SQLite and PostgreSQL (`$N` parameters, `RETURNING`,
//! `CASE` rather than `max`/`GREATEST`); what differs is the connection type sqlx checks it
//! against, so the functions are stamped out per database by `dialect!` instead of being
//! generic over sqlx's `Database` (whose bounds for "an executor that takes these types"
//! would outweigh the code). `pg` marks the one PostgreSQL-only step of a read: its
//! snapshot isolation.

use sqlx::Row;

use super::codec::DatasetRow;
use super::writes::{Arg, JOB_COLUMNS, Report, Stmt, own_text};
use super::{DatasetRead, Done, Op, RawSession, RowState, Since};
use crate::store::{Job, JobError, JobState, JobStatus, KeyInfo, KeyRecord, Stamp, StoreError};

fn too_many(limit: i64, owner: Option<&str>) -> Done {
    Done::Refused(StoreError::TooManySessions {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
        owner: owner.map(str::to_owned),
    })
}

macro_rules! dialect {
    ($name:ident, $db:ty, $conn:ty, pg = $pg:literal) => {
        pub mod $name {
            use super::*;

            type Conn = $conn;

            type Query<'q> = sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>;

            fn bind_all<'q>(mut q: Query<'q>, args: &[Arg<'q>]) -> Query<'q> {
                for a in args {
                    q = match *a {
                        Arg::Int(v) => q.bind(v),
                        Arg::MaybeInt(v) => q.bind(v),
                        Arg::Real(v) => q.bind(v),
                        Arg::Text(v) => q.bind(v),
                        Arg::Blob(v) => q.bind(v),
                        Arg::Bool(v) => q.bind(v),
                    };
                }
                q
            }

            fn report_of(r: &<$db as sqlx::Database>::Row) -> Result<Report, sqlx::Error> {
                Ok(Report {
                    change: r.try_get(0)?,
                    seq: r.try_get(1)?,
                    stamp: Stamp {
                        version: r.try_get(2)?,
                        dataset_gen: r.try_get(3)?,
                        history_gen: r.try_get(4)?,
                    },
                })
            }

            /// Runs statements one at a time; what they reported (PostgreSQL's way).
            #[allow(dead_code, reason = "SQLite runs its batches with `run_batch`")]
            pub async fn run(c: &mut Conn, stmts: &[Stmt<'_>]) -> Result<Vec<Report>, sqlx::Error> {
                let mut out = Vec::new();
                for stmt in stmts {
                    let text = own_text(stmt);
                    for row in bind_all(sqlx::query(&text), &stmt.args).fetch_all(&mut *c).await? {
                        out.push(report_of(&row)?);
                    }
                }
                Ok(out)
            }

            /// Runs one multi-statement query (SQLite's batches); what it reported.
            #[allow(dead_code, reason = "PostgreSQL takes one statement at a time")]
            pub async fn run_batch(
                c: &mut Conn,
                sql: &str,
                args: &[Arg<'_>],
            ) -> Result<Vec<Report>, sqlx::Error> {
                bind_all(sqlx::query(sql), args)
                    .fetch_all(&mut *c)
                    .await?
                    .iter()
                    .map(report_of)
                    .collect()
            }

            /// Why a change wrote nothing (its first statement reported nothing).
            pub async fn why(c: &mut Conn, op: &Op) -> Result<Done, sqlx::Error> {
                match op {
                    Op::Insert(i) => {
                        if let (Some(owner), Some(max)) = (&i.owner, i.owner_max)
                            && count(c, Some(owner)).await? >= max
                        {
                            return Ok(too_many(max, Some(owner)));
                        }
                        Ok(too_many(i.max, None))
                    }
                    Op::Dataset { id, .. } | Op::Weights { id, .. } | Op::Trained { id, .. } => {
                        if row(c, id).await?.is_none() {
                            // Deleted meanwhile.
                            return Ok(Done::Stamp(None));
                        }
                        Ok(Done::Refused(StoreError::Internal(format!(
                            "session {id}: a change was made to a state that is no longer the \
                             stored one; refused rather than lose an update"
                        ))))
                    }
                    Op::SubmitJob { id, job } => Ok(Done::Refused(if row(c, id).await?.is_none() {
                        StoreError::NotFound(id.clone())
                    } else {
                        StoreError::JobActive(Box::new((**job).clone()))
                    })),
                    _ => Ok(Done::Refused(StoreError::Internal(
                        "a change reported nothing".into(),
                    ))),
                }
            }

            fn stamp_of(r: &<$db as sqlx::Database>::Row) -> Result<Stamp, sqlx::Error> {
                Ok(Stamp {
                    version: r.try_get("version")?,
                    dataset_gen: r.try_get("dataset_gen")?,
                    history_gen: r.try_get("history_gen")?,
                })
            }

            /// What a replica needs to tell whether its copy is current.
            pub async fn row(c: &mut Conn, id: &str) -> Result<Option<RowState>, sqlx::Error> {
                sqlx::query(
                    "SELECT version, dataset_gen, history_gen, touched_at FROM sessions \
                     WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *c)
                .await?
                .map(|r| {
                    Ok(RowState {
                        stamp: stamp_of(&r)?,
                        touched: r.try_get("touched_at")?,
                    })
                })
                .transpose()
            }

            /// A whole session, or what changed since `since`. Call first thing in a
            /// transaction of its own, so that every part comes from one committed state.
            pub async fn load(
                c: &mut Conn,
                id: &str,
                since: Option<Since>,
            ) -> Result<Option<RawSession>, sqlx::Error> {
                if $pg {
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        .execute(&mut *c)
                        .await?;
                }
                let Some(r) = sqlx::query(
                    "SELECT seq, owner, created_at, touched_at, version, dataset_gen, \
                     history_gen, layers, activation, learning_rate, grad_reduction, bias, \
                     init_method, init_seed, epochs, initial_loss FROM sessions WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *c)
                .await?
                else {
                    return Ok(None);
                };
                let stamp = stamp_of(&r)?;
                let seq: i64 = r.try_get("seq")?;
                let params: Vec<u8> =
                    sqlx::query_scalar("SELECT params FROM weights WHERE session = $1")
                        .bind(seq)
                        .fetch_one(&mut *c)
                        .await?;
                let dataset = match since {
                    Some(s) if s.dataset_gen == stamp.dataset_gen => DatasetRead::Unchanged,
                    _ => match sqlx::query(
                        "SELECT builtin, sample_shape, samples, x, y FROM datasets \
                         WHERE session = $1",
                    )
                    .bind(seq)
                    .fetch_optional(&mut *c)
                    .await?
                    {
                        None => DatasetRead::None,
                        Some(d) => DatasetRead::Row(DatasetRow {
                            builtin: d.try_get("builtin")?,
                            sample_shape: d.try_get("sample_shape")?,
                            samples: d.try_get("samples")?,
                            x: d.try_get("x")?,
                            y: d.try_get("y")?,
                        }),
                    },
                };
                let history_from = match since {
                    Some(s) if s.history_gen == stamp.history_gen => s.history_len,
                    _ => 0,
                };
                let chunks = sqlx::query(
                    "SELECT first_epoch, losses FROM history \
                     WHERE session = $1 AND first_epoch >= $2 ORDER BY first_epoch",
                )
                .bind(seq)
                .bind(history_from)
                .fetch_all(&mut *c)
                .await?
                .into_iter()
                .map(|h| Ok((h.try_get("first_epoch")?, h.try_get("losses")?)))
                .collect::<Result<Vec<(i64, Vec<u8>)>, sqlx::Error>>()?;
                Ok(Some(RawSession {
                    seq,
                    owner: r.try_get("owner")?,
                    created_at: r.try_get("created_at")?,
                    touched: r.try_get("touched_at")?,
                    stamp,
                    layers: r.try_get("layers")?,
                    activation: r.try_get("activation")?,
                    learning_rate: r.try_get("learning_rate")?,
                    grad_reduction: r.try_get("grad_reduction")?,
                    bias: r.try_get("bias")?,
                    init_method: r.try_get("init_method")?,
                    init_seed: r.try_get("init_seed")?,
                    epochs: r.try_get("epochs")?,
                    initial_loss: r.try_get("initial_loss")?,
                    params,
                    dataset,
                    history_from,
                    chunks,
                }))
            }

            /// A page of ids, newest first, each with its state; only `owner`'s if given.
            pub async fn page(
                c: &mut Conn,
                offset: i64,
                limit: i64,
                owner: Option<&str>,
            ) -> Result<Vec<(String, RowState)>, sqlx::Error> {
                sqlx::query(
                    "SELECT id, version, dataset_gen, history_gen, touched_at FROM sessions \
                     WHERE $3 IS NULL OR owner = $3 ORDER BY seq DESC LIMIT $1 OFFSET $2",
                )
                .bind(limit)
                .bind(offset)
                .bind(owner)
                .fetch_all(&mut *c)
                .await?
                .into_iter()
                .map(|r| {
                    let state = RowState {
                        stamp: stamp_of(&r)?,
                        touched: r.try_get("touched_at")?,
                    };
                    Ok((r.try_get("id")?, state))
                })
                .collect()
            }

            pub async fn count(c: &mut Conn, owner: Option<&str>) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar("SELECT count(*) FROM sessions WHERE $1 IS NULL OR owner = $1")
                    .bind(owner)
                    .fetch_one(&mut *c)
                    .await
            }

            /// Sessions whose clock is before `cutoff`, longest idle first.
            pub async fn idle_ids(c: &mut Conn, cutoff: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
                sqlx::query_scalar(
                    "SELECT id FROM sessions WHERE touched_at < $1 ORDER BY touched_at LIMIT $2",
                )
                .bind(cutoff)
                .bind(limit)
                .fetch_all(&mut *c)
                .await
            }

            pub async fn keys(c: &mut Conn) -> Result<Vec<KeyInfo>, sqlx::Error> {
                sqlx::query(
                    "SELECT k.name, k.hash, k.created_at, \
                     (SELECT count(*) FROM sessions s WHERE s.owner = k.name) AS sessions \
                     FROM keys k ORDER BY k.name",
                )
                .fetch_all(&mut *c)
                .await?
                .into_iter()
                .map(|r| {
                    let sessions: i64 = r.try_get("sessions")?;
                    Ok(KeyInfo {
                        key: KeyRecord {
                            name: r.try_get("name")?,
                            hash: r.try_get("hash")?,
                            created_at: r.try_get("created_at")?,
                        },
                        sessions: usize::try_from(sessions).unwrap_or(0),
                    })
                })
                .collect()
            }

            /// The job of the session `id` (its current or last), if it ever had one.
            pub async fn job(c: &mut Conn, id: &str) -> Result<Option<Job>, sqlx::Error> {
                let text = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs \
                     WHERE session = (SELECT seq FROM sessions WHERE id = $1)"
                );
                let Some(r) = sqlx::query(&text).bind(id).fetch_optional(&mut *c).await? else {
                    return Ok(None);
                };
                let count = |name: &str| -> Result<u64, sqlx::Error> {
                    let v: i64 = r.try_get(name)?;
                    Ok(u64::try_from(v).unwrap_or(0))
                };
                let damaged = |what: String| sqlx::Error::Decode(what.into());
                let state: String = r.try_get("state")?;
                let status: Option<String> = r.try_get("status")?;
                let error_status: Option<i64> = r.try_get("error_status")?;
                let first_epoch: Option<i64> = r.try_get("first_epoch")?;
                Ok(Some(Job {
                    id: r.try_get("id")?,
                    runner: r.try_get("runner")?,
                    state: JobState::parse(&state)
                        .ok_or_else(|| damaged(format!("a job's state is {state:?}")))?,
                    epochs_requested: count("epochs_requested")?,
                    return_loss: r.try_get("return_loss")?,
                    submitted_at: r.try_get("submitted_at")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_at: r.try_get("heartbeat_at")?,
                    cancel_requested: r.try_get("cancel_requested")?,
                    first_epoch: first_epoch.and_then(|v| u64::try_from(v).ok()),
                    epochs_done: count("epochs_done")?,
                    last_loss: r.try_get("last_loss")?,
                    epochs_trained: count("epochs_trained")?,
                    initial_loss: r.try_get("initial_loss")?,
                    final_loss: r.try_get("final_loss")?,
                    live_epochs: count("live_epochs")?,
                    live_loss: r.try_get("live_loss")?,
                    status: match status {
                        None => None,
                        Some(s) => Some(
                            JobStatus::parse(&s)
                                .ok_or_else(|| damaged(format!("a job's status is {s:?}")))?,
                        ),
                    },
                    error: match error_status {
                        None => None,
                        Some(status) => Some(JobError {
                            status: u16::try_from(status).unwrap_or(500),
                            code: r.try_get::<Option<String>, _>("error_code")?.unwrap_or_default(),
                            detail: r
                                .try_get::<Option<String>, _>("error_detail")?
                                .unwrap_or_default(),
                        }),
                    },
                }))
            }

            pub async fn key_by_hash(c: &mut Conn, hash: &str) -> Result<Option<KeyRecord>, sqlx::Error> {
                sqlx::query("SELECT name, hash, created_at FROM keys WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(&mut *c)
                    .await?
                    .map(|r| {
                        Ok(KeyRecord {
                            name: r.try_get("name")?,
                            hash: r.try_get("hash")?,
                            created_at: r.try_get("created_at")?,
                        })
                    })
                    .transpose()
            }
        }
    };
}

dialect!(sqlite, sqlx::Sqlite, sqlx::SqliteConnection, pg = false);
dialect!(postgres, sqlx::Postgres, sqlx::PgConnection, pg = true);
