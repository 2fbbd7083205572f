//! Sessions: create, list, read, delete, and the two changes that are not training,
//! `PUT /dataset` and `PUT /weights`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::datasets::unknown_builtin;
use super::extract::{ApiJson, QueryParams, RequestBody};
use super::formats::{DatasetBody, FromFile};
use super::wire::{
    ActivationWire, Int, LabelsWire, Matrices, MethodWire, Object, ReductionWire, Samples, Vectors,
    bare_sample_hint,
};
use super::{AppState, Caller};
use crate::admission::{self, Need, Part, bytes_text, f64s};
use crate::datasets::{StoredDataset, builtin};
use crate::error::{ApiError, ApiResult};
use crate::nn::{Dataset, Init, NetConfig, Network, Params};
use crate::store::{Entry, History, InitEcho, Owner, Session};

/// Networks with more parameters than this are built on a worker, not on the runtime.
const BUILD_INLINE_MAX: u128 = 100_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(list).post(create))
        .route("/sessions/{id}", get(read).delete(remove))
        .route("/sessions/{id}/dataset", put(put_dataset))
        .route("/sessions/{id}/weights", get(read_weights).put(put_weights))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitWire {
    method: Option<MethodWire>,
    seed: Option<Int>,
    weights: Option<Vec<Vec<Vec<f64>>>>,
    biases: Option<Vec<Vec<f64>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    layers: Vec<Int>,
    activation: Option<ActivationWire>,
    learning_rate: Option<f64>,
    grad_reduction: Option<ReductionWire>,
    bias: Option<bool>,
    init: Option<Object<InitWire>>,
}

impl RequestBody for CreateRequest {}
impl RequestBody for DatasetRequest {}
impl RequestBody for WeightsRequest {}

impl CreateRequest {
    /// Parse, don't validate: from here on the core sees only a valid config and init.
    fn into_domain(self, max_parameters: u64) -> ApiResult<(NetConfig, Init)> {
        let config = net_config(
            &self.layers,
            self.activation,
            self.learning_rate,
            self.grad_reduction,
            self.bias,
            max_parameters,
        )?;
        let init = match self.init {
            None => Init::NumpyRand {
                seed: random_seed(),
            },
            Some(Object(w)) => init_from_wire(w)?,
        };
        Ok((config, init))
    }
}

/// A network's settings as `POST /sessions` (and import) take them, checked in the
/// contract's order: layer count and sizes, learning rate, then the parameter limit.
pub fn net_config(
    layers: &[Int],
    activation: Option<ActivationWire>,
    learning_rate: Option<f64>,
    grad_reduction: Option<ReductionWire>,
    bias: Option<bool>,
    max_parameters: u64,
) -> ApiResult<NetConfig> {
    let n = layers.len();
    if !(2..=crate::nn::MAX_LAYERS + 1).contains(&n) {
        return Err(ApiError::InvalidValue(format!(
            "layers has {n} sizes; it takes 2 to {} sizes [n_in, ..., n_out], \
             e.g. [4, 3] or [4, 4, 3]",
            crate::nn::MAX_LAYERS + 1
        )));
    }
    let mut sizes = Vec::with_capacity(n);
    for (k, &Int(size)) in layers.iter().enumerate() {
        match usize::try_from(size) {
            Ok(s) if s >= 1 => sizes.push(s),
            // Beyond usize is a count no limit allows, not a form error.
            _ if size > 0 => sizes.push(usize::MAX),
            _ => {
                return Err(ApiError::InvalidValue(format!(
                    "layers[{k}] is {size}; every layer size must be at least 1"
                )));
            }
        }
    }
    let mut config = NetConfig::new(sizes);
    if let Some(a) = activation {
        config.activation = a.into();
    }
    if let Some(r) = grad_reduction {
        config.grad_reduction = r.into();
    }
    if let Some(lr) = learning_rate {
        config.learning_rate = lr;
    }
    config.bias = bias.unwrap_or(false);
    config.validate(max_parameters)?;
    Ok(config)
}

/// A seed for NumPy's legacy generator: 0..=2^32-1.
pub fn seed(Int(s): Int) -> ApiResult<u32> {
    u32::try_from(s).map_err(|_| {
        ApiError::InvalidValue(format!(
            "init.seed is {s}; a seed is an integer from 0 to 4294967295"
        ))
    })
}

