//! `POST /sessions/{id}/check`: a student's numbers against the reference.
//!
//! Per item, over the elements `a` (submitted) and `b` (reference): `rel_error = max |a - b|
//! / max(1e-8, |a| + |b|)` (CS231n's), `max_abs_error = max |a - b|`, and `allclose` when
//! every `|a - b| <= atol + rtol * |b|` (NumPy's `allclose(a, b)`, so `b` alone scales the
//! tolerance). Items are read as plain JSON values and walked against the reference's
//! shape, so a ragged or wrongly nested submission, or a string among the numbers, fails
//! its item with a detail instead of failing the whole request with a 400.

use std::borrow::Cow;
use std::fmt::Write as _;

use axum::Json;
use axum::extract::{Path, State};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::{self, Part, f64s};
use crate::api::extract::{ApiJson, RequestBody};
use crate::api::training::batch_need;
use crate::api::wire::{Object, numpy_shape};
use crate::api::{AppState, Caller};
use crate::error::{ApiError, ApiResult};
use crate::nn;
use crate::store::Session;

pub const DEFAULT_RTOL: f64 = 1e-7;
pub const DEFAULT_ATOL: f64 = 0.0;

/// References below this many multiply-adds (or numbers) are computed inline; above, on a worker.
const COMPUTE_INLINE_MAX: u128 = 200_000;

/// At most this many per-layer shapes are spelled out in a detail.
const SHAPES_SHOWN: usize = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    gradients: Option<Object<GradientsSubmission>>,
    weights: Option<Value>,
    loss: Option<Value>,
    probabilities: Option<Value>,
    rtol: Option<f64>,
    atol: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GradientsSubmission {
    weights: Value,
    biases: Option<Value>,
}

#[derive(Serialize)]
pub struct CheckResponse {
    pass: bool,
    rtol: f64,
    atol: f64,
    items: Items,
}

#[derive(Serialize, Default)]
struct Items {
    #[serde(skip_serializing_if = "Option::is_none")]
    gradients: Option<ItemResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weights: Option<ItemResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss: Option<ItemResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<ItemResult>,
}

#[derive(Serialize, Debug)]
struct ItemResult {
    pass: bool,
    rel_error: Option<f64>,
    max_abs_error: Option<f64>,
    worst_index: Option<Vec<Value>>,
    allclose: Option<bool>,
    detail: String,
}

#[derive(Clone, Copy)]
struct Tolerance {
    rtol: f64,
    atol: f64,
}

fn tolerance(name: &str, given: Option<f64>, default: f64) -> ApiResult<f64> {
    match given {
        None => Ok(default),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(t),
        Some(t) => Err(ApiError::InvalidValue(format!(
            "{name} is {t}; it must be a finite number >= 0 (default {default})"
        ))),
    }
}

impl RequestBody for CheckRequest {
    const KEEPS_JSON: bool = true;
}

pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CheckRequest>,
) -> ApiResult<Json<CheckResponse>> {
    let entry = state.session(&caller, &id).await?;
    if req.gradients.is_none()
        && req.weights.is_none()
        && req.loss.is_none()
        && req.probabilities.is_none()
    {
        return Err(ApiError::InvalidRequest(
            "the body has no item to check; send at least one of \"gradients\": \
             {\"weights\": [...], \"biases\": [...]}, \"weights\": [...], \"loss\": [...], \
             \"probabilities\": [...]"
                .into(),
        ));
    }
    let tol = Tolerance {
        rtol: tolerance("rtol", req.rtol, DEFAULT_RTOL)?,
        atol: tolerance("atol", req.atol, DEFAULT_ATOL)?,
    };
    let s = entry.snapshot();
    let needs_data = req.gradients.is_some() || req.probabilities.is_some();
    if needs_data && s.dataset.is_none() {
        let what = if req.gradients.is_some() {
            "checking gradients"
        } else {
            "checking probabilities"
        };
        return Err(ApiError::no_dataset(&id, what));
    }
    let samples = s.dataset.as_ref().map_or(0, |d| d.data.samples()) as u128;
    let size = s.net.config().parameter_count() * (samples + 1) + s.history.len() as u128;
    // The references: a pass over the dataset for gradients and for probabilities, the
    // history copied out for loss; the comparison itself walks the submission.
    let config = s.net.config().clone();
    let (grads, probs) = (req.gradients.is_some(), req.probabilities.is_some());
    let history = if req.loss.is_some() {
        f64s(s.history.len() as u128)
    } else {
        0
    };
    let passes = u128::from(grads) + u128::from(probs);
    let need = batch_need(&state, &config, samples as usize, "the references", |m| {
        passes * admission::pass(&config, m, false) + history + admission::answer(0)
    });
    let run = move || compare_all(&s, req, tol);
    if size > COMPUTE_INLINE_MAX {
        Ok(Json(
            state
                .compute(&caller, Some((Part::Work, need)), run)
                .await??,
        ))
    } else {
        caller.need(Part::Work, need)?;
        Ok(Json(run()?))
    }
}

