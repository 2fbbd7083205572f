//! Looking inside one pass: `POST /sessions/{id}/gradcheck` (analytic against finite
//! differences) and `POST /sessions/{id}/trace` (every intermediate of a forward and
//! backward pass). Neither changes the session.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use ndarray::Ix1;
use serde::{Deserialize, Serialize};

use crate::admission::{self, Part, f64s};
use crate::api::extract::{OptionalJson, RequestBody};
use crate::api::sessions::inline_dataset;
use crate::api::training::{batch_need, optional_batch};
use crate::api::wire::{LabelsWire, Rows, Samples, Vector};
use crate::api::{AppState, Caller};
use crate::error::{ApiError, ApiResult};
use crate::nn::{self, Dataset, gradcheck as numeric};

/// A trace's answer holds every intermediate for every sample; this keeps it readable.
pub const TRACE_MAX_SAMPLES: usize = 64;

/// Traces below this many multiply-adds run inline; above, on a worker.
const COMPUTE_INLINE_MAX: u128 = 200_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradcheckRequest {
    h: Option<f64>,
}

#[derive(Serialize)]
pub struct GradcheckResponse {
    h: f64,
    layers: Vec<LayerCheckOut>,
}

#[derive(Serialize)]
struct LayerCheckOut {
    rel_error: f64,
    near_kink: u64,
}

impl RequestBody for GradcheckRequest {}
impl RequestBody for TraceRequest {}

pub async fn gradcheck(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<GradcheckRequest>,
) -> ApiResult<Json<GradcheckResponse>> {
    let entry = state.session(&caller, &id).await?;
    let h = req.and_then(|r| r.h).unwrap_or(numeric::DEFAULT_H);
    if !(h.is_finite() && h > 0.0 && h <= 1.0) {
        return Err(ApiError::InvalidValue(format!(
            "h is {h}; the finite-difference step must be a number > 0 and <= 1 (default {})",
            numeric::DEFAULT_H
        )));
    }
    let s = entry.snapshot();
    let data = s
        .dataset
        .clone()
        .ok_or_else(|| ApiError::no_dataset(&id, "a gradient check"))?;
    let cost = numeric::work(s.net.config(), data.data.samples());
    if cost > numeric::MAX_WORK {
        return Err(ApiError::TooLarge(format!(
            "a gradient check of layers {:?} ({} parameters) on {} samples costs about {cost} \
             multiply-adds (2 * parameters * samples * parameters); this server does at most \
             {}: check a smaller network, or PUT a smaller dataset on a fork of this session",
            s.net.config().layers,
            s.net.config().parameter_count(),
            data.data.samples(),
            numeric::MAX_WORK
        )));
    }
    // The analytic pass, one finite-difference pass at a time, the ReLU inputs counted layer
    // by layer (the input and one layer's pre-activations), and the probed copy's weights.
    let config = s.net.config().clone();
    let widest = config.layers.iter().copied().max().unwrap_or(0) as u128;
    let need = batch_need(
        &state,
        &config,
        data.data.samples(),
        "a gradient check",
        |m| {
            2 * admission::pass(&config, m, false)
                + f64s(m * 3 * widest)
                + 2 * f64s(config.parameter_count())
        },
    );
    let checks = state
        .compute(&caller, Some((Part::Work, need)), move || {
            numeric::gradcheck(&s.net, &data.data, h)
        })
        .await??;
    Ok(Json(GradcheckResponse {
        h,
        layers: checks
            .into_iter()
            .map(|c| LayerCheckOut {
                rel_error: c.rel_error,
                near_kink: c.near_kink,
            })
            .collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    x: Option<Samples>,
    y: Option<LabelsWire>,
}

#[derive(Serialize)]
struct TraceResponse<'a> {
    layers: Vec<LayerOut<'a>>,
    probabilities: Rows<'a>,
    loss: f64,
}

#[derive(Serialize)]
struct LayerOut<'a> {
    input: Rows<'a>,
    pre_activation: Rows<'a>,
    activation: Rows<'a>,
    upstream_gradient: Rows<'a>,
    local_gradient: Rows<'a>,
    weight_gradient: Rows<'a>,
    bias_gradient: Option<Vector<ndarray::iter::Iter<'a, f64, Ix1>>>,
}

/// A trace over `m` samples: the recording pass, the copies each layer's trace makes
/// (its input, activation and local gradient; the probabilities), a batch's label matrix,
/// and the answer holding all of it with the weight gradients.
fn trace_cost(config: &crate::nn::NetConfig, m: u128) -> u128 {
    let layers: u128 = config
        .shapes()
        .map(|(o, i)| m * (i as u128 + 4 * o as u128) + o as u128 * (i as u128 + 1))
        .sum();
    let n_out = config.n_out() as u128;
    admission::pass(config, m, true)
        + f64s(layers + 2 * m * n_out)
        + admission::answer(layers + m * n_out)
}

pub async fn trace(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(req): OptionalJson<TraceRequest>,
) -> ApiResult<Response> {
    let entry = state.session(&caller, &id).await?;
    let s = entry.snapshot();
    let (n_in, n_out) = (s.net.config().n_in(), s.net.config().n_out());
    let batch = match req {
        None => None,
        Some(r) => optional_batch(r.x, r.y, "a trace")?,
    };
    let stored = match &batch {
        Some((x, _)) => {
            let m = x.0.as_ref().map_or(0, |samples| samples.len());
            if m > TRACE_MAX_SAMPLES {
                return Err(ApiError::TooLarge(format!(
                    "x has {m} samples; a trace takes at most {TRACE_MAX_SAMPLES} \
                     (it answers with every intermediate of every sample): send fewer"
                )));
            }
            None
        }
        None => {
            let d = s
                .dataset
                .clone()
                .ok_or_else(|| ApiError::no_dataset(&id, "a trace"))?;
            let m = d.data.samples();
            if m > TRACE_MAX_SAMPLES {
                return Err(ApiError::TooLarge(format!(
                    "the session's dataset has {m} samples; a trace takes at most \
                     {TRACE_MAX_SAMPLES}: send a batch of at most {TRACE_MAX_SAMPLES} samples \
                     as {{\"x\": [...], \"y\": [...]}}"
                )));
            }
            Some(d)
        }
    };
    let m = match (&batch, &stored) {
        (Some((x, _)), _) => x.0.as_ref().map_or(0, |samples| samples.len()),
        (None, Some(d)) => d.data.samples(),
        (None, None) => 0,
    };
    let config = s.net.config().clone();
    let need = batch_need(&state, &config, m, "a trace", |m| trace_cost(&config, m));
    let heavy = s.net.config().parameter_count() * TRACE_MAX_SAMPLES as u128 > COMPUTE_INLINE_MAX;
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
        let t = nn::trace(&s.net, data)?;
        let layers = t
            .layers
            .iter()
            .map(|l| LayerOut {
                input: Rows(l.input.view()),
                pre_activation: Rows(l.pre_activation.view()),
                activation: Rows(l.activation.view()),
                upstream_gradient: Rows(l.upstream_gradient.view()),
                local_gradient: Rows(l.local_gradient.view()),
                weight_gradient: Rows(l.weight_gradient.view()),
                bias_gradient: l.bias_gradient.as_ref().map(|b| Vector(b.iter())),
            })
            .collect();
        Ok(Json(TraceResponse {
            layers,
            probabilities: Rows(t.probabilities.view()),
            loss: t.loss,
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