fn random_seed() -> u32 {
    // uuid's v4 bytes come from the OS generator; no need for a second RNG crate.
    uuid::Uuid::new_v4().as_u128() as u32
}

fn init_from_wire(w: InitWire) -> ApiResult<Init> {
    let method = w.method.unwrap_or(MethodWire::NumpyRand);
    if let MethodWire::Explicit = method {
        if w.seed.is_some() {
            return Err(ApiError::InvalidRequest(
                "init.seed does not go with method \"explicit\"; give weights (and biases) only"
                    .into(),
            ));
        }
        let Some(weights) = w.weights else {
            return Err(ApiError::InvalidRequest(
                "init method \"explicit\" needs init.weights: one (out, in) matrix per layer"
                    .into(),
            ));
        };
        return Ok(Init::Explicit {
            weights,
            biases: w.biases,
        });
    }
    if w.weights.is_some() || w.biases.is_some() {
        return Err(ApiError::InvalidRequest(
            "init.weights and init.biases go only with method \"explicit\"".into(),
        ));
    }
    let seed = match w.seed {
        None => random_seed(),
        Some(s) => seed(s)?,
    };
    Ok(match method {
        MethodWire::Xavier => Init::Xavier { seed },
        MethodWire::He => Init::He { seed },
        _ => Init::NumpyRand { seed },
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn init_json(init: InitEcho) -> Value {
    match init.seed {
        Some(seed) => json!({"method": init.method, "seed": seed}),
        None => json!({"method": init.method}),
    }
}

pub fn dataset_json(d: &StoredDataset) -> Value {
    json!({
        "samples": d.data.samples(),
        "features": d.data.features(),
        "classes": d.data.classes(),
        "builtin": d.builtin,
    })
}

/// The session resource.
pub fn session_json(state: &AppState, entry: &Entry, s: &Session) -> Value {
    let c = s.net.config();
    let expires_at = state
        .store()
        .expires_at(entry)
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs as i64).ok())
        .map(rfc3339);
    json!({
        "id": entry.id,
        "layers": c.layers,
        "activation": c.activation.name(),
        "learning_rate": c.learning_rate,
        "grad_reduction": c.grad_reduction.name(),
        "bias": c.bias,
        "init": init_json(s.init),
        "dataset": s.dataset.as_deref().map(dataset_json),
        "epochs_trained": s.history.len(),
        "initial_loss": s.initial_loss,
        "last_loss": s.history.last(),
        "created_at": rfc3339(entry.created_at),
        "expires_at": expires_at,
    })
}

/// The key a caller's new sessions belong to, and its limit.
pub fn owner<'a>(state: &AppState, caller: &'a Caller) -> Owner<'a> {
    Owner {
        name: caller.tenant.owner(),
        max_sessions: if caller.tenant.is_limited() {
            state.config().max_sessions_per_key
        } else {
            usize::MAX
        },
    }
}

/// What building a network of `config` holds: its weights, as built (and, for explicit
/// weights, flattened from their rows) and as copied for the database.
pub fn build_need(config: &NetConfig) -> Need {
    let p = config.parameter_count();
    Need::new(
        3 * f64s(p) + admission::session_bytes(p, 0, 0, 0),
        format!(
            "the {} parameters of layers {:?}, built and written",
            p, config.layers
        ),
        "use a network with fewer or narrower layers",
    )
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<impl IntoResponse> {
    let (config, init) = req.into_domain(state.config().max_parameters)?;
    let echo = InitEcho::from(&init);
    let need = build_need(&config);
    let net = if config.parameter_count() > BUILD_INLINE_MAX {
        state
            .compute(&caller, Some((Part::Work, need)), move || {
                Network::new(config, &init)
            })
            .await??
    } else {
        caller.need(Part::Work, need)?;
        Network::new(config, &init)?
    };
    let session = Session {
        net: Arc::new(net),
        init: echo,
        dataset: None,
        history: History::default(),
        initial_loss: None,
    };
    let entry = state
        .store()
        .insert(session, Some(owner(&state, &caller)))
        .await?;
    let body = session_json(&state, &entry, &entry.snapshot());
    let location = format!("/sessions/{}", entry.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    ))
}

