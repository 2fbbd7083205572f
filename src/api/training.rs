//! Computing on a session: train, the loss history, predict, gradients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, OptionalJson, QueryParams, RequestBody};
use super::sessions::{check_sample_count, inline_dataset};
use super::wire::{
    Int, LabelsWire, Matrices, Rows, Samples, Vectors, bare_sample_hint, python_repr,
};
use super::{AppState, Caller};
use crate::admission::{self, Need, Part, f64s};
use crate::error::{ApiError, ApiResult};
use crate::jobs::{LiveJob, PUBLISH_EVERY};
use crate::nn::{self, Control, Dataset, NetConfig, Network, TrainStatus, Trainer};
use crate::store::{Change, Job, JobCommit, JobStatus, Session};
use crate::telemetry::{QueuedTraining, RunningTraining};

/// Forward passes below this many multiply-adds run inline; above it, on a worker.
const COMPUTE_INLINE_MAX: u128 = 200_000;

/// Loss pages longer than this are written on a worker.
const LOSS_INLINE_MAX: usize = 100_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{id}/train", post(train))
        .route("/sessions/{id}/loss", get(loss))
        .route("/sessions/{id}/predict", post(predict))
        .route("/sessions/{id}/gradients", post(gradients))
}

/// An optional `{"x", "y"}` batch: both or neither (then the session's dataset is used).
pub(in crate::api) fn optional_batch(
    x: Option<Samples>,
    y: Option<LabelsWire>,
    what: &str,
) -> ApiResult<Option<(Samples, LabelsWire)>> {
    match (x, y) {
        (None, None) => Ok(None),
        (Some(x), Some(y)) => Ok(Some((x, y))),
        (Some(_), None) => Err(ApiError::InvalidRequest(format!(
            "x was given without y; {what} needs labels y for every sample"
        ))),
        (None, Some(_)) => Err(ApiError::InvalidRequest(
            "y was given without x; send the samples x too".into(),
        )),
    }
}

/// Sets its flag when dropped: when a client goes away axum drops the handler, and the
/// training loop sees the flag at its next epoch boundary.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrainRequest {
    pub epochs: Int,
    pub return_loss: Option<bool>,
    /// `false`: a background train (202 and a job); `true` (the default): answer when done.
    pub wait: Option<bool>,
}

impl RequestBody for TrainRequest {}
impl RequestBody for BatchRequest {}

/// What a train of `epochs` epochs on `m` samples holds: the trainer (every layer's
/// activations and deltas for all `m` samples, the gradients, the next weights) and the
/// weights it updates; the losses, and the history's log they are appended to (which may
/// be copied as it grows, `have` entries already); the weights and losses written to the
/// database; and the answer. `limit` is the per-request limit, for the hint.
fn train_need(
    limit: u128,
    config: &NetConfig,
    m: usize,
    have: u64,
    epochs: u64,
    answer: bool,
) -> Need {
    let e = u128::from(epochs);
    let rest = f64s(e)
        + 3 * f64s(u128::from(have) + e)
        + f64s(config.parameter_count() + e)
        + if answer {
            f64s(e) + admission::answer(e)
        } else {
            admission::answer(0)
        };
    let cost = |m: u128| admission::trainer(config, m).saturating_add(rest);
    let m = m as u128;
    let shrink = match admission::fit(limit, m, cost) {
        0 if cost(0) > limit => "train fewer epochs at once (the history and the answer \
                                 grow with them), or leave out the losses \
                                 (\"return_loss\": false)"
            .into(),
        0 => "not even one sample fits: use a network with fewer or narrower layers".into(),
        most => format!(
            "train on fewer samples (PUT a dataset of at most {most} samples), or use a \
             network with narrower layers"
        ),
    };
    Need::new(
        cost(m),
        format!(
            "a train of {epochs} epochs: {}",
            admission::activations_text(config, m)
        ),
        shrink,
    )
}

#[derive(Serialize)]
pub(super) struct TrainResponse {
    pub status: &'static str,
    pub epochs_run: u64,
    pub epochs_trained: usize,
    pub initial_loss: Option<f64>,
    pub final_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<Vec<f64>>,
}

