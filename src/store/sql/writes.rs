//! Every write, as statements: written once for both databases.
//!
//! PostgreSQL runs a change's statements one by one in a transaction of its own. SQLite's
//! writer runs a whole batch of changes as one multi-statement query, `BEGIN IMMEDIATE;
//! ...; COMMIT`, in a single round trip to sqlx's SQLite thread: a round trip costs two
//! thread hand-offs, and on a busy machine each hand-off can wait for a core, so a batch of
//! ten statements sent one at a time cost far more than the statements themselves (see
//! benches/flows.rs). That needs the statements to decide for themselves: each later
//! statement of a change applies only if the first one did (`WHERE ... version = $v`), and
//! each change's first statement reports what it did with `RETURNING`, tagged with the
//! change's place in the batch. A change that reports nothing wrote nothing; why (a limit,
//! a taken name, a deleted session) is asked afterwards ([`Verdict::Ask`]).
//!
//! (sqlx runs a multi-statement query with `$N` parameters on SQLite; it is the one
//! driver that does, and its maintainers mean to drop that in a later version: an upgrade
//! past 0.8 must replace `batch_sql` with one query per statement, which is what
//! PostgreSQL does here already.)

use super::{Done, Op};
use crate::store::{Job, Stamp, StoreError};

/// A bound value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(i64),
    MaybeInt(Option<i64>),
    Real(Option<f64>),
    Text(Option<&'a str>),
    Blob(Option<&'a [u8]>),
    Bool(bool),
}

/// One statement and its arguments (`$1`, `$2`, ... in its text).
pub(super) struct Stmt<'a> {
    pub sql: &'static str,
    pub args: Vec<Arg<'a>>,
}

/// What a change's first statement returned: the change's place in its batch, the
/// session's `seq`, and its stamp after the change (before it, for a delete).
#[derive(Debug, Clone, Copy)]
pub(super) struct Report {
    pub change: i64,
    pub seq: i64,
    pub stamp: Stamp,
}

/// What a change did, from its report.
pub(super) enum Verdict {
    Done(Done),
    /// It reported nothing: ask the database why (see `queries::why`).
    Ask,
}

fn text(s: &str) -> Arg<'_> {
    Arg::Text(Some(s))
}

fn blob(b: &[u8]) -> Arg<'_> {
    Arg::Blob(Some(b))
}

fn int(v: u64) -> Arg<'static> {
    Arg::Int(i64::try_from(v).unwrap_or(i64::MAX))
}

/// A job's columns after `session`, in the order of [`JOB_COLUMNS`].
fn job_args(j: &Job) -> Vec<Arg<'_>> {
    vec![
        text(&j.id),
        text(&j.runner),
        text(j.state.as_str()),
        int(j.epochs_requested),
        Arg::Bool(j.return_loss),
        Arg::Int(j.submitted_at),
        Arg::MaybeInt(j.started_at),
        Arg::Int(j.heartbeat_at),
        Arg::Bool(j.cancel_requested),
        Arg::MaybeInt(j.first_epoch.map(|v| i64::try_from(v).unwrap_or(i64::MAX))),
        int(j.epochs_done),
        Arg::Real(j.last_loss),
        int(j.epochs_trained),
        Arg::Real(j.initial_loss),
        Arg::Real(j.final_loss),
        int(j.live_epochs),
        Arg::Real(j.live_loss),
        Arg::Text(j.status.map(|s| s.as_str())),
        Arg::MaybeInt(j.error.as_ref().map(|e| i64::from(e.status))),
        Arg::Text(j.error.as_ref().map(|e| e.code.as_str())),
        Arg::Text(j.error.as_ref().map(|e| e.detail.as_str())),
    ]
}

