//! Background trains: `POST /train` with `"wait": false` (202 and the job), `GET` and
//! `DELETE /sessions/{id}/training`.
//!
//! A job takes its place in the session's queue of changes before the 202 goes out, so it
//! runs in arrival order with waiting trains (and `PUT`s); then it runs through the same
//! [`run_train`] as a waiting train, on the same workers, committing every
//! `--job-checkpoint-secs`. Its record is the store's, so every replica sees it; the process
//! running it also publishes its progress live ([`crate::jobs`]). On PostgreSQL the runner
//! beats every [`BEAT_EVERY`]: the beat carries its progress to the other replicas, brings
//! back a cancel asked on any of them, and tells them it is alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AppState;
use super::training::{Run, check_trainable, run_train};
use crate::error::{ApiError, ApiResult};
use crate::jobs::LiveJob;
use crate::store::{
    Change, Entry, Job, JobError, JobState, JobStatus, Session, StoreError, StoreResult, now_millis,
};
use crate::telemetry::QueuedTraining;

/// How often a runner on PostgreSQL beats (and so how soon a cancel from another replica
/// takes effect).
pub(super) const BEAT_EVERY: Duration = Duration::from_millis(250);

/// How long `DELETE /training` waits for the job to stop before it answers 202.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new().route("/sessions/{id}/training", get(read).delete(cancel))
}

/// The session's turn, taken (or queued for) before the 202 goes out.
type Turn = Pin<Box<dyn Future<Output = StoreResult<Change>> + Send>>;