fn compare_all(s: &Session, req: CheckRequest, tol: Tolerance) -> ApiResult<CheckResponse> {
    let mut items = Items::default();
    let data = s.dataset.as_ref().map(|d| &d.data);
    if let Some(Object(g)) = &req.gradients {
        let data = data.ok_or_else(|| ApiError::Internal("no dataset after the check".into()))?;
        let reference = nn::gradients(&s.net, data)?;
        let mut groups = vec![Group {
            key: Some("weights"),
            blocks: matrices(&reference.weights),
            per_layer: true,
            submitted: Some(&g.weights),
        }];
        match (&reference.biases, &g.biases) {
            (None, None) => {}
            (None, Some(_)) => {
                items.gradients = Some(ItemResult::mismatch(
                    "gradients.biases was given, but this network has no bias, so there is no \
                     bias gradient to compare; leave biases out (or send null)"
                        .into(),
                ));
            }
            (Some(bs), given) => groups.push(Group {
                key: Some("biases"),
                blocks: vectors(bs),
                per_layer: true,
                submitted: given.as_ref(),
            }),
        }
        if items.gradients.is_none() {
            items.gradients = Some(compare("gradients", &groups, tol));
        }
    }
    if let Some(w) = &req.weights {
        let groups = [Group {
            key: None,
            blocks: matrices(&s.net.params().weights),
            per_layer: true,
            submitted: Some(w),
        }];
        items.weights = Some(compare("weights", &groups, tol));
    }
    if let Some(l) = &req.loss {
        let groups = [Group {
            key: None,
            blocks: vec![Block {
                shape: vec![s.history.len()],
                values: Cow::Owned(s.history.to_vec()),
            }],
            per_layer: false,
            submitted: Some(l),
        }];
        items.loss = Some(compare("loss", &groups, tol));
    }
    if let Some(p) = &req.probabilities {
        let data = data.ok_or_else(|| ApiError::Internal("no dataset after the check".into()))?;
        let reference = nn::predict(&s.net, data.x(), None)?.probabilities;
        let groups = [Group {
            key: None,
            blocks: vec![matrix(&reference)],
            per_layer: false,
            submitted: Some(p),
        }];
        items.probabilities = Some(compare("probabilities", &groups, tol));
    }
    let pass = [
        &items.gradients,
        &items.weights,
        &items.loss,
        &items.probabilities,
    ]
    .into_iter()
    .flatten()
    .all(|i| i.pass);
    Ok(CheckResponse {
        pass,
        rtol: tol.rtol,
        atol: tol.atol,
        items,
    })
}

/// One array of the reference: its shape and its numbers in row-major order.
struct Block<'a> {
    shape: Vec<usize>,
    values: Cow<'a, [f64]>,
}

fn matrix(m: &Array2<f64>) -> Block<'_> {
    Block {
        shape: m.shape().to_vec(),
        values: m
            .as_slice()
            .map_or_else(|| Cow::Owned(m.iter().copied().collect()), Cow::Borrowed),
    }
}

fn matrices(ms: &[Array2<f64>]) -> Vec<Block<'_>> {
    ms.iter().map(matrix).collect()
}

fn vectors(vs: &[Array1<f64>]) -> Vec<Block<'_>> {
    vs.iter()
        .map(|v| Block {
            shape: vec![v.len()],
            values: v
                .as_slice()
                .map_or_else(|| Cow::Owned(v.to_vec()), Cow::Borrowed),
        })
        .collect()
}