/// A job's columns (but `session`), as [`job_args`] binds them and `queries::job` reads them.
pub(super) const JOB_COLUMNS: &str = "id, runner, state, epochs_requested, return_loss, \
    submitted_at, started_at, heartbeat_at, cancel_requested, first_epoch, epochs_done, \
    last_loss, epochs_trained, initial_loss, final_loss, live_epochs, live_loss, status, \
    error_status, error_code, error_detail";

/// What job statements return in the place of a session's stamp.
macro_rules! job_report {
    ($sql:literal) => {
        concat!(
            $sql,
            " RETURNING $TAG, session, CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT)"
        )
    };
}

/// A change's first statement: it returns its tag and the session's `seq` and stamp.
macro_rules! report {
    ($sql:literal) => {
        concat!(
            $sql,
            " RETURNING $TAG, seq, version, dataset_gen, history_gen"
        )
    };
}

/// The statements of `op`, the `tag`-th change of its batch. The first one of each change
/// that reports ends with `RETURNING $TAG, ...`; the tag is bound as its last argument.
pub(super) fn statements<'a>(op: &'a Op, tag: i64) -> Vec<Stmt<'a>> {
    fn s<'a>(sql: &'static str, args: Vec<Arg<'a>>) -> Stmt<'a> {
        Stmt { sql, args }
    }
    let tagged = |sql: &'static str, args: Vec<Arg<'a>>| -> Stmt<'a> {
        let mut args = args;
        args.push(Arg::Int(tag));
        Stmt { sql, args }
    };
    match op {
        Op::Insert(i) => {
            let st = &i.settings;
            let mut out = vec![tagged(
                report!(
                    "INSERT INTO sessions (id, owner, created_at, touched_at, version, \
                     dataset_gen, history_gen, layers, activation, learning_rate, \
                     grad_reduction, bias, init_method, init_seed, epochs, initial_loss) \
                     SELECT $1, $2, $3, $4, 1, 0, 0, $5, $6, $7, $8, $9, $10, $11, $12, $13 \
                     WHERE (SELECT count(*) FROM sessions) < $14 \
                     AND ($2 IS NULL OR (SELECT count(*) FROM sessions WHERE owner = $2) < $15)"
                ),
                vec![
                    text(&i.id),
                    Arg::Text(i.owner.as_deref()),
                    Arg::Int(i.created_at),
                    Arg::Int(i.touched),
                    text(&st.layers),
                    text(st.activation),
                    Arg::Real(Some(st.learning_rate)),
                    text(st.grad_reduction),
                    Arg::Bool(st.bias),
                    text(st.init_method),
                    Arg::MaybeInt(st.init_seed),
                    Arg::Int(i.epochs),
                    Arg::Real(i.initial_loss),
                    Arg::Int(i.max),
                    Arg::Int(i.owner_max.unwrap_or(i64::MAX)),
                ],
            )];
            out.push(s(
                "INSERT INTO weights (session, params) SELECT seq, $2 FROM sessions WHERE id = $1",
                vec![text(&i.id), blob(&i.params)],
            ));
            if let Some(d) = &i.dataset {
                out.push(s(
                    "INSERT INTO datasets (session, builtin, sample_shape, samples, x, y) \
                     SELECT seq, $2, $3, $4, $5, $6 FROM sessions WHERE id = $1",
                    vec![
                        text(&i.id),
                        Arg::Text(d.builtin.as_deref()),
                        text(&d.sample_shape),
                        Arg::Int(d.samples),
                        Arg::Blob(d.x.as_deref()),
                        Arg::Blob(d.y.as_deref()),
                    ],
                ));
            }
            if let Some(losses) = &i.history {
                out.push(s(
                    "INSERT INTO history (session, first_epoch, losses) \
                     SELECT seq, 0, $2 FROM sessions WHERE id = $1",
                    vec![text(&i.id), blob(losses)],
                ));
            }
            out
        }
        Op::Delete { id } => vec![tagged(
            report!("DELETE FROM sessions WHERE id = $1"),
            vec![text(id)],
        )],
        Op::DeleteIdle { id, cutoff } => vec![tagged(
            report!("DELETE FROM sessions WHERE id = $1 AND touched_at < $2"),
            vec![text(id), Arg::Int(*cutoff)],
        )],
        Op::Touch { id, touched } => vec![s(
            "UPDATE sessions SET touched_at = $2 WHERE id = $1 AND touched_at < $2",
            vec![text(id), Arg::Int(*touched)],
        )],
        Op::Dataset {
            id,
            touched,
            version,
            dataset: d,
        } => vec![
            tagged(
                report!(
                    "UPDATE sessions SET version = version + 1, dataset_gen = dataset_gen + 1, \
                     touched_at = CASE WHEN touched_at < $2 THEN $2 ELSE touched_at END \
                     WHERE id = $1 AND version = $3"
                ),
                vec![text(id), Arg::Int(*touched), Arg::Int(*version)],
            ),
            s(
                "INSERT INTO datasets (session, builtin, sample_shape, samples, x, y) \
                 SELECT seq, $3, $4, $5, $6, $7 FROM sessions WHERE id = $1 AND version = $2 \
                 ON CONFLICT (session) DO UPDATE SET builtin = excluded.builtin, \
                 sample_shape = excluded.sample_shape, samples = excluded.samples, \
                 x = excluded.x, y = excluded.y",
                vec![
                    text(id),
                    Arg::Int(version + 1),
                    Arg::Text(d.builtin.as_deref()),
                    text(&d.sample_shape),
                    Arg::Int(d.samples),
                    Arg::Blob(d.x.as_deref()),
                    Arg::Blob(d.y.as_deref()),
                ],
            ),
        ],
        Op::Weights {
            id,
            touched,
            version,
            params,
        } => vec![
            tagged(
                report!(
                    "UPDATE sessions SET version = version + 1, history_gen = history_gen + 1, \
                     epochs = 0, initial_loss = NULL, \
                     touched_at = CASE WHEN touched_at < $2 THEN $2 ELSE touched_at END \
                     WHERE id = $1 AND version = $3"
                ),
                vec![text(id), Arg::Int(*touched), Arg::Int(*version)],
            ),
            s(
                "DELETE FROM history \
                 WHERE session = (SELECT seq FROM sessions WHERE id = $1 AND version = $2)",
                vec![text(id), Arg::Int(version + 1)],
            ),
            s(
                "UPDATE weights SET params = $3 \
                 WHERE session = (SELECT seq FROM sessions WHERE id = $1 AND version = $2)",
                vec![text(id), Arg::Int(version + 1), blob(params)],
            ),
            // The last job's losses went with the history.
            s(
                "UPDATE jobs SET first_epoch = NULL \
                 WHERE session = (SELECT seq FROM sessions WHERE id = $1 AND version = $2)",
                vec![text(id), Arg::Int(version + 1)],
            ),
        ],
        Op::Trained {
            id,
            touched,
            version,
            params,
            first_epoch,
            losses,
            epochs,
            initial_loss,
            job,
        } => {
            // `epochs = $5`: the history this train extends is the stored one.
            let mut out = vec![tagged(
                report!(
                    "UPDATE sessions SET version = version + 1, epochs = $3, initial_loss = $4, \
                     touched_at = CASE WHEN touched_at < $2 THEN $2 ELSE touched_at END \
                     WHERE id = $1 AND version = $6 AND epochs = $5"
                ),
                vec![
                    text(id),
                    Arg::Int(*touched),
                    Arg::Int(*epochs),
                    Arg::Real(*initial_loss),
                    Arg::Int(*first_epoch),
                    Arg::Int(*version),
                ],
            )];
            if let Some(params) = params {
                out.push(s(
                    "UPDATE weights SET params = $3 \
                     WHERE session = (SELECT seq FROM sessions WHERE id = $1 AND version = $2)",
                    vec![text(id), Arg::Int(version + 1), blob(params)],
                ));
            }
            if !losses.is_empty() {
                out.push(s(
                    "INSERT INTO history (session, first_epoch, losses) \
                     SELECT seq, $3, $4 FROM sessions WHERE id = $1 AND version = $2",
                    vec![
                        text(id),
                        Arg::Int(version + 1),
                        Arg::Int(*first_epoch),
                        blob(losses),
                    ],
                ));
            }
            if let Some(j) = job {
                // In the same transaction: the job's record never claims epochs the session
                // does not hold, nor misses ones it does.
                out.push(s(
                    "UPDATE jobs SET epochs_done = $3, last_loss = $4, epochs_trained = $5, \
                     initial_loss = $6, final_loss = $7 \
                     WHERE id = $8 AND session = \
                     (SELECT seq FROM sessions WHERE id = $1 AND version = $2)",
                    vec![
                        text(id),
                        Arg::Int(version + 1),
                        Arg::Int(j.epochs_done),
                        Arg::Real(j.last_loss),
                        Arg::Int(j.epochs_trained),
                        Arg::Real(j.initial_loss),
                        Arg::Real(j.final_loss),
                        text(&j.id),
                    ],
                ));
            }
            out
        }
        Op::SubmitJob { id, job } => {
            let mut args = vec![text(id)];
            args.extend(job_args(job));
            vec![tagged(
                job_report!(
                    "INSERT INTO jobs (session, id, runner, state, epochs_requested, return_loss, \
                     submitted_at, started_at, heartbeat_at, cancel_requested, first_epoch, \
                     epochs_done, last_loss, epochs_trained, initial_loss, final_loss, \
                     live_epochs, live_loss, status, error_status, error_code, error_detail) \
                     SELECT seq, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                     $16, $17, $18, $19, $20, $21, $22 FROM sessions WHERE id = $1 \
                     ON CONFLICT (session) DO UPDATE SET id = excluded.id, \
                     runner = excluded.runner, state = excluded.state, \
                     epochs_requested = excluded.epochs_requested, \
                     return_loss = excluded.return_loss, submitted_at = excluded.submitted_at, \
                     started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, \
                     cancel_requested = excluded.cancel_requested, \
                     first_epoch = excluded.first_epoch, epochs_done = excluded.epochs_done, \
                     last_loss = excluded.last_loss, epochs_trained = excluded.epochs_trained, \
                     initial_loss = excluded.initial_loss, final_loss = excluded.final_loss, \
                     live_epochs = excluded.live_epochs, live_loss = excluded.live_loss, \
                     status = excluded.status, error_status = excluded.error_status, \
                     error_code = excluded.error_code, error_detail = excluded.error_detail \
                     WHERE jobs.state = 'done'"
                ),
                args,
            )]
        }
        Op::SaveJob(job) => {
            let mut args = job_args(job);
            // `cancel_requested` is CancelJob's to set (another replica may have).
            args.remove(8);
            vec![tagged(
                job_report!(
                    "UPDATE jobs SET runner = $2, state = $3, epochs_requested = $4, \
                     return_loss = $5, submitted_at = $6, started_at = $7, heartbeat_at = $8, \
                     first_epoch = $9, epochs_done = $10, last_loss = $11, \
                     epochs_trained = $12, initial_loss = $13, final_loss = $14, \
                     live_epochs = $15, live_loss = $16, status = $17, error_status = $18, \
                     error_code = $19, error_detail = $20 \
                     WHERE id = $1"
                ),
                args,
            )]
        }
        Op::CancelJob { id } => vec![tagged(
            job_report!(
                "UPDATE jobs SET cancel_requested = TRUE \
                 WHERE session = (SELECT seq FROM sessions WHERE id = $1) AND state <> 'done'"
            ),
            vec![text(id)],
        )],
        Op::InterruptJob { job, cutoff } => vec![tagged(
            job_report!(
                "UPDATE jobs SET state = 'done', status = 'interrupted', \
                 live_epochs = epochs_done, live_loss = last_loss \
                 WHERE id = $1 AND state <> 'done' AND heartbeat_at < $2"
            ),
            vec![text(job), Arg::Int(*cutoff)],
        )],
        Op::CreateKey(k) => vec![tagged(
            "INSERT INTO keys (name, hash, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING RETURNING $TAG, CAST(0 AS BIGINT), CAST(0 AS BIGINT), \
             CAST(0 AS BIGINT), CAST(0 AS BIGINT)",
            vec![text(&k.name), text(&k.hash), Arg::Int(k.created_at)],
        )],
        Op::DeleteKey(name) => vec![tagged(
            "DELETE FROM keys WHERE name = $1 RETURNING $TAG, CAST(0 AS BIGINT), \
             CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT)",
            vec![text(name)],
        )],
    }
}