/// How a run ended, as a train response's `status` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunStatus {
    Completed,
    Diverged,
    /// `--train-time-limit-secs` (or `--job-time-limit-secs`) ran out.
    TimeLimit,
    /// Stopped on request: a cancel, a shutdown, a client that went away, a deleted session.
    Cancelled,
}

impl RunStatus {
    /// The train response's `status`: the same word as the job's.
    pub fn as_str(self) -> &'static str {
        self.job_status().as_str()
    }

    pub fn job_status(self) -> JobStatus {
        match self {
            Self::Completed => JobStatus::Completed,
            Self::Diverged => JobStatus::Diverged,
            Self::TimeLimit => JobStatus::TimeLimit,
            Self::Cancelled => JobStatus::Cancelled,
        }
    }
}

/// The number of epochs a train request asks for, checked against `--max-epochs`.
pub(super) fn requested_epochs(state: &AppState, req: &TrainRequest) -> ApiResult<u64> {
    let max_epochs = state.config().max_epochs;
    let Int(requested) = req.epochs;
    u64::try_from(requested)
        .ok()
        .filter(|e| (1..=max_epochs).contains(e))
        .ok_or_else(|| {
            ApiError::InvalidValue(format!(
                "epochs is {requested}; it takes an integer from 1 to {max_epochs}"
            ))
        })
}

/// Whether `epochs` more can train on this state of session `id`: it has a dataset, and its
/// history has room (checked again when the run gets its turn: earlier trains may fill it).
pub(super) fn check_trainable(
    state: &AppState,
    id: &str,
    s: &Session,
    epochs: u64,
) -> ApiResult<()> {
    if s.dataset.is_none() {
        return Err(ApiError::no_dataset(id, "training"));
    }
    let have = s.history.len() as u64;
    let max_history = state.config().max_history;
    if have.saturating_add(epochs) > max_history {
        return Err(ApiError::TooLarge(format!(
            "this session's history has {have} of at most {max_history} entries \
             (--max-history), so {epochs} more epochs do not fit; train at most {} more, \
             or PUT /sessions/{id}/weights (e.g. with its current weights) to start a new history",
            max_history - have
        )));
    }
    Ok(())
}

/// The memory a run of `epochs` epochs on this state of the session holds (see
/// [`train_need`]).
pub(super) fn run_need(state: &AppState, s: &Session, epochs: u64, return_loss: bool) -> Need {
    let samples = s.dataset.as_ref().map_or(0, |d| d.data.samples());
    train_need(
        u128::from(state.budget().per_request()),
        s.net.config(),
        samples,
        s.history.len() as u64,
        epochs,
        return_loss,
    )
}

/// A run's settings besides the session's turn.
pub(super) struct Run {
    pub epochs: u64,
    /// Running time allowed (waiting for the turn or a worker does not count).
    pub limit: Duration,
    /// Commit every this long and keep going (background trains); `None`: one commit at the
    /// end (a waiting train, which a crash leaves as if it never ran).
    pub checkpoint: Option<Duration>,
    /// Stops the run at the next epoch boundary, with status `cancelled`.
    pub cancel: Arc<AtomicBool>,
    /// A background train's live state: progress is published to it, and each commit
    /// carries its word to the job's record.
    pub live: Option<Arc<LiveJob>>,
    /// Whose run it is: its key's share of the workers, and its memory reservation.
    pub caller: Caller,
    /// The memory a segment holds, reserved before it runs (see [`train_need`]).
    pub need: Need,
}

/// What a run did, committed.
pub(super) struct Ran {
    pub session: Arc<Session>,
    pub epochs_run: u64,
    pub status: RunStatus,
    /// The history's length before the run: its losses follow.
    pub from: usize,
}

/// Why a run's control hook stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    Cancel,
    TimeLimit,
    Checkpoint,
}