/// A session resource's JSON, at most (its layers and dates included).
const SESSION_JSON_MAX: u128 = 2048;

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    q: QueryParams,
) -> ApiResult<Json<Value>> {
    let offset = q.int("offset", 0, i64::MAX as u64)?.unwrap_or(0);
    let limit = q.int("limit", 1, 1000)?.unwrap_or(100);
    caller.need(
        Part::Work,
        Need::new(
            admission::answer(0) + u128::from(limit) * SESSION_JSON_MAX * 3,
            format!("a page of up to {limit} sessions"),
            "ask for a smaller page (?limit=)",
        ),
    )?;
    let (page, total) = state
        .store()
        .list(
            usize::try_from(offset).unwrap_or(usize::MAX),
            limit as usize,
            caller.tenant.listed(),
        )
        .await?;
    let sessions: Vec<Value> = page
        .iter()
        .map(|e| session_json(&state, e, &e.snapshot()))
        .collect();
    Ok(Json(json!({"sessions": sessions, "total": total})))
}

async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let entry = state.session(&caller, &id).await?;
    Ok(Json(session_json(&state, &entry, &entry.snapshot())))
}

async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.session(&caller, &id).await?;
    state.store().remove(&id).await?;
    // A background train of a deleted session has nobody to answer: it stops. (A waiting
    // train still answers its client, as the contract says.)
    state.jobs().cancel(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetRequest {
    x: Option<Samples>,
    y: Option<LabelsWire>,
    builtin: Option<String>,
}

impl FromFile for DatasetRequest {
    fn from_file(x: Samples, y: LabelsWire) -> Self {
        Self {
            x: Some(x),
            y: Some(y),
            builtin: None,
        }
    }
}

/// Checks an inline batch against the network: sample count, shapes, labels.
pub fn inline_dataset(
    state: &AppState,
    x: Samples,
    y: LabelsWire,
    n_in: usize,
    n_out: usize,
) -> ApiResult<Dataset> {
    let samples = x.0?;
    check_sample_count(state, samples.len())?;
    if let Some(hint) = bare_sample_hint(&samples, n_in) {
        return Err(hint.into());
    }
    Ok(Dataset::new(samples, y.0?, n_in, n_out)?)
}

/// `--max-samples` holds for every dataset and batch, built-in ones included.
pub fn check_sample_count(state: &AppState, samples: usize) -> ApiResult<()> {
    let max = state.config().max_samples;
    if samples > max {
        return Err(ApiError::TooLarge(format!(
            "the data has {samples} samples; this server takes at most {max} (--max-samples)"
        )));
    }
    Ok(())
}

/// What storing a dataset of `m` samples for `config` holds: its label matrix, built from
/// the labels as sent, and the copies of x and y written to the database.
pub fn dataset_need(config: &NetConfig, m: usize) -> Need {
    let m = m as u128;
    let (n_in, n_out) = (config.n_in() as u128, config.n_out() as u128);
    Need::new(
        f64s(m * n_out) + f64s(m * (n_in + n_out)),
        format!("the label matrix of {m} samples and its copy for the database"),
        "send fewer samples",
    )
}

/// A dataset of `m` samples that not even one epoch could train on within
/// `--max-request-memory` is refused when it is set, not at every train.
pub fn check_trainable(state: &AppState, config: &NetConfig, m: usize) -> ApiResult<()> {
    let limit = u128::from(state.budget().per_request());
    let cost = |m: u128| admission::trainer(config, m);
    let need = cost(m as u128);
    if need <= limit {
        return Ok(());
    }
    let fits = admission::fit(limit, m as u128, cost);
    Err(ApiError::TooLarge(format!(
        "training on these {m} samples would need about {} per epoch ({}); this server \
         allows {} per request (--max-request-memory): {}",
        bytes_text(need),
        admission::activations_text(config, m as u128),
        bytes_text(limit),
        if fits == 0 {
            "not even one sample fits: use a network with fewer or narrower layers".to_string()
        } else {
            format!("send at most {fits} samples, or use a network with narrower layers")
        }
    )))
}

async fn put_dataset(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: DatasetBody<DatasetRequest>,
) -> ApiResult<Json<Value>> {
    let entry = state.session(&caller, &id).await?;
    let config = entry.snapshot().net.config().clone();
    let (n_in, n_out) = (config.n_in(), config.n_out());
    // A CSV or NPZ file arrives as the samples and labels of a JSON body would.
    let req = body.into_request(&state, &caller, n_in, n_out).await?;
    let stored: Arc<StoredDataset> = match (req.builtin, req.x, req.y) {
        (Some(name), None, None) => {
            let b = builtin(&name).ok_or_else(|| unknown_builtin(&name))?;
            check_sample_count(&state, b.samples())?;
            b.for_network(n_in, n_out)?
        }
        (Some(_), _, _) => {
            return Err(ApiError::InvalidRequest(
                "send either builtin, or x and y, not both".into(),
            ));
        }
        (None, Some(x), Some(y)) => {
            let m = x.0.as_ref().map_or(0, |samples| samples.len());
            check_sample_count(&state, m)?;
            check_trainable(&state, &config, m)?;
            let st = state.clone();
            let data = state
                .compute(
                    &caller,
                    Some((Part::Work, dataset_need(&config, m))),
                    move || inline_dataset(&st, x, y, n_in, n_out),
                )
                .await??;
            Arc::new(StoredDataset {
                data,
                builtin: None,
            })
        }
        (None, Some(_), None) => {
            return Err(ApiError::InvalidRequest(
                "x was given without y; send labels y for every sample".into(),
            ));
        }
        (None, None, Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "y was given without x; send the samples x too".into(),
            ));
        }
        (None, None, None) => {
            return Err(ApiError::InvalidRequest(
                "send {\"x\": [...], \"y\": [...]} or {\"builtin\": \"cat-dog-ship\"}".into(),
            ));
        }
    };
    let body = dataset_json(&stored);
    state
        .store()
        .lock(&entry)
        .await?
        .set_dataset(stored)
        .await?;
    Ok(Json(body))
}