/// The statement's text with `$TAG` as its last parameter and every `$N` moved up by
/// `offset` (the arguments of the batch before it), appended to `sql`.
pub(super) fn append(sql: &mut String, stmt: &Stmt<'_>, offset: usize) {
    let tag = format!("${}", stmt.args.len());
    let text = stmt.sql.replace("$TAG", &tag);
    let mut rest = text.as_str();
    while let Some(at) = rest.find('$') {
        sql.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let n: usize = rest[at + 1..at + 1 + digits].parse().unwrap_or(0);
        sql.push_str(&format!("${}", n + offset));
        rest = &rest[at + 1 + digits..];
    }
    sql.push_str(rest);
    sql.push_str(";\n");
}

/// The statement's own text, with `$TAG` as its last parameter (for one-by-one runs).
pub(super) fn own_text(stmt: &Stmt<'_>) -> String {
    stmt.sql.replace("$TAG", &format!("${}", stmt.args.len()))
}

/// What `op` did, from the report of its first statement (if it returned one).
pub(super) fn verdict(op: &Op, report: Option<Report>) -> Verdict {
    let existed = Verdict::Done(Done::Existed(report.is_some()));
    match (op, report) {
        (Op::Insert(_), Some(r)) => Verdict::Done(Done::Seq(r.seq)),
        (
            Op::Delete { .. }
            | Op::DeleteIdle { .. }
            | Op::DeleteKey(_)
            | Op::SaveJob(_)
            | Op::CancelJob { .. }
            | Op::InterruptJob { .. },
            _,
        ) => existed,
        (Op::SubmitJob { .. }, Some(_)) => Verdict::Done(Done::Existed(true)),
        (Op::Touch { .. }, _) => Verdict::Done(Done::Existed(true)),
        (Op::CreateKey(_), Some(_)) => Verdict::Done(Done::Existed(true)),
        (Op::CreateKey(k), None) => {
            Verdict::Done(Done::Refused(StoreError::KeyExists(k.name.clone())))
        }
        (Op::Dataset { .. } | Op::Weights { .. } | Op::Trained { .. }, Some(r)) => {
            Verdict::Done(Done::Stamp(Some(r.stamp)))
        }
        (
            Op::Insert(_)
            | Op::Dataset { .. }
            | Op::Weights { .. }
            | Op::Trained { .. }
            | Op::SubmitJob { .. },
            None,
        ) => Verdict::Ask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_move_up_by_the_offset_and_the_tag_is_the_last() {
        let stmt = Stmt {
            sql: "UPDATE t SET a = $2, b = $10 WHERE id = $1 RETURNING $TAG, x",
            args: vec![Arg::Int(0); 11],
        };
        let mut sql = String::new();
        append(&mut sql, &stmt, 5);
        assert_eq!(
            sql,
            "UPDATE t SET a = $7, b = $15 WHERE id = $6 RETURNING $16, x;\n"
        );
        assert_eq!(
            own_text(&stmt),
            "UPDATE t SET a = $2, b = $10 WHERE id = $1 RETURNING $11, x"
        );
    }
}