/// A part of an item: a reference, and what was submitted for it (under `key` in the
/// item's object, for gradients). `per_layer`: a JSON list with one array per layer.
struct Group<'a> {
    key: Option<&'static str>,
    blocks: Vec<Block<'a>>,
    per_layer: bool,
    submitted: Option<&'a Value>,
}

/// Running maxima over the elements compared so far.
struct Acc {
    tol: Tolerance,
    count: u64,
    far: u64,
    rel: f64,
    abs: f64,
    overflow: bool,
    /// Where the largest relative error is (the first such element), with both values.
    worst: Option<(Vec<Value>, f64, f64)>,
}

impl Acc {
    fn add(&mut self, a: f64, b: f64, path: &[Value]) {
        self.count += 1;
        let rel = nn::gradcheck::rel_error(a, b);
        if self.worst.is_none() || rel > self.rel {
            self.rel = rel;
            self.worst = Some((path.to_vec(), a, b));
        }
        let diff = (a - b).abs();
        if diff.is_finite() {
            self.abs = self.abs.max(diff);
        } else {
            self.overflow = true;
        }
        // NumPy's isclose, with the reference as b. Finite inputs never give a NaN here.
        if diff > self.tol.atol + self.tol.rtol * b.abs() {
            self.far += 1;
        }
    }
}

/// Why a submission does not fit the reference, and where (a path into the submitted JSON).
struct Fault {
    path: Vec<Value>,
    not_a_number: Option<&'static str>,
}

fn compare(item: &'static str, groups: &[Group<'_>], tol: Tolerance) -> ItemResult {
    let mut acc = Acc {
        tol,
        count: 0,
        far: 0,
        rel: 0.0,
        abs: 0.0,
        overflow: false,
        worst: None,
    };
    for g in groups {
        if let Err(fault) = walk_group(g, &mut acc) {
            return ItemResult::mismatch(fault_detail(item, g, &fault));
        }
    }
    let allclose = acc.far == 0;
    let tol_text = format!("rtol = {}, atol = {}", num(tol.rtol), num(tol.atol));
    let mut detail = match &acc.worst {
        None => format!("both are empty, so they match ({tol_text})"),
        Some((path, a, b)) => {
            let at = format!(
                "the largest relative error, {}, is at {}: submitted {}, reference {}",
                num(acc.rel),
                show_path(item, path),
                num(*a),
                num(*b)
            );
            if allclose {
                format!("all {} elements are close ({tol_text}); {at}", acc.count)
            } else {
                format!(
                    "{} of {} elements are not close (|a - b| > atol + rtol * |b|, b the \
                     reference, {tol_text}); {at}",
                    acc.far, acc.count
                )
            }
        }
    };
    if acc.overflow {
        detail.push_str(
            "; some difference overflows f64, so max_abs_error shows the largest f64 instead",
        );
    }
    ItemResult {
        pass: allclose,
        rel_error: Some(acc.rel),
        max_abs_error: Some(if acc.overflow { f64::MAX } else { acc.abs }),
        worst_index: acc.worst.map(|(path, _, _)| path),
        allclose: Some(allclose),
        detail,
    }
}

/// A number as JSON writes it (shortest round trip, `1e-7` rather than `0.0000001`).
fn num(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| v.to_string())
}

impl ItemResult {
    fn mismatch(detail: String) -> Self {
        Self {
            pass: false,
            rel_error: None,
            max_abs_error: None,
            worst_index: None,
            allclose: None,
            detail,
        }
    }
}

fn walk_group(g: &Group<'_>, acc: &mut Acc) -> Result<(), Fault> {
    let mut path: Vec<Value> = g.key.map(|k| vec![Value::from(k)]).unwrap_or_default();
    let Some(sub) = g.submitted else {
        return Err(Fault {
            path,
            not_a_number: None,
        });
    };
    if !g.per_layer {
        return g.blocks.first().map_or(Ok(()), |b| {
            walk(sub, &b.shape, &b.values, &mut 0, &mut path, acc)
        });
    }
    match sub.as_array() {
        Some(list) if list.len() == g.blocks.len() => {
            for (k, (v, b)) in list.iter().zip(&g.blocks).enumerate() {
                path.push(k.into());
                walk(v, &b.shape, &b.values, &mut 0, &mut path, acc)?;
                path.pop();
            }
            Ok(())
        }
        _ => Err(Fault {
            path,
            not_a_number: None,
        }),
    }
}