/// One train on the session whose turn `change` holds: the path waiting and background
/// trains share. The CPU work goes through `state.compute` (so it takes a worker like any
/// computation), in segments of `run.checkpoint` for background trains, each committed with
/// its weights and losses before the next; the last commit ends the turn.
pub(super) async fn run_train(
    state: &AppState,
    mut change: Change,
    run: Run,
    queued: QueuedTraining,
) -> ApiResult<Ran> {
    let snapshot = change.snapshot();
    let Some(dataset) = snapshot.dataset.clone() else {
        return Err(ApiError::Internal("a run without a dataset".into()));
    };
    let from = snapshot.history.len();
    let mut queued = Some(queued);
    let mut running: Option<RunningTraining> = None;
    let mut net: Option<Network> = None;
    let mut trainer: Option<Trainer> = None;
    let mut done = 0u64;
    let mut spent = Duration::ZERO;
    loop {
        let left = run.limit.saturating_sub(spent);
        let segment = run.checkpoint.map_or(left, |c| c.min(left));
        let (first, remaining) = (done, run.epochs - done);
        let (server, data, start) = (state.clone(), dataset.clone(), snapshot.clone());
        let (cancel, live) = (run.cancel.clone(), run.live.clone());
        let (was_queued, was_running) = (queued.take(), running.take());
        let (was_net, was_trainer) = (net.take(), trainer.take());
        let step = state
            .compute(
                &run.caller,
                Some((Part::Work, run.need.clone())),
                move || {
                    let first_segment = was_running.is_none();
                    let counted = match (was_running, was_queued) {
                        (Some(r), _) => r,
                        (None, Some(q)) => q.start(),
                        (None, None) => QueuedTraining::enter().start(),
                    };
                    let began = Instant::now();
                    let (deadline, segment_end) = (began + left, began + segment);
                    // The only copy a train makes: the weights it updates.
                    let mut net = was_net.unwrap_or_else(|| (*start.net).clone());
                    // Every core when no other job holds a worker (chosen again each segment);
                    // the same bits whatever the count.
                    let threads = server.train_threads();
                    if first_segment {
                        counted.threads(threads);
                    }
                    let mut trainer = was_trainer
                        .unwrap_or_else(|| Trainer::new(&net, &data.data))
                        .with_threads(threads);
                    let mut losses = Vec::new();
                    let mut halt = None;
                    let mut publish_at = began;
                    let outcome = trainer.run(&mut net, &data.data, remaining, &mut losses, |b| {
                        if cancel.load(Ordering::Relaxed)
                            || server.is_stopping()
                            || live.as_ref().is_some_and(|l| l.is_cancelled())
                        {
                            halt = Some(Halt::Cancel);
                            return Control::Stop;
                        }
                        let now = Instant::now();
                        if now >= deadline {
                            halt = Some(Halt::TimeLimit);
                            return Control::Stop;
                        }
                        if now >= segment_end {
                            halt = Some(Halt::Checkpoint);
                            return Control::Stop;
                        }
                        if let Some(l) = &live
                            && now >= publish_at
                        {
                            l.progress(first + b.epoch, b.loss);
                            publish_at = now + PUBLISH_EVERY;
                        }
                        Control::Continue
                    });
                    counted.epochs(outcome.epochs_run);
                    let took = began.elapsed();
                    (net, trainer, losses, outcome, halt, counted, took)
                },
            )
            .await?;
        let (trained, kept_trainer, losses, outcome, halt, counted, took) = step;
        spent += took;
        done += outcome.epochs_run;
        let last = losses.last().copied();
        if let (Some(l), Some(loss)) = (&run.live, last) {
            // The last epoch of every segment is published, whatever the throttle skipped.
            l.progress(done, loss);
        }
        let job = run.live.as_ref().map(|l| JobCommit {
            id: l.job().id,
            epochs_done: done,
            last_loss: last.or_else(|| l.job().last_loss),
        });
        let status = match (outcome.status, halt) {
            (TrainStatus::Completed, _) => RunStatus::Completed,
            (TrainStatus::Diverged, _) => RunStatus::Diverged,
            (TrainStatus::Stopped, Some(Halt::Checkpoint)) => {
                let s = change
                    .checkpoint(trained.clone(), losses, outcome.start_loss, job)
                    .await?;
                if let Some(l) = &run.live {
                    l.update(|j| committed(j, done, &s));
                }
                (net, trainer, running) = (Some(trained), Some(kept_trainer), Some(counted));
                continue;
            }
            (TrainStatus::Stopped, Some(Halt::TimeLimit)) => RunStatus::TimeLimit,
            (TrainStatus::Stopped, _) => RunStatus::Cancelled,
        };
        let session = change
            .record_train(trained, losses, outcome.start_loss, job)
            .await?;
        if let Some(l) = &run.live {
            l.update(|j| committed(j, done, &session));
        }
        drop(counted);
        return Ok(Ran {
            session,
            epochs_run: done,
            status,
            from,
        });
    }
}

