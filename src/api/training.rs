//! Computing on a session: train, the loss history, predict, gradients.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::{ApiJson, OptionalJson, QueryParams};
use super::sessions::{check_sample_count, inline_dataset};
use super::wire::{
    Int, LabelsWire, Matrices, Rows, Samples, Vectors, bare_sample_hint, python_repr,
};
use crate::error::{ApiError, ApiResult};
use crate::nn::{self, Control, Dataset, TrainStatus, Trainer};
use crate::store::Session;
use crate::telemetry::QueuedTraining;

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
struct TrainRequest {
    epochs: Int,
    return_loss: Option<bool>,
}

#[derive(Serialize)]
struct TrainResponse {
    status: &'static str,
    epochs_run: u64,
    epochs_trained: usize,
    initial_loss: Option<f64>,
    final_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss: Option<Vec<f64>>,
}

async fn train(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TrainRequest>,
) -> ApiResult<Response> {
    let entry = state.store().get(&id).await?;
    let max_epochs = state.config().max_epochs;
    let Int(requested) = req.epochs;
    let epochs = u64::try_from(requested)
        .ok()
        .filter(|e| (1..=max_epochs).contains(e))
        .ok_or_else(|| {
            ApiError::InvalidValue(format!(
                "epochs is {requested}; it takes an integer from 1 to {max_epochs}"
            ))
        })?;
    let return_loss = req.return_loss.unwrap_or(true);
    let queued = QueuedTraining::enter();
    // Trains on one session run one at a time, in arrival order (across replicas too);
    // waiting holds no worker.
    let change = state.store().lock(&entry).await?;
    let snapshot = change.snapshot();
    let dataset = snapshot
        .dataset
        .clone()
        .ok_or_else(|| ApiError::no_dataset(&id, "training"))?;
    let have = snapshot.history.len() as u64;
    let max_history = state.config().max_history;
    if have.saturating_add(epochs) > max_history {
        return Err(ApiError::TooLarge(format!(
            "this session's history has {have} of at most {max_history} entries \
             (--max-history), so {epochs} more epochs do not fit; train at most {} more, \
             or PUT /sessions/{id}/weights (e.g. with its current weights) to start a new history",
            max_history - have
        )));
    }
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let cancelled = cancel.0.clone();
    let limit = state.train_time_limit();
    let server = state.clone();
    // The run and its commit are a task of their own: a client that goes away stops the
    // run at the next epoch boundary (the flag), and what was done is still kept.
    let run = tokio::spawn(async move {
        let worker = server.clone();
        let (net, losses, outcome) = worker
            .compute(move || {
                let running = queued.start();
                let deadline = Instant::now() + limit;
                // The only copy a train makes: the weights it updates.
                let mut net = (*snapshot.net).clone();
                let mut losses = Vec::new();
                let threads = server.train_threads();
                running.threads(threads);
                let mut trainer = Trainer::new(&net, &dataset.data).with_threads(threads);
                let outcome = trainer.run(&mut net, &dataset.data, epochs, &mut losses, |_| {
                    if cancelled.load(Ordering::Relaxed)
                        || server.is_stopping()
                        || Instant::now() >= deadline
                    {
                        Control::Stop
                    } else {
                        Control::Continue
                    }
                });
                running.epochs(outcome.epochs_run);
                (net, losses, outcome)
            })
            .await?;
        let s = change.record_train(net, losses, outcome.start_loss).await?;
        ApiResult::Ok((s, outcome))
    });
    let (s, outcome) = run
        .await
        .map_err(|e| ApiError::Internal(format!("a train failed: {e}")))??;
    drop(cancel);
    let have = usize::try_from(have).unwrap_or(usize::MAX);
    let numbers = if return_loss {
        s.history.len() - have
    } else {
        0
    };
    state
        .json(numbers, move || {
            serde_json::to_vec(&TrainResponse {
                status: match outcome.status {
                    TrainStatus::Completed => "completed",
                    TrainStatus::Diverged => "diverged",
                    TrainStatus::Stopped => "time_limit",
                },
                epochs_run: outcome.epochs_run,
                epochs_trained: s.history.len(),
                initial_loss: s.initial_loss,
                final_loss: s.history.last(),
                loss: return_loss.then(|| s.history.page(have, s.history.len())),
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
    Path(id): Path<String>,
    q: QueryParams,
) -> ApiResult<Response> {
    let entry = state.store().get(&id).await?;
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
            state.compute(write).await?
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
        .json(end - start, move || {
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

async fn predict(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<BatchRequest>,
) -> ApiResult<Response> {
    let entry = state.store().get(&id).await?;
    let s = entry.snapshot();
    let (n_in, n_out) = (s.net.config().n_in(), s.net.config().n_out());
    let Some(x) = req.x else {
        return Err(ApiError::InvalidRequest(
            "predict needs x: the samples to classify".into(),
        ));
    };
    let m = x.0.as_ref().map_or(0, |samples| samples.len());
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
        state.compute(run).await?
    } else {
        run()
    }
}

#[derive(Serialize)]
struct GradientsResponse<'a> {
    loss: f64,
    weights: Matrices<'a>,
    biases: Vectors<'a>,
}

async fn gradients(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<BatchRequest>,
) -> ApiResult<Response> {
    let entry = state.store().get(&id).await?;
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
        state.compute(run).await?
    } else {
        run()
    }
}