/// `POST /train` with `"wait": false`: records the job, queues it for the session's turn,
/// and answers 202 with it while it waits or runs.
pub(super) async fn submit(
    state: AppState,
    entry: Arc<Entry>,
    epochs: u64,
    return_loss: bool,
) -> ApiResult<Response> {
    let snapshot = entry.snapshot();
    // What can be told now is told now; the run checks again when its turn comes.
    check_trainable(&state, &entry.id, &snapshot, epochs)?;
    let now = now_millis();
    let job = Job {
        id: uuid::Uuid::new_v4().hyphenated().to_string(),
        runner: state.store().instance().to_owned(),
        state: JobState::Queued,
        epochs_requested: epochs,
        return_loss,
        submitted_at: now,
        started_at: None,
        heartbeat_at: now,
        cancel_requested: false,
        first_epoch: None,
        epochs_done: 0,
        last_loss: None,
        epochs_trained: snapshot.history.len() as u64,
        initial_loss: snapshot.initial_loss,
        final_loss: snapshot.history.last(),
        live_epochs: 0,
        live_loss: None,
        status: None,
        error: None,
    };
    let queued = QueuedTraining::enter();
    let job = match state.store().submit_job(&entry, job).await {
        Ok(job) => job,
        Err(StoreError::JobActive(current)) => {
            return Err(ApiError::Conflict(format!(
                "this session already has a background train {} ({} of {} epochs done); \
                 GET /sessions/{}/training follows it, DELETE /sessions/{}/training cancels \
                 it, and a train with \"wait\": true queues behind it",
                current.state.as_str(),
                current.progress().0,
                current.epochs_requested,
                entry.id,
                entry.id
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let live = state.jobs().start(&entry.id, job.clone());
    // Take the job's place in the session's queue now, so that a train sent after this
    // answer runs after the job (the first poll enqueues it, or takes the turn).
    let mut turn: Turn = {
        let (store, entry) = (state.store().clone(), entry.clone());
        Box::pin(async move { store.lock(&entry).await })
    };
    let early = std::future::poll_fn(|cx| Poll::Ready(turn.as_mut().poll(cx))).await;
    let turn: Turn = match early {
        Poll::Ready(taken) => Box::pin(std::future::ready(taken)),
        Poll::Pending => turn,
    };
    tokio::spawn(run_job(state.clone(), entry.clone(), live, turn, queued));
    let location = format!("/sessions/{}/training", entry.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(job_json(&job, None)),
    )
        .into_response())
}

/// The job's life once submitted: its turn, its run, its record at each step.
async fn run_job(
    state: AppState,
    entry: Arc<Entry>,
    live: Arc<LiveJob>,
    turn: Turn,
    queued: QueuedTraining,
) {
    let beat = state
        .store()
        .is_shared()
        .then(|| tokio::spawn(beat(state.clone(), entry.clone(), live.clone())));
    let ended = run_to_end(&state, &entry, &live, turn, queued).await;
    if let Some(b) = beat {
        b.abort();
    }
    let mut job = live.job();
    job.state = JobState::Done;
    job.live_epochs = job.epochs_done;
    job.live_loss = job.last_loss;
    match ended {
        Ok(status) => job.status = Some(status),
        Err(Failure::Before(e)) => {
            let (status, code) = e.status_and_code();
            job.error = Some(JobError {
                status: status.as_u16(),
                code: code.to_owned(),
                detail: e.public_detail(),
            });
        }
        Err(Failure::During(e)) => {
            tracing::warn!(session = %entry.id, job = %job.id, error = %e,
                "a background train failed; what it committed stands");
            job.status = Some(JobStatus::Interrupted);
        }
    }
    job.heartbeat_at = now_millis();
    // The record is what every replica (and the next start) reports: try hard to write it.
    for attempt in 1..=3 {
        match state.store().save_job(&entry, &job).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(session = %entry.id, job = %job.id, attempt, error = %e,
                    "could not record a background train's end");
                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
            }
        }
    }
    live.update(|j| *j = job);
    state.jobs().finish(&live);
}

/// Why a job ended without a status of its own.
enum Failure {
    /// It could not start (no room in the history any more, the database): its error.
    Before(ApiError),
    /// It failed after it began (a commit failed): it is `interrupted`.
    During(ApiError),
}

async fn run_to_end(
    state: &AppState,
    entry: &Arc<Entry>,
    live: &Arc<LiveJob>,
    turn: Turn,
    queued: QueuedTraining,
) -> Result<JobStatus, Failure> {
    let change = turn.await.map_err(|e| Failure::Before(e.into()))?;
    let snapshot = change.snapshot();
    if live.is_cancelled() || state.is_stopping() {
        // Cancelled (or the server is stopping) while it waited: it ran nothing, and its
        // result's numbers are the session's as the trains before it left it.
        live.update(|j| {
            j.epochs_trained = snapshot.history.len() as u64;
            j.initial_loss = snapshot.initial_loss;
            j.final_loss = snapshot.history.last();
        });
        return Ok(JobStatus::Cancelled);
    }
    let mut job = live.job();
    check_trainable(state, &entry.id, &snapshot, job.epochs_requested).map_err(Failure::Before)?;
    job.state = JobState::Running;
    job.started_at = Some(now_millis());
    job.heartbeat_at = now_millis();
    job.first_epoch = Some(snapshot.history.len() as u64);
    job.epochs_trained = snapshot.history.len() as u64;
    job.initial_loss = snapshot.initial_loss;
    job.final_loss = snapshot.history.last();
    match state.store().save_job(entry, &job).await {
        Ok(true) => {}
        // The session was deleted (or, on PostgreSQL, the job taken for dead): stop.
        Ok(false) => return Ok(JobStatus::Cancelled),
        Err(e) => return Err(Failure::Before(e.into())),
    }
    live.update(|j| *j = job.clone());
    let run = Run {
        epochs: job.epochs_requested,
        limit: state.job_time_limit(),
        checkpoint: Some(state.job_checkpoint()),
        cancel: Arc::new(AtomicBool::new(false)),
        live: Some(live.clone()),
    };
    match run_train(state, change, run, queued).await {
        Ok(ran) => Ok(ran.status.job_status()),
        Err(e) => Err(Failure::During(e)),
    }
}

/// The runner's heartbeat on PostgreSQL: progress out, a cancel (from any replica) in.
async fn beat(state: AppState, entry: Arc<Entry>, live: Arc<LiveJob>) {
    let mut every = tokio::time::interval(BEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let job = live.job();
        match state
            .store()
            .beat_job(&entry, &job.id, job.progress())
            .await
        {
            Ok(Some(true)) | Ok(None) => live.cancel(),
            Ok(Some(false)) => {}
            Err(e) => tracing::warn!(session = %entry.id, error = %e, "a job's heartbeat failed"),
        }
    }
}

/// The job as this process knows it best: live if it runs here, else the store's record.
pub(super) async fn current(state: &AppState, entry: &Arc<Entry>) -> ApiResult<Option<Job>> {
    if let Some(live) = state.jobs().get(&entry.id) {
        return Ok(Some(live.job()));
    }
    Ok(state.store().job(entry).await?)
}

fn no_job(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "session {id} has no background train; POST /sessions/{id}/train with \
         {{\"epochs\": N, \"wait\": false}} starts one"
    ))
}