/// Walks `v` against an array of `shape` whose numbers are `values[*next..]`.
fn walk(
    v: &Value,
    shape: &[usize],
    values: &[f64],
    next: &mut usize,
    path: &mut Vec<Value>,
    acc: &mut Acc,
) -> Result<(), Fault> {
    let fault = |path: &Vec<Value>, not_a_number| Fault {
        path: path.clone(),
        not_a_number,
    };
    match (shape.split_first(), v) {
        (None, Value::Number(n)) => {
            let (Some(a), Some(&b)) = (n.as_f64(), values.get(*next)) else {
                return Err(fault(path, None));
            };
            *next += 1;
            acc.add(a, b, path);
            Ok(())
        }
        (None, Value::Array(_)) => Err(fault(path, None)),
        (None, other) => Err(fault(path, Some(kind(other)))),
        (Some((&len, inner)), Value::Array(list)) if list.len() == len => {
            for (i, e) in list.iter().enumerate() {
                path.push(i.into());
                walk(e, inner, values, next, path, acc)?;
                path.pop();
            }
            Ok(())
        }
        (Some(_), _) => Err(fault(path, None)),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `weights[1][2]` or `gradients.biases[0]`: a path as a reader would write it.
fn show_path(item: &str, path: &[Value]) -> String {
    let mut out = item.to_owned();
    for p in path {
        match p {
            Value::String(k) => {
                let _ = write!(out, ".{k}");
            }
            other => {
                let _ = write!(out, "[{other}]");
            }
        }
    }
    out
}

fn fault_detail(item: &'static str, g: &Group<'_>, fault: &Fault) -> String {
    let name = show_path(
        item,
        &g.key.map(|k| vec![Value::from(k)]).unwrap_or_default(),
    );
    let reference = if g.per_layer {
        list_of(
            g.blocks.iter().map(|b| numpy_shape(&b.shape)),
            g.blocks.len(),
        )
    } else {
        g.blocks
            .first()
            .map_or_else(|| "()".into(), |b| numpy_shape(&b.shape))
    };
    let Some(sub) = g.submitted else {
        return format!(
            "{name} is missing; this network has bias, so the reference has {name} of shape \
             {reference}"
        );
    };
    let at = show_path(item, &fault.path);
    if let Some(what) = fault.not_a_number {
        let value = fault
            .path
            .iter()
            .skip(usize::from(g.key.is_some()))
            .try_fold(sub, |v, p| match p {
                Value::Number(i) => v.get(i.as_u64().unwrap_or(u64::MAX) as usize),
                _ => None,
            })
            .map(|v| clip(&v.to_string()))
            .unwrap_or_default();
        return format!(
            "{at} is {what} ({value}), not a number; every element must be a JSON number"
        );
    }
    if !sub.is_array() {
        return format!(
            "{name} is {} ({}), not a list of numbers; the reference has shape {reference}",
            if sub.is_number() {
                "a single number"
            } else {
                kind(sub)
            },
            clip(&sub.to_string())
        );
    }
    let submitted = if g.per_layer {
        match sub.as_array() {
            Some(list) => list_of(list.iter().map(describe), list.len()),
            None => describe(sub),
        }
    } else {
        describe(sub)
    };
    let where_ = if fault.path.len() > usize::from(g.key.is_some()) {
        format!(" (they first differ at {at})")
    } else {
        String::new()
    };
    format!("{name} has shape {submitted}; the reference has shape {reference}{where_}")
}

fn clip(s: &str) -> String {
    if s.len() <= 40 {
        return s.to_owned();
    }
    let mut end = 40;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// `[(4, 4), (3, 4)]`, with at most [`SHAPES_SHOWN`] entries spelled out.
fn list_of(shapes: impl Iterator<Item = String>, len: usize) -> String {
    let mut parts: Vec<String> = shapes.take(SHAPES_SHOWN).collect();
    if len > SHAPES_SHOWN {
        parts.push(format!("... ({len} in all)"));
    }
    format!("[{}]", parts.join(", "))
}

/// The shape of a submitted value as NumPy would see it, or what it is if it has none.
fn describe(v: &Value) -> String {
    match v {
        Value::Array(_) => match shape_of(v) {
            Some(s) => numpy_shape(&s),
            None => "ragged (its lists differ in length or depth)".into(),
        },
        Value::Number(_) => "() (a single number)".into(),
        other => kind(other).into(),
    }
}

/// The shape of a regular nested list (scalars of any kind count as elements); `None` when
/// ragged.
fn shape_of(v: &Value) -> Option<Vec<usize>> {
    let Value::Array(list) = v else {
        return Some(Vec::new());
    };
    let mut inner: Option<Vec<usize>> = None;
    for e in list {
        let s = shape_of(e)?;
        match &inner {
            None => inner = Some(s),
            Some(first) if *first != s => return None,
            Some(_) => {}
        }
    }
    let mut shape = vec![list.len()];
    shape.extend(inner.unwrap_or_default());
    Some(shape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOL: Tolerance = Tolerance {
        rtol: DEFAULT_RTOL,
        atol: DEFAULT_ATOL,
    };

    fn weights_item(reference: &[Array2<f64>], submitted: &Value) -> ItemResult {
        let groups = [Group {
            key: None,
            blocks: matrices(reference),
            per_layer: true,
            submitted: Some(submitted),
        }];
        compare("weights", &groups, TOL)
    }

    fn two_layers() -> Vec<Array2<f64>> {
        vec![
            Array2::from_shape_vec((2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
            Array2::from_shape_vec((1, 2), vec![5.0, 6.0]).unwrap(),
        ]
    }

    #[test]
    fn equal_values_pass_with_zero_error() {
        let r = weights_item(&two_layers(), &json!([[[1, 2], [3, 4.0]], [[5, 6]]]));
        assert!(r.pass && r.allclose == Some(true), "{r:?}");
        assert_eq!(r.rel_error, Some(0.0));
        assert_eq!(r.max_abs_error, Some(0.0));
        // Every element ties at 0: the first one is the worst.
        assert_eq!(r.worst_index, Some(vec![json!(0), json!(0), json!(0)]));
    }

    #[test]
    fn the_worst_element_is_found_and_reported() {
        let r = weights_item(&two_layers(), &json!([[[1, 2], [3, 4]], [[5, 9]]]));
        assert!(!r.pass && r.allclose == Some(false), "{r:?}");
        assert_eq!(r.rel_error, Some(3.0 / 15.0));
        assert_eq!(r.max_abs_error, Some(3.0));
        assert_eq!(r.worst_index, Some(vec![json!(1), json!(0), json!(1)]));
        assert!(r.detail.contains("weights[1][0][1]"), "{}", r.detail);
    }

    #[test]
    fn shape_faults_fail_the_item_and_name_both_shapes() {
        let cases = [
            (json!([[[1, 2], [3, 4]], [[5, 6, 7]]]), "(1, 3)"),
            (json!([[[1, 2], [3]], [[5, 6]]]), "ragged"),
            (json!([[[1, 2], [3, 4]]]), "[(2, 2)]"),
            (json!("nope"), "a string"),
            (json!([[[1, 2], [3, 4]], [[5, [6]]]]), "ragged"),
        ];
        for (submitted, want) in cases {
            let r = weights_item(&two_layers(), &submitted);
            assert!(!r.pass, "{submitted}: {r:?}");
            assert_eq!(r.rel_error, None, "{submitted}");
            assert!(
                r.detail.contains(want) && r.detail.contains("[(2, 2), (1, 2)]"),
                "{submitted}: detail {:?} should name {want:?} and the reference's shape",
                r.detail
            );
        }
        let r = weights_item(&two_layers(), &json!([[[1, 2], [3, 4]], [[5, "6"]]]));
        assert!(!r.pass && r.rel_error.is_none(), "{r:?}");
        assert!(
            r.detail.contains("weights[1][0][1] is a string (\"6\")"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn allclose_scales_by_the_reference_only() {
        let reference = vec![Array2::from_shape_vec((1, 1), vec![1.0]).unwrap()];
        let tol = Tolerance {
            rtol: 0.1,
            atol: 0.0,
        };
        let item = |a: f64| {
            let v = json!([[[a]]]);
            let groups = [Group {
                key: None,
                blocks: matrices(&reference),
                per_layer: true,
                submitted: Some(&v),
            }];
            compare("weights", &groups, tol).pass
        };
        // |a - b| = 0.105 > 0.1 * |b|, though <= 0.1 * |a|; and the other way round.
        assert!(!item(1.105));
        assert!(item(0.905));
    }
}
