//! Whole sessions as documents: `GET /sessions/{id}/export`, `POST /sessions/import`, and
//! `POST /sessions/{id}/fork`.
//!
//! The document holds everything training depends on, exactly: the settings, the weights,
//! the dataset as the `(M, n_in)` and `(M, n_out)` matrices the core trains on, and the
//! history. Every f64 survives the JSON round trip bit for bit, so an imported session
//! trains on exactly as the original would. A built-in dataset is re-attached by name.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::admission::{self, Need, Part, f64s};
use crate::api::datasets::unknown_builtin;
use crate::api::extract::{ApiJson, RequestBody, read_body};
use crate::api::sessions::{
    build_need, check_sample_count, check_trainable, inline_dataset, net_config, owner,
    session_json,
};
use crate::api::wire::{
    ActivationWire, History, Int, LabelsWire, Matrices, MethodWire, Object, ReductionWire, Rows,
    Samples, Vectors, words,
};
use crate::api::{AppState, Caller};
use crate::datasets::{StoredDataset, builtin};
use crate::error::{ApiError, ApiResult};
use crate::nn::{Dataset, Init, Labels, NetConfig, Network, SampleSetBuilder};
use crate::store::{self, Entry, InitEcho, Session};

/// The document's `format`; a later, incompatible layout gets a new name.
pub const FORMAT: &str = "backprop-server/session-v1";

/// Sessions with more numbers than this are copied and written on a worker.
const INLINE_MAX: usize = 200_000;

/// The core's limit on how deeply a sample may nest.
const SAMPLE_DEPTH_MAX: usize = 8;

#[derive(Serialize)]
struct ExportDoc<'a> {
    format: &'static str,
    layers: &'a [usize],
    activation: &'static str,
    learning_rate: f64,
    grad_reduction: &'static str,
    bias: bool,
    init: InitOut,
    weights: Matrices<'a>,
    biases: Vectors<'a>,
    dataset: Option<DatasetOut<'a>>,
    loss: &'a [f64],
    initial_loss: Option<f64>,
}

#[derive(Serialize)]
struct InitOut {
    method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u32>,
}

#[derive(Serialize)]
struct DatasetOut<'a> {
    builtin: Option<&'static str>,
    sample_shape: &'a [usize],
    x: Rows<'a>,
    y: Rows<'a>,
}

/// Numbers a session holds: parameters, data and history.
fn size(s: &Session) -> usize {
    let data = s.dataset.as_ref().map_or(0, |d| {
        d.data.samples() * (d.data.features() + d.data.classes())
    });
    usize::try_from(s.net.config().parameter_count()).unwrap_or(usize::MAX) + data + s.history.len()
}

fn document(s: &Session) -> ApiResult<Vec<u8>> {
    let history = s.history.to_vec();
    let c = s.net.config();
    let p = s.net.params();
    let doc = ExportDoc {
        format: FORMAT,
        layers: &c.layers,
        activation: c.activation.name(),
        learning_rate: c.learning_rate,
        grad_reduction: c.grad_reduction.name(),
        bias: c.bias,
        init: InitOut {
            method: s.init.method,
            seed: s.init.seed,
        },
        weights: Matrices(&p.weights),
        biases: Vectors(p.biases.as_deref()),
        dataset: s.dataset.as_deref().map(|d| DatasetOut {
            builtin: d.builtin,
            sample_shape: d.data.sample_shape(),
            x: Rows(d.data.x().view()),
            y: Rows(d.data.y().view()),
        }),
        loss: &history,
        initial_loss: s.initial_loss,
    };
    serde_json::to_vec(&doc).map_err(|e| ApiError::Internal(format!("writing an export: {e}")))
}

/// The numbers a session's copy (for the database, or a fork) holds.
fn numbers(s: &Session) -> u128 {
    size(s) as u128
}

pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let entry = state.session(&caller, &id).await?;
    let s = entry.snapshot();
    // The history copied out, and the document's text.
    let need = Need::new(
        f64s(s.history.len() as u128) + admission::answer(numbers(&s)),
        format!(
            "the export document ({} numbers: weights, dataset, history)",
            numbers(&s)
        ),
        "nothing smaller can be exported: GET the weights and the loss pages on their own",
    );
    let bytes = if size(&s) > INLINE_MAX {
        state
            .compute(&caller, Some((Part::Work, need)), move || document(&s))
            .await??
    } else {
        caller.need(Part::Work, need)?;
        document(&s)?
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

words! {
    enum FormatWire {
        V1 = "backprop-server/session-v1",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitDoc {
    method: MethodWire,
    seed: Option<Int>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetDoc {
    builtin: Option<String>,
    sample_shape: Option<Vec<Int>>,
    x: Option<Samples>,
    y: Option<LabelsWire>,
}

impl RequestBody for ImportDoc {}

/// An export document. Only `format`, `layers` and `weights` are required; the settings
/// default as on `POST /sessions`, the rest to "none yet".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportDoc {
    /// Its one variant is checked by parsing; nothing else reads it.
    #[serde(rename = "format")]
    _format: FormatWire,
    layers: Vec<Int>,
    activation: Option<ActivationWire>,
    learning_rate: Option<f64>,
    grad_reduction: Option<ReductionWire>,
    bias: Option<bool>,
    init: Option<Object<InitDoc>>,
    weights: Vec<Vec<Vec<f64>>>,
    biases: Option<Vec<Vec<f64>>>,
    dataset: Option<Object<DatasetDoc>>,
    loss: Option<History>,
    initial_loss: Option<f64>,
}

/// The settings, checked as `POST /sessions` checks them.
fn config(doc: &ImportDoc, max_parameters: u64) -> ApiResult<NetConfig> {
    net_config(
        &doc.layers,
        doc.activation,
        doc.learning_rate,
        doc.grad_reduction,
        doc.bias,
        max_parameters,
    )
}

/// The init echo: only reported, since the weights in the document are what counts.
fn init_echo(init: Option<&InitDoc>) -> ApiResult<InitEcho> {
    let Some(init) = init else {
        return Ok(InitEcho {
            method: "explicit",
            seed: None,
        });
    };
    let method = match init.method {
        MethodWire::NumpyRand => "numpy_rand",
        MethodWire::Xavier => "xavier",
        MethodWire::He => "he",
        MethodWire::Explicit => {
            if init.seed.is_some() {
                return Err(ApiError::InvalidRequest(
                    "init.seed does not go with method \"explicit\"; send {\"method\": \
                     \"explicit\"}"
                        .into(),
                ));
            }
            return Ok(InitEcho {
                method: "explicit",
                seed: None,
            });
        }
    };
    let Some(seed) = init.seed else {
        return Err(ApiError::InvalidRequest(format!(
            "init.seed is missing; method {method:?} was seeded, so the document names the seed"
        )));
    };
    let seed = crate::api::sessions::seed(seed)?;
    Ok(InitEcho {
        method,
        seed: Some(seed),
    })
}

fn too_long_history(n: usize, max: u64) -> ApiError {
    ApiError::TooLarge(format!(
        "loss has {n} entries; a session's history holds at most {max} (--max-history)"
    ))
}

fn check_loss(name: &str, v: f64) -> ApiResult<f64> {
    if v.is_finite() && v >= 0.0 {
        // `+ 0.0` turns -0.0 into 0.0, as every loss is written.
        Ok(v + 0.0)
    } else {
        Err(ApiError::InvalidValue(format!(
            "{name} is {v}; a loss is a finite number >= 0"
        )))
    }
}

/// A sample shape whose entries multiply to `n_in`.
fn sample_shape(given: &[Int], n_in: usize) -> ApiResult<Vec<usize>> {
    if given.len() > SAMPLE_DEPTH_MAX {
        return Err(ApiError::ShapeMismatch(format!(
            "dataset.sample_shape has {} dimensions; samples nest at most {SAMPLE_DEPTH_MAX} deep",
            given.len()
        )));
    }
    let mut shape = Vec::with_capacity(given.len());
    for (i, &Int(d)) in given.iter().enumerate() {
        match usize::try_from(d) {
            Ok(d) if d >= 1 => shape.push(d),
            // Past usize: a product no input layer has.
            _ if d > 0 => shape.push(usize::MAX),
            _ => {
                return Err(ApiError::InvalidValue(format!(
                    "dataset.sample_shape[{i}] is {d}; every dimension must be at least 1"
                )));
            }
        }
    }
    let product = shape
        .iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .unwrap_or(usize::MAX);
    if product != n_in {
        return Err(ApiError::ShapeMismatch(format!(
            "dataset.sample_shape {shape:?} holds {product} values; the input layer takes {n_in}"
        )));
    }
    Ok(shape)
}

/// The same samples and labels, with each sample nested as `shape` (as it was first sent).
fn reshape(data: &Dataset, shape: &[usize]) -> ApiResult<Dataset> {
    fn emit(b: &mut SampleSetBuilder, values: &[f64], shape: &[usize]) {
        match shape.split_first() {
            None => values.iter().for_each(|&v| b.number(v)),
            Some((&n, inner)) => {
                b.open_list();
                for part in values.chunks(values.len() / n) {
                    emit(b, part, inner);
                }
                b.close_list();
            }
        }
    }
    let mut b = SampleSetBuilder::new(usize::MAX);
    for row in data.x().rows() {
        b.begin_sample();
        emit(&mut b, &row.to_vec(), shape);
        b.end_sample();
    }
    let labels = Labels::Rows(data.y().rows().into_iter().map(|r| r.to_vec()).collect());
    Ok(Dataset::new(
        b.finish()?,
        labels,
        data.features(),
        data.classes(),
    )?)
}

fn import_dataset(
    state: &AppState,
    d: DatasetDoc,
    n_in: usize,
    n_out: usize,
) -> ApiResult<Arc<StoredDataset>> {
    let shape = d
        .sample_shape
        .as_deref()
        .map(|s| sample_shape(s, n_in))
        .transpose()?;
    match (d.builtin, d.x, d.y) {
        (Some(name), x, y) => {
            let stored = builtin(&name)
                .ok_or_else(|| unknown_builtin(&name))?
                .for_network(n_in, n_out)?;
            match (x, y) {
                (None, None) => {}
                (Some(x), Some(y)) => {
                    let given = inline_dataset(state, x, y, n_in, n_out)?;
                    same_as_builtin(&given, &stored.data, &name)?;
                }
                _ => {
                    return Err(ApiError::InvalidRequest(
                        "dataset has only one of x and y; send both (they must then be the \
                         built-in dataset's) or neither"
                            .into(),
                    ));
                }
            }
            Ok(stored)
        }
        (None, Some(x), Some(y)) => {
            let mut data = inline_dataset(state, x, y, n_in, n_out)?;
            if let Some(shape) = shape.filter(|s| s.as_slice() != data.sample_shape()) {
                data = reshape(&data, &shape)?;
            }
            Ok(Arc::new(StoredDataset {
                data,
                builtin: None,
            }))
        }
        (None, Some(_), None) => Err(ApiError::InvalidRequest(
            "dataset.x was given without dataset.y; send labels y for every sample".into(),
        )),
        (None, None, Some(_)) => Err(ApiError::InvalidRequest(
            "dataset.y was given without dataset.x; send the samples x too".into(),
        )),
        (None, None, None) => Err(ApiError::InvalidRequest(
            "dataset needs x and y, or builtin (or the whole dataset null for none)".into(),
        )),
    }
}

/// A document naming a built-in dataset and also carrying data must carry that dataset.
fn same_as_builtin(given: &Dataset, builtin: &Dataset, name: &str) -> ApiResult<()> {
    let hint = "leave out x and y to attach the built-in dataset, or leave out builtin to \
                import the data as given";
    if given.samples() != builtin.samples() {
        return Err(ApiError::InvalidValue(format!(
            "dataset.x has {} samples, but the built-in dataset {name:?} has {}; {hint}",
            given.samples(),
            builtin.samples()
        )));
    }
    let rows = |d: &Dataset| {
        d.x()
            .rows()
            .into_iter()
            .zip(d.y().rows())
            .map(|(x, y)| (x.to_vec(), y.to_vec()))
            .collect::<Vec<_>>()
    };
    let (a, b) = (rows(given), rows(builtin));
    match a.iter().zip(&b).position(|(r, s)| r != s) {
        Some(j) => Err(ApiError::InvalidValue(format!(
            "dataset sample {j} (x or y) differs from sample {j} of the built-in dataset \
             {name:?}; {hint}"
        ))),
        None => Ok(()),
    }
}

/// Builds the session a document describes, checking it as create, `PUT /dataset` and
/// `PUT /weights` would.
fn session_from(state: &AppState, doc: ImportDoc) -> ApiResult<Session> {
    let limits = state.config();
    let config = config(&doc, limits.max_parameters)?;
    let init = init_echo(doc.init.as_ref().map(|Object(i)| i))?;
    let (n_in, n_out) = (config.n_in(), config.n_out());
    let net = Network::new(
        config,
        &Init::Explicit {
            weights: doc.weights,
            biases: doc.biases,
        },
    )?;
    let history = match doc.loss {
        None => Vec::new(),
        Some(History::Kept(h)) if h.len() as u64 <= limits.max_history => h,
        Some(History::Kept(h)) => return Err(too_long_history(h.len(), limits.max_history)),
        Some(History::TooLong(n)) => return Err(too_long_history(n, limits.max_history)),
    };
    let history = history
        .iter()
        .enumerate()
        .map(|(k, &v)| check_loss(&format!("loss[{k}]"), v))
        .collect::<ApiResult<Vec<f64>>>()?;
    let initial_loss = doc
        .initial_loss
        .map(|v| check_loss("initial_loss", v))
        .transpose()?;
    if initial_loss.is_none() && !history.is_empty() {
        return Err(ApiError::InvalidValue(format!(
            "initial_loss is null, but loss has {} entries; a history starts from the loss \
             at its starting weights, so give initial_loss too",
            history.len()
        )));
    }
    let dataset = doc
        .dataset
        .map(|Object(d)| import_dataset(state, d, n_in, n_out))
        .transpose()?;
    Ok(Session {
        net: Arc::new(net),
        init,
        dataset,
        history: store::History::from_vec(history),
        initial_loss,
    })
}

fn created(state: &AppState, entry: &Entry) -> Response {
    let body = session_json(state, entry, &entry.snapshot());
    let location = format!("/sessions/{}", entry.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(doc): ApiJson<ImportDoc>,
) -> ApiResult<Response> {
    // Settings first (they decide the sizes), as create checks them; then what building the
    // session holds: its weights as create builds them, its dataset as PUT /dataset stores
    // it (reshaped, perhaps: a copy of x and of the labels as rows), its history checked
    // into a vector of its own, and the whole written to the database.
    let config = config(&doc, state.config().max_parameters)?;
    let m = doc
        .dataset
        .as_ref()
        .and_then(|Object(d)| d.x.as_ref())
        .map_or(0, |x| x.0.as_ref().map_or(0, |samples| samples.len()));
    check_sample_count(&state, m)?;
    check_trainable(&state, &config, m)?;
    let history = match &doc.loss {
        Some(History::Kept(h)) => h.len() as u128,
        _ => 0,
    };
    let p = config.parameter_count();
    let width = (config.n_in() + config.n_out()) as u128;
    let m = m as u128;
    let build = build_need(&config);
    let need = Need::new(
        build.bytes
            + 3 * f64s(m * width)
            + f64s(m * 7)
            + 2 * f64s(history)
            + admission::session_bytes(p, m, width, history),
        format!(
            "the imported session: {} parameters, {m} samples, {history} losses, built and \
             written",
            p
        ),
        "import a smaller session (a smaller network, dataset or history)",
    );
    let st = state.clone();
    let session = state
        .compute(&caller, Some((Part::Work, need)), move || {
            session_from(&st, doc)
        })
        .await??;
    let entry = state
        .store()
        .insert(session, Some(owner(&state, &caller)))
        .await?;
    Ok(created(&state, &entry))
}

pub async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let entry = state.session(&caller, &id).await?;
    let refuse = || {
        ApiError::InvalidRequest(format!(
            "a fork takes no body; send POST /sessions/{id}/fork without one \
             (with curl: curl -X POST URL)"
        ))
    };
    // Read the body whole (up to the usual limit) before refusing it: a refusal that leaves
    // it unread would leave the client's connection unusable.
    if read_body(req, &state).await?.is_some() {
        return Err(refuse());
    }
    caller.memory.release(Part::Body);
    // A snapshot is one consistent state: a train in progress is not half in it. The copy
    // shares its parts (they are immutable; a later change to either replaces, or appends
    // past, what they share), so forking copies nothing here; the database gets a copy of
    // its own, and the budget counts the fork as a session of its own.
    let copy = (*entry.snapshot()).clone();
    let n = numbers(&copy);
    caller.need(
        Part::Work,
        Need::new(
            f64s(n) + u128::from(copy.held_bytes()),
            format!("the forked session ({n} numbers) and its copy for the database"),
            "nothing smaller can be forked: import a smaller session instead",
        ),
    )?;
    let forked = state
        .store()
        .insert(copy, Some(owner(&state, &caller)))
        .await?;
    Ok(created(&state, &forked))
}