/// A job's record after a commit of `done` epochs left the session `s`.
fn committed(job: &mut Job, done: u64, s: &Session) {
    job.epochs_done = done;
    if done > 0 {
        job.last_loss = s.history.last();
    }
    job.epochs_trained = s.history.len() as u64;
    job.initial_loss = s.initial_loss;
    job.final_loss = s.history.last();
}

async fn train(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TrainRequest>,
) -> ApiResult<Response> {
    let entry = state.session(&caller, &id).await?;
    let epochs = requested_epochs(&state, &req)?;
    if req.wait == Some(false) {
        let return_loss = req.return_loss.unwrap_or(true);
        return super::jobs::submit(state, caller, entry, epochs, return_loss).await;
    }
    let return_loss = req.return_loss.unwrap_or(true);
    let queued = QueuedTraining::enter();
    // Trains on one session run one at a time, in arrival order (across replicas too);
    // waiting holds no worker.
    let change = state.store().lock(&entry).await?;
    let snapshot = change.snapshot();
    check_trainable(&state, &id, &snapshot, epochs)?;
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let run = Run {
        epochs,
        limit: state.train_time_limit(),
        checkpoint: None,
        cancel: cancel.0.clone(),
        live: None,
        caller: caller.clone(),
        need: run_need(&state, &snapshot, epochs, return_loss),
    };
    // The run and its commit are a task of their own: a client that goes away stops the
    // run at the next epoch boundary (the flag), and what was done is still kept. Its turn
    // on the session is held; it waits for its key's share of the workers and a worker
    // without holding either, then reserves the run's memory.
    let server = state.clone();
    let ran = tokio::spawn(async move { run_train(&server, change, run, queued).await })
        .await
        .map_err(|e| ApiError::Internal(format!("a train failed: {e}")))??;
    drop(cancel);
    let Ran {
        session: s,
        epochs_run,
        status,
        from,
    } = ran;
    let numbers = if return_loss {
        s.history.len() - from
    } else {
        0
    };
    state
        .json(&caller, numbers, move || {
            serde_json::to_vec(&TrainResponse {
                status: status.as_str(),
                epochs_run,
                epochs_trained: s.history.len(),
                initial_loss: s.initial_loss,
                final_loss: s.history.last(),
                loss: return_loss.then(|| s.history.page(from, s.history.len())),
            })
        })
        .await
}

#[derive(PartialEq)]
enum LossFormat {
    Json,
    Csv,
    Text,
}

#[derive(Serialize)]
struct LossPage<'a> {
    initial_loss: Option<f64>,
    loss: &'a [f64],
    offset: u64,
    total: usize,
}