#[derive(Serialize)]
struct WeightsBody<'a> {
    weights: Matrices<'a>,
    biases: Vectors<'a>,
}

/// The weights as JSON: its answer's memory is part of `need`'s caller's work.
fn weights_answer(config: &NetConfig) -> u128 {
    admission::answer(config.parameter_count())
}

async fn weights_response(
    state: &AppState,
    caller: &Caller,
    net: Arc<Network>,
) -> ApiResult<axum::response::Response> {
    let numbers = usize::try_from(net.config().parameter_count()).unwrap_or(usize::MAX);
    state
        .json(caller, numbers, move || {
            let p = net.params();
            serde_json::to_vec(&WeightsBody {
                weights: Matrices(&p.weights),
                biases: Vectors(p.biases.as_deref()),
            })
        })
        .await
}

async fn read_weights(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    let entry = state.session(&caller, &id).await?;
    let net = entry.snapshot().net.clone();
    caller.need(
        Part::Work,
        Need::new(
            weights_answer(net.config()),
            "the weights as JSON",
            "nothing smaller can be sent: export the session instead",
        ),
    )?;
    weights_response(&state, &caller, net).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsRequest {
    weights: Vec<Vec<Vec<f64>>>,
    biases: Option<Vec<Vec<f64>>>,
}

async fn put_weights(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WeightsRequest>,
) -> ApiResult<axum::response::Response> {
    let entry = state.session(&caller, &id).await?;
    let config = entry.snapshot().net.config().clone();
    let p = config.parameter_count();
    caller.need(
        Part::Work,
        Need::new(
            3 * f64s(p) + weights_answer(&config),
            format!("the {p} new weights (copied, flattened, written) and their JSON answer"),
            "nothing smaller can be sent for this network",
        ),
    )?;
    let change = state.store().lock(&entry).await?;
    let old = change.snapshot().net.clone();
    let build = move || -> ApiResult<Network> {
        let mut net = (*old).clone();
        let params = Params::from_rows(net.config(), req.weights, req.biases)?;
        net.set_params(params)?;
        Ok(net)
    };
    // Big weights are copied and checked on a worker, not on the runtime.
    let net = if entry.snapshot().net.config().parameter_count() > BUILD_INLINE_MAX {
        state.compute(&caller, None, build).await??
    } else {
        build()?
    };
    // New starting weights, new history.
    let s = change.set_network(net).await?;
    weights_response(&state, &caller, s.net.clone()).await
}