async fn read(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let entry = state.store().get(&id).await?;
    let job = current(&state, &entry).await?.ok_or_else(|| no_job(&id))?;
    job_answer(&state, StatusCode::OK, &entry, job).await
}

/// Cancels the session's job at its next epoch boundary (wherever it runs) and waits a while
/// for it to stop: 200 with the job once it is done (also if it was done already), 202 with
/// it if it is still stopping.
async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let entry = state.store().get(&id).await?;
    let local = state.jobs().get(&id);
    if let Some(live) = &local {
        live.cancel();
    }
    let mut job = state
        .store()
        .cancel_job(&entry)
        .await?
        .or_else(|| local.as_ref().map(|l| l.job()))
        .ok_or_else(|| no_job(&id))?;
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    if let Some(live) = &local {
        let mut rx = live.subscribe();
        let _ = tokio::time::timeout_at(deadline, rx.wait_for(|j| !j.is_active())).await;
        job = live.job();
    } else {
        while job.is_active() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            job = current(&state, &entry).await?.ok_or_else(|| no_job(&id))?;
        }
    }
    let status = if job.is_active() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    job_answer(&state, status, &entry, job).await
}

/// The job resource, with its result's losses (when asked for) from the session's history.
async fn job_answer(
    state: &AppState,
    status: StatusCode,
    entry: &Entry,
    job: Job,
) -> ApiResult<Response> {
    let session = entry.snapshot();
    let numbers = if job.return_loss {
        job.epochs_done as usize
    } else {
        0
    };
    let body = state
        .json(numbers, move || {
            serde_json::to_vec(&job_json(&job, Some(&session)))
        })
        .await?;
    Ok((status, body).into_response())
}

fn rfc3339_ms(ms: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

/// The job resource: `{"state", "epochs_requested", "epochs_done", "last_loss",
/// "started_at", "result"}` (and `"error"` for a job that could not run). `result` is the
/// train response once it is done; its `loss` comes from `session`'s history, while that
/// still holds the job's losses (a new history, `PUT /weights`, drops them).
pub(super) fn job_json(job: &Job, session: Option<&Session>) -> Value {
    let (epochs_done, last_loss) = job.progress();
    let result = (job.state == JobState::Done)
        .then_some(job.status)
        .flatten()
        .map(|status| {
            let mut r = json!({
                "status": status.as_str(),
                "epochs_run": job.epochs_done,
                "epochs_trained": job.epochs_trained,
                "initial_loss": job.initial_loss,
                "final_loss": job.final_loss,
            });
            let losses = session.zip(job.first_epoch).and_then(|(s, first)| {
                let (from, to) = (first as usize, (first + job.epochs_done) as usize);
                (job.return_loss && to <= s.history.len()).then(|| s.history.page(from, to))
            });
            if let Some(l) = losses {
                r["loss"] = json!(l);
            }
            r
        });
    let mut out = json!({
        "state": job.state.as_str(),
        "epochs_requested": job.epochs_requested,
        "epochs_done": epochs_done,
        "last_loss": last_loss,
        "started_at": job.started_at.and_then(rfc3339_ms),
        "result": result,
    });
    if let Some(e) = &job.error {
        out["error"] = json!({
            "type": "about:blank",
            "title": StatusCode::from_u16(e.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error"),
            "status": e.status,
            "code": e.code,
            "detail": e.detail,
        });
    }
    out
}