async fn loss(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: QueryParams,
) -> ApiResult<Response> {
    let entry = state.session(&caller, &id).await?;
    let format = match q.get("format") {
        None | Some("json") => LossFormat::Json,
        Some("csv") => LossFormat::Csv,
        Some("text") => LossFormat::Text,
        Some(other) => {
            return Err(ApiError::InvalidRequest(format!(
                "format={other:?} is not a format; use format=json (the default), format=csv \
                 or format=text (the notebook's own lines)"
            )));
        }
    };
    let offset = q.int("offset", 0, i64::MAX as u64)?.unwrap_or(0);
    let max_limit = state.config().max_history.max(1);
    let limit = q.int("limit", 1, max_limit)?.unwrap_or(max_limit);
    let s = entry.snapshot();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(s.history.len());
    let end = start
        .saturating_add(usize::try_from(limit).unwrap_or(usize::MAX))
        .min(s.history.len());
    // The page copied out, and its text: JSON numbers, or CSV and text lines (at most 52
    // bytes each, in a buffer that may double once past the 48 a line it starts with).
    let n = (end - start) as u128;
    let text = match format {
        LossFormat::Json => admission::answer(n),
        _ => 3 * 52 * n + 1024,
    };
    caller.need(
        Part::Work,
        Need::new(
            f64s(n) + text,
            format!("a page of {n} losses"),
            "ask for a smaller page (?offset=&limit=)",
        ),
    )?;
    // The page is copied out of the history where it is written: on a worker when long.
    let history = s.history.clone();
    if format != LossFormat::Json {
        // Text is the notebook's `print(f'iteration: {iterations+1}, loss: {...}')`, and
        // f'{x}' of a float is Python's repr; CSV's numbers are serde_json's, the shortest
        // text that reads back as the same f64.
        let text = format == LossFormat::Text;
        let write = move || {
            let page = history.page(start, end);
            let mut out = String::with_capacity(16 + page.len() * 48);
            if !text {
                out.push_str("epoch,loss\n");
            }
            for (i, v) in page.iter().enumerate() {
                let k = start + i + 1;
                if text {
                    out.push_str(&format!("iteration: {k}, loss: {}\n", python_repr(*v)));
                } else {
                    let v = serde_json::to_string(v).unwrap_or_default();
                    out.push_str(&format!("{k},{v}\n"));
                }
            }
            out
        };
        let out = if end - start > LOSS_INLINE_MAX {
            state.compute(&caller, None, write).await?
        } else {
            write()
        };
        let content_type = if text {
            "text/plain; charset=utf-8"
        } else {
            "text/csv; charset=utf-8"
        };
        return Ok(([(header::CONTENT_TYPE, content_type)], out).into_response());
    }
    let total = s.history.len();
    let initial_loss = s.initial_loss;
    state
        .json(&caller, end - start, move || {
            serde_json::to_vec(&LossPage {
                initial_loss,
                loss: &history.page(start, end),
                offset,
                total,
            })
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    x: Option<Samples>,
    y: Option<LabelsWire>,
}

#[derive(Serialize)]
struct PredictResponse<'a> {
    probabilities: Rows<'a>,
    classes: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<f64>,
}

/// Multiply-adds of one forward pass over `m` samples.
fn work(session: &Session, m: usize) -> u128 {
    session.net.config().parameter_count() * m as u128
}

/// A batch route's memory for `m` samples, `cost(m)`, with the hint of how many fit.
pub(in crate::api) fn batch_need(
    state: &AppState,
    config: &NetConfig,
    m: usize,
    what: &str,
    cost: impl Fn(u128) -> u128,
) -> Need {
    let limit = u128::from(state.budget().per_request());
    let m = m as u128;
    Need::new(
        cost(m),
        format!("{what}: {}", admission::activations_text(config, m)),
        admission::shrink_samples(limit, m, &cost),
    )
}

/// A forward pass over `m` samples: the labels as a matrix (when given), the pass's
/// buffers, the classes, and the answer (`n_out` probabilities and a class per sample).
fn predict_cost(config: &NetConfig, labels: bool, m: u128) -> u128 {
    let n_out = config.n_out() as u128;
    let y = if labels { f64s(m * n_out) } else { 0 };
    y + admission::forward(config, m) + f64s(m) + admission::answer(m * (n_out + 1))
}

async fn predict(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<BatchRequest>,
) -> ApiResult<Response> {
    let entry = state.session(&caller, &id).await?;
    let s = entry.snapshot();
    let (n_in, n_out) = (s.net.config().n_in(), s.net.config().n_out());
    let Some(x) = req.x else {
        return Err(ApiError::InvalidRequest(
            "predict needs x: the samples to classify".into(),
        ));
    };
    let m = x.0.as_ref().map_or(0, |samples| samples.len());
    check_sample_count(&state, m)?;
    let labels = req.y.is_some();
    let config = s.net.config().clone();
    let need = batch_need(&state, &config, m, "a prediction", |m| {
        predict_cost(&config, labels, m)
    });
    let heavy = work(&s, m) > COMPUTE_INLINE_MAX;
    let st = state.clone();
    let run = move || -> ApiResult<Response> {
        let prediction = match req.y {
            Some(y) => {
                let data = inline_dataset(&st, x, y, n_in, n_out)?;
                nn::predict(&s.net, data.x(), Some(data.y()))?
            }
            None => {
                let samples = x.0?;
                check_sample_count(&st, samples.len())?;
                if let Some(hint) = bare_sample_hint(&samples, n_in) {
                    return Err(hint.into());
                }
                let x = samples.into_matrix(n_in)?;
                nn::predict(&s.net, &x, None)?
            }
        };
        Ok(Json(PredictResponse {
            probabilities: Rows(prediction.probabilities.view()),
            classes: &prediction.classes,
            loss: prediction.loss,
            accuracy: prediction.accuracy,
        })
        .into_response())
    };
    if heavy {
        state
            .compute(&caller, Some((Part::Work, need)), run)
            .await?
    } else {
        caller.need(Part::Work, need)?;
        run()
    }
}

#[derive(Serialize)]
struct GradientsResponse<'a> {
    loss: f64,
    weights: Matrices<'a>,
    biases: Vectors<'a>,
}

