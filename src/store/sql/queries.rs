//! Every statement, written once for both databases.
//!
//! The SQL text is the same for SQLite and PostgreSQL (`$N` parameters, `RETURNING`,
//! `CASE` rather than `max`/`GREATEST`); what differs is the connection type sqlx checks it
//! against, so the functions are stamped out per database by `dialect!` instead of being
//! generic over sqlx's `Database` (whose bounds for "an executor that takes these types"
//! would outweigh the code). `pg` marks the few PostgreSQL-only steps: the advisory lock that
//! makes the session count exact across replicas, and the snapshot isolation of a read.

use sqlx::Row;

use super::codec::DatasetRow;
use super::{DatasetRead, Done, Insert, Op, RawSession, RowState, Since};
use crate::store::{KeyInfo, KeyRecord, Stamp, StoreError};

/// The advisory lock (PostgreSQL) that creates take, so that two replicas cannot both
/// count 9999 sessions and both add one. An arbitrary constant: "backprop" in ASCII.
const CREATE_LOCK: i64 = 0x6261_636b_7072_6f70;

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

            /// Applies one change (inside the caller's transaction, unless it is one
            /// statement: [`Op::is_one_statement`]). `held` is the number of sessions when
            /// the caller knows it (the SQLite writer counts them), kept up to date here.
            pub async fn apply(c: &mut Conn, op: &Op, held: &mut Option<i64>) -> Result<Done, sqlx::Error> {
                match op {
                    Op::Insert(i) => {
                        let done = insert(c, i, *held).await?;
                        if let (Done::Seq(_), Some(n)) = (&done, held.as_mut()) {
                            *n += 1;
                        }
                        Ok(done)
                    }
                    Op::Delete { id } => {
                        let r = sqlx::query("DELETE FROM sessions WHERE id = $1")
                            .bind(id.as_str())
                            .execute(&mut *c)
                            .await?;
                        if let Some(n) = held.as_mut() {
                            *n -= r.rows_affected() as i64;
                        }
                        Ok(Done::Existed(r.rows_affected() > 0))
                    }
                    Op::DeleteIdle { id, cutoff } => {
                        let r = sqlx::query("DELETE FROM sessions WHERE id = $1 AND touched_at < $2")
                            .bind(id.as_str())
                            .bind(*cutoff)
                            .execute(&mut *c)
                            .await?;
                        if let Some(n) = held.as_mut() {
                            *n -= r.rows_affected() as i64;
                        }
                        Ok(Done::Existed(r.rows_affected() > 0))
                    }
                    Op::Touch { id, touched } => {
                        sqlx::query(
                            "UPDATE sessions SET touched_at = $2 WHERE id = $1 AND touched_at < $2",
                        )
                        .bind(id.as_str())
                        .bind(*touched)
                        .execute(&mut *c)
                        .await?;
                        Ok(Done::Existed(true))
                    }
                    Op::Dataset { id, touched, dataset } => {
                        let Some((seq, stamp)) =
                            bump(c, id, *touched, "dataset_gen = dataset_gen + 1,").await?
                        else {
                            return Ok(Done::Stamp(None));
                        };
                        put_dataset(c, seq, dataset).await?;
                        Ok(Done::Stamp(Some(stamp)))
                    }
                    Op::Weights { id, touched, params } => {
                        let stamp = bump(
                            c,
                            id,
                            *touched,
                            "history_gen = history_gen + 1, epochs = 0, initial_loss = NULL,",
                        )
                        .await?;
                        let Some((seq, stamp)) = stamp else {
                            return Ok(Done::Stamp(None));
                        };
                        sqlx::query("DELETE FROM history WHERE session = $1")
                            .bind(seq)
                            .execute(&mut *c)
                            .await?;
                        set_params(c, seq, params).await?;
                        Ok(Done::Stamp(Some(stamp)))
                    }
                    Op::Trained { id, touched, params, first_epoch, losses, epochs, initial_loss } => {
                        // `epochs = $4`: the history this train extends is the one stored;
                        // anything else would be a lost update, refused rather than written.
                        let stamp = sqlx::query(
                            "UPDATE sessions SET version = version + 1, epochs = $3, \
                             initial_loss = $5, \
                             touched_at = CASE WHEN touched_at < $2 THEN $2 ELSE touched_at END \
                             WHERE id = $1 AND epochs = $4 \
                             RETURNING seq, version, dataset_gen, history_gen",
                        )
                        .bind(id.as_str())
                        .bind(*touched)
                        .bind(*epochs)
                        .bind(*first_epoch)
                        .bind(*initial_loss)
                        .fetch_optional(&mut *c)
                        .await?
                        .map(|r| Ok::<_, sqlx::Error>((r.try_get::<i64, _>("seq")?, stamp_of(&r)?)))
                        .transpose()?;
                        let Some((seq, stamp)) = stamp else {
                            let exists = sqlx::query("SELECT 1 FROM sessions WHERE id = $1")
                                .bind(id.as_str())
                                .fetch_optional(&mut *c)
                                .await?
                                .is_some();
                            if exists {
                                return Ok(Done::Refused(StoreError::Internal(format!(
                                    "session {id}: a train extended a history that is no longer \
                                     the stored one (it holds another length than {first_epoch})"
                                ))));
                            }
                            return Ok(Done::Stamp(None));
                        };
                        if let Some(params) = params {
                            set_params(c, seq, params).await?;
                        }
                        if !losses.is_empty() {
                            sqlx::query(
                                "INSERT INTO history (session, first_epoch, losses) \
                                 VALUES ($1, $2, $3)",
                            )
                            .bind(seq)
                            .bind(*first_epoch)
                            .bind(losses.as_slice())
                            .execute(&mut *c)
                            .await?;
                        }
                        Ok(Done::Stamp(Some(stamp)))
                    }
                    Op::CreateKey(k) => {
                        let r = sqlx::query(
                            "INSERT INTO keys (name, hash, created_at) VALUES ($1, $2, $3) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(k.name.as_str())
                        .bind(k.hash.as_str())
                        .bind(k.created_at)
                        .execute(&mut *c)
                        .await?;
                        if r.rows_affected() == 0 {
                            return Ok(Done::Refused(StoreError::KeyExists(k.name.clone())));
                        }
                        Ok(Done::Existed(true))
                    }
                    Op::DeleteKey(name) => {
                        let r = sqlx::query("DELETE FROM keys WHERE name = $1")
                            .bind(name.as_str())
                            .execute(&mut *c)
                            .await?;
                        Ok(Done::Existed(r.rows_affected() > 0))
                    }
                }
            }

            async fn insert(c: &mut Conn, i: &Insert, held: Option<i64>) -> Result<Done, sqlx::Error> {
                if $pg {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(CREATE_LOCK)
                        .execute(&mut *c)
                        .await?;
                }
                let held = match held {
                    Some(n) => n,
                    None => count(c, None).await?,
                };
                if held >= i.max {
                    return Ok(too_many(i.max, None));
                }
                if let (Some(owner), Some(max)) = (&i.owner, i.owner_max) {
                    let held: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE owner = $1")
                            .bind(owner.as_str())
                            .fetch_one(&mut *c)
                            .await?;
                    if held >= max {
                        return Ok(too_many(max, Some(owner)));
                    }
                }
                let s = &i.settings;
                let seq: i64 = sqlx::query_scalar(
                    "INSERT INTO sessions (id, owner, created_at, touched_at, version, \
                     dataset_gen, history_gen, layers, activation, learning_rate, \
                     grad_reduction, bias, init_method, init_seed, epochs, initial_loss) \
                     VALUES ($1, $2, $3, $4, 1, 0, 0, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     RETURNING seq",
                )
                .bind(i.id.as_str())
                .bind(i.owner.as_deref())
                .bind(i.created_at)
                .bind(i.touched)
                .bind(s.layers.as_str())
                .bind(s.activation)
                .bind(s.learning_rate)
                .bind(s.grad_reduction)
                .bind(s.bias)
                .bind(s.init_method)
                .bind(s.init_seed)
                .bind(i.epochs)
                .bind(i.initial_loss)
                .fetch_one(&mut *c)
                .await?;
                sqlx::query("INSERT INTO weights (session, params) VALUES ($1, $2)")
                    .bind(seq)
                    .bind(i.params.as_slice())
                    .execute(&mut *c)
                    .await?;
                if let Some(d) = &i.dataset {
                    put_dataset(c, seq, d).await?;
                }
                if let Some(losses) = &i.history {
                    sqlx::query(
                        "INSERT INTO history (session, first_epoch, losses) VALUES ($1, 0, $2)",
                    )
                    .bind(seq)
                    .bind(losses.as_slice())
                    .execute(&mut *c)
                    .await?;
                }
                Ok(Done::Seq(seq))
            }

            /// Raises the session's version (and what `set` says), moves its clock forward;
            /// its `seq` and new stamp, or `None` if it is gone.
            async fn bump(
                c: &mut Conn,
                id: &str,
                touched: i64,
                set: &str,
            ) -> Result<Option<(i64, Stamp)>, sqlx::Error> {
                let sql = format!(
                    "UPDATE sessions SET {set} version = version + 1, \
                     touched_at = CASE WHEN touched_at < $2 THEN $2 ELSE touched_at END \
                     WHERE id = $1 RETURNING seq, version, dataset_gen, history_gen"
                );
                sqlx::query(&sql)
                    .bind(id)
                    .bind(touched)
                    .fetch_optional(&mut *c)
                    .await?
                    .map(|r| Ok((r.try_get("seq")?, stamp_of(&r)?)))
                    .transpose()
            }

            async fn set_params(c: &mut Conn, seq: i64, params: &[u8]) -> Result<(), sqlx::Error> {
                sqlx::query("UPDATE weights SET params = $2 WHERE session = $1")
                    .bind(seq)
                    .bind(params)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            }

            /// Sets (or replaces) the session's dataset.
            async fn put_dataset(c: &mut Conn, seq: i64, d: &DatasetRow) -> Result<(), sqlx::Error> {
                sqlx::query(
                    "INSERT INTO datasets (session, builtin, sample_shape, samples, x, y) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (session) DO UPDATE SET builtin = excluded.builtin, \
                     sample_shape = excluded.sample_shape, samples = excluded.samples, \
                     x = excluded.x, y = excluded.y",
                )
                .bind(seq)
                .bind(d.builtin.as_deref())
                .bind(d.sample_shape.as_str())
                .bind(d.samples)
                .bind(d.x.as_deref())
                .bind(d.y.as_deref())
                .execute(&mut *c)
                .await?;
                Ok(())
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