/// One forward and backward pass over `m` samples: a batch's label matrix, the pass's
/// buffers (its gradients among them), and the gradients as JSON.
fn gradients_cost(config: &NetConfig, batch: bool, m: u128) -> u128 {
    let y = if batch {
        f64s(m * config.n_out() as u128)
    } else {
        0
    };
    y + admission::pass(config, m, false) + admission::answer(config.parameter_count())
}

async fn gradients(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<BatchRequest>,
) -> ApiResult<Response> {
    let entry = state.session(&caller, &id).await?;
    let s = entry.snapshot();
    let (n_in, n_out) = (s.net.config().n_in(), s.net.config().n_out());
    let batch = match req {
        None => None,
        Some(r) => optional_batch(r.x, r.y, "a gradient")?,
    };
    let m = match &batch {
        Some((x, _)) => x.0.as_ref().map_or(0, |samples| samples.len()),
        None => s.dataset.as_ref().map_or(0, |d| d.data.samples()),
    };
    let stored = match batch {
        Some(_) => None,
        None => Some(
            s.dataset
                .clone()
                .ok_or_else(|| ApiError::no_dataset(&id, "a gradient"))?,
        ),
    };
    check_sample_count(&state, m)?;
    let config = s.net.config().clone();
    let inline = stored.is_none();
    let need = batch_need(&state, &config, m, "a gradient", |m| {
        gradients_cost(&config, inline, m)
    });
    let heavy = work(&s, m) > COMPUTE_INLINE_MAX;
    let st = state.clone();
    let run = move || -> ApiResult<Response> {
        let inline: Dataset;
        let data = match (&stored, batch) {
            (Some(d), _) => &d.data,
            (None, Some((x, y))) => {
                inline = inline_dataset(&st, x, y, n_in, n_out)?;
                &inline
            }
            (None, None) => return Err(ApiError::Internal("no batch and no dataset".into())),
        };
        let g = nn::gradients(&s.net, data)?;
        Ok(Json(GradientsResponse {
            loss: g.loss,
            weights: Matrices(&g.weights),
            biases: Vectors(g.biases.as_deref()),
        })
        .into_response())
    };
    if heavy {
        state
            .compute(&caller, Some((Part::Work, need)), run)
            .await?
    } else {
        caller.need(Part::Work, need)?;
        run()
    }
}
