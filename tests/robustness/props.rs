//! Property tests over the HTTP layer: random JSON, and valid bodies broken in every way a
//! careless or hostile client could (fields dropped, added, renamed, retyped; numbers huge,
//! negative, fractional or beyond f64; nesting past serde_json's limit; long arrays; ragged
//! samples; strings where numbers go; truncated text), sent to every route that takes a
//! body. Whatever is sent, the answer is never a 5xx, always JSON or a problem document,
//! and a request that fails changes no session: the session resource (but `expires_at`),
//! its weights and its history read back byte for byte as before.
//!
//! proptest drives the cases; each case runs its requests on one tokio runtime, built once
//! with the server on it, so a case costs a few requests and nothing more.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};

use backprop_server::Config;

use crate::harness::{App, Resp, Server, Snapshot, assert_consistent, clip, config, shared};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Create,
    Import,
    Fork,
    Dataset,
    Weights,
    Train,
    Predict,
    Gradients,
    Check,
    Gradcheck,
    Trace,
}

const ROUTES: [Route; 11] = [
    Route::Create,
    Route::Import,
    Route::Fork,
    Route::Dataset,
    Route::Weights,
    Route::Train,
    Route::Predict,
    Route::Gradients,
    Route::Check,
    Route::Gradcheck,
    Route::Trace,
];

/// What a successful request may do.
#[derive(PartialEq, Eq)]
enum Effect {
    /// Makes a new session, touching no other.
    Creates,
    /// Changes the session it names.
    Changes,
    /// Changes nothing.
    Reads,
}

impl Route {
    fn method_path(self, id: &str) -> (Method, String) {
        let on = |what: &str| format!("/sessions/{id}/{what}");
        match self {
            Route::Create => (Method::POST, "/sessions".into()),
            Route::Import => (Method::POST, "/sessions/import".into()),
            Route::Fork => (Method::POST, on("fork")),
            Route::Dataset => (Method::PUT, on("dataset")),
            Route::Weights => (Method::PUT, on("weights")),
            Route::Train => (Method::POST, on("train")),
            Route::Predict => (Method::POST, on("predict")),
            Route::Gradients => (Method::POST, on("gradients")),
            Route::Check => (Method::POST, on("check")),
            Route::Gradcheck => (Method::POST, on("gradcheck")),
            Route::Trace => (Method::POST, on("trace")),
        }
    }

    fn effect(self) -> Effect {
        match self {
            Route::Create | Route::Import | Route::Fork => Effect::Creates,
            Route::Dataset | Route::Weights | Route::Train => Effect::Changes,
            _ => Effect::Reads,
        }
    }
}

/// Every member name the API knows, so that random objects reach past "unknown field".
const FIELDS: &[&str] = &[
    "layers",
    "activation",
    "learning_rate",
    "grad_reduction",
    "bias",
    "init",
    "method",
    "seed",
    "weights",
    "biases",
    "x",
    "y",
    "builtin",
    "epochs",
    "return_loss",
    "gradients",
    "loss",
    "probabilities",
    "rtol",
    "atol",
    "h",
    "format",
    "dataset",
    "sample_shape",
    "initial_loss",
];

/// The API's enum words and names, so that random strings sometimes mean something.
const WORDS: &[&str] = &[
    "relu",
    "sigmoid",
    "tanh",
    "sum",
    "mean",
    "numpy_rand",
    "xavier",
    "he",
    "explicit",
    "cat-dog-ship",
    "iris",
    "backprop-server/session-v1",
    "",
    "Relu",
    "json",
];

/// Numbers at and past every limit, as JSON text: f64's range and subnormals, negative and
/// fractional values, i64/u64 and past them, 2^32 for seeds, integers written as floats.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1",
    "-1",
    "-4",
    "4.0",
    "4.5",
    "0.1",
    "1e-7",
    "1E2",
    "1e12",
    "1e308",
    "-1e308",
    "1.7976931348623157e308",
    "-1.7976931348623157e308",
    "5e-324",
    "2.2250738585072014e-308",
    "100000",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
];

/// Raw text of the wrong form where a value was: not JSON at all (NaN, Infinity, 1e400),
/// strings, booleans, nulls and empty containers where numbers go.
const FORMS: &[&str] = &[
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "\"4\"",
    "\"\"",
    "\"NaN\"",
    "true",
    "null",
    "[]",
    "{}",
    "[[]]",
];

/// Nesting depths: around the 8 a sample may nest, and around serde_json's 128.
const DEPTHS: &[usize] = &[2, 8, 9, 40, 126, 127, 128, 129, 1_000, 10_000];

/// Lengths for arrays of copies of one value.
const LENGTHS: &[usize] = &[0, 1, 7, 1_000, 10_000, 100_000];

/// Lengths to repeat an array's own elements to (the server allows 2000 samples).
const REPEATS: &[usize] = &[2, 5, 100, 2_001, 20_000];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(FIELDS).prop_map(str::to_string),
        1 => "[a-z_]{1,10}",
    ]
}

fn arb_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..12).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| f.is_finite().then(|| json!(f))),
        select(WORDS).prop_map(Value::from),
        "[a-zA-Z0-9 _-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Remove a member or an array element.
    Drop(Index),
    /// Add a member to an object, or an element to an array.
    Add(Index, String, Value),
    /// Rename a member: to the given name, or (None) to a typo of its own.
    Rename(Index, Option<String>),
    /// Put any JSON value in place of a node.
    Replace(Index, Value),
    /// Put raw text (see [`NUMBERS`], [`FORMS`]) in place of a node.
    Raw(Index, &'static str),
    /// Put nesting this deep in place of a node (arrays, or objects when true).
    Deep(Index, usize, bool),
    /// Put an array of this many copies of a node in its place.
    Long(Index, usize),
    /// Cycle an array's elements to this length.
    Repeat(Index, usize),
    /// In an array of arrays, make one element one longer (true) or shorter.
    Ragged(Index, Index, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Drop),
        2 => (any::<Index>(), key(), arb_json()).prop_map(|(i, k, v)| Mutation::Add(i, k, v)),
        2 => (any::<Index>(), prop::option::of(key())).prop_map(|(i, k)| Mutation::Rename(i, k)),
        2 => (any::<Index>(), arb_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        4 => (any::<Index>(), select(NUMBERS)).prop_map(|(i, r)| Mutation::Raw(i, r)),
        2 => (any::<Index>(), select(FORMS)).prop_map(|(i, r)| Mutation::Raw(i, r)),
        2 => (any::<Index>(), select(DEPTHS), any::<bool>())
            .prop_map(|(i, d, o)| Mutation::Deep(i, d, o)),
        1 => (any::<Index>(), select(LENGTHS)).prop_map(|(i, n)| Mutation::Long(i, n)),
        1 => (any::<Index>(), select(REPEATS)).prop_map(|(i, n)| Mutation::Repeat(i, n)),
        2 => (any::<Index>(), any::<Index>(), any::<bool>())
            .prop_map(|(i, j, g)| Mutation::Ragged(i, j, g)),
    ]
}

#[derive(Clone, Debug)]
enum Body {
    /// A valid body (by index among the route's) with mutations applied in order.
    Mutated(Index, Vec<Mutation>),
    /// A valid body cut short.
    Truncated(Index, Index),
    /// Any JSON value.
    Random(Value),
    /// Any text.
    Text(String),
}

#[derive(Clone, Debug)]
struct Case {
    route: Route,
    /// Which of the fixture's sessions the request names.
    session: usize,
    content_type: Option<&'static str>,
    body: Body,
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        24 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => Just(Some("application/vnd.grader+json")),
        1 => Just(Some("text/plain")),
        1 => Just(None),
    ]
}

fn case(body: impl Strategy<Value = Body>) -> impl Strategy<Value = Case> {
    (select(&ROUTES[..]), 0..2usize, content_type(), body).prop_map(
        |(route, session, content_type, body)| Case {
            route,
            session,
            content_type,
            body,
        },
    )
}

fn mutated_bodies() -> impl Strategy<Value = Body> {
    prop_oneof![
        // Unbroken bodies too: they succeed, and move the sessions to new states for the
        // broken ones to be tried against.
        1 => any::<Index>().prop_map(|i| Body::Mutated(i, Vec::new())),
        6 => (any::<Index>(), prop::collection::vec(mutation(), 1..4))
            .prop_map(|(i, m)| Body::Mutated(i, m)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(i, at)| Body::Truncated(i, at)),
    ]
}

fn random_bodies() -> impl Strategy<Value = Body> {
    prop_oneof![
        // Objects of the API's own member names get past the first checks.
        4 => prop::collection::vec((key(), arb_json()), 0..5)
            .prop_map(|kv| Body::Random(Value::Object(kv.into_iter().collect()))),
        2 => arb_json().prop_map(Body::Random),
        1 => any::<String>().prop_map(Body::Text),
        1 => "[ \\[\\]{}:,\"0-9a-z.eE+-]{0,40}".prop_map(Body::Text),
    ]
}

/// One step into a JSON value.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    At(usize),
}

/// Every node's path, the root's (empty) first, in document order.
fn paths(v: &Value) -> Vec<Vec<Seg>> {
    fn walk(v: &Value, here: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        out.push(here.clone());
        match v {
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    here.push(Seg::At(i));
                    walk(x, here, out);
                    here.pop();
                }
            }
            Value::Object(o) => {
                for (k, x) in o {
                    here.push(Seg::Key(k.clone()));
                    walk(x, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn node_mut<'a>(v: &'a mut Value, path: &[Seg]) -> &'a mut Value {
    path.iter().fold(v, |v, seg| match seg {
        Seg::Key(k) => &mut v[k.as_str()],
        Seg::At(i) => &mut v[*i],
    })
}

/// Picks among the nodes that `eligible` accepts; None when there is none.
fn pick(v: &Value, at: &Index, eligible: impl Fn(&[Seg], &Value) -> bool) -> Option<Vec<Seg>> {
    let candidates: Vec<Vec<Seg>> = paths(v)
        .into_iter()
        .filter(|p| {
            let mut probe = v;
            for seg in p {
                probe = match seg {
                    Seg::Key(k) => &probe[k.as_str()],
                    Seg::At(i) => &probe[*i],
                };
            }
            eligible(p, probe)
        })
        .collect();
    (!candidates.is_empty()).then(|| candidates[at.index(candidates.len())].clone())
}

/// Raw JSON texts stand in the value as marker strings until it is written out.
struct Raws(Vec<String>);

impl Raws {
    fn marker(&mut self, text: String) -> Value {
        self.0.push(text);
        Value::String(format!("@@raw:{}@@", self.0.len() - 1))
    }

    /// Writes `v` with every marker replaced by its text. Later markers may hold earlier
    /// ones (a long array of a raw number), so they go in first.
    fn write(&self, v: &Value) -> String {
        let mut text = v.to_string();
        for (i, raw) in self.0.iter().enumerate().rev() {
            text = text.replace(&format!("\"@@raw:{i}@@\""), raw);
        }
        text
    }
}

fn apply(v: &mut Value, m: &Mutation, raws: &mut Raws) {
    match m {
        Mutation::Drop(at) => {
            if let Some(mut p) = pick(v, at, |p, _| !p.is_empty()) {
                let last = p.pop().expect("a non-root path");
                match (node_mut(v, &p), last) {
                    (Value::Object(o), Seg::Key(k)) => {
                        o.remove(&k);
                    }
                    (Value::Array(a), Seg::At(i)) => {
                        a.remove(i);
                    }
                    _ => {}
                }
            }
        }
        Mutation::Add(at, k, x) => {
            if let Some(p) = pick(v, at, |_, n| n.is_object() || n.is_array()) {
                match node_mut(v, &p) {
                    Value::Object(o) => {
                        o.insert(k.clone(), x.clone());
                    }
                    Value::Array(a) => a.push(x.clone()),
                    _ => {}
                }
            }
        }
        Mutation::Rename(at, to) => {
            if let Some(mut p) = pick(v, at, |p, _| matches!(p.last(), Some(Seg::Key(_)))) {
                let Some(Seg::Key(from)) = p.pop() else {
                    return;
                };
                let to = to.clone().unwrap_or_else(|| {
                    if from.len() > 1 {
                        from[..from.len() - 1].to_string()
                    } else {
                        format!("{from}s")
                    }
                });
                if let Value::Object(o) = node_mut(v, &p)
                    && let Some(x) = o.remove(&from)
                {
                    o.insert(to, x);
                }
            }
        }
        Mutation::Replace(at, x) => {
            if let Some(p) = pick(v, at, |_, _| true) {
                *node_mut(v, &p) = x.clone();
            }
        }
        Mutation::Raw(at, text) => {
            if let Some(p) = pick(v, at, |_, _| true) {
                *node_mut(v, &p) = raws.marker(text.to_string());
            }
        }
        Mutation::Deep(at, depth, objects) => {
            if let Some(p) = pick(v, at, |_, _| true) {
                let text = if *objects {
                    crate::harness::nested_object(*depth)
                } else {
                    crate::harness::nested_array(*depth)
                };
                *node_mut(v, &p) = raws.marker(text);
            }
        }
        Mutation::Long(at, n) => {
            if let Some(p) = pick(v, at, |_, _| true) {
                let node = node_mut(v, &p);
                let mut one = raws.write(node);
                if one.len() * n > 1 << 20 {
                    one = "1.5".into();
                }
                let text = format!("[{}]", vec![one; *n].join(","));
                *node = raws.marker(text);
            }
        }
        Mutation::Repeat(at, n) => {
            let repeatable = |_: &[Seg], n: &Value| n.as_array().is_some_and(|a| !a.is_empty());
            if let Some(p) = pick(v, at, repeatable)
                && let Value::Array(a) = node_mut(v, &p)
            {
                let copy = a.clone();
                // Elements may stand for long raw texts: keep the written array near 2 MiB,
                // or a repeat of a repeat would build gigabytes in the test itself.
                let written = raws.write(&Value::Array(copy.clone())).len().max(1);
                let fits = ((2usize << 20) * copy.len() / written).max(copy.len());
                *a = copy.iter().cycle().take((*n).min(fits)).cloned().collect();
            }
        }
        Mutation::Ragged(at, which, grow) => {
            let has_inner = |_: &[Seg], n: &Value| {
                n.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x.as_array().is_some_and(|i| !i.is_empty()))
                })
            };
            if let Some(p) = pick(v, at, has_inner)
                && let Value::Array(a) = node_mut(v, &p)
            {
                let inner: Vec<usize> = (0..a.len())
                    .filter(|&i| a[i].as_array().is_some_and(|x| !x.is_empty()))
                    .collect();
                let i = inner[which.index(inner.len())];
                if let Value::Array(row) = &mut a[i] {
                    if *grow {
                        let first = row[0].clone();
                        row.push(first);
                    } else {
                        row.pop();
                    }
                }
            }
        }
    }
}

/// A server, two sessions the cases aim at, and valid bodies to break.
struct Fixture {
    app: App,
    /// [4, 4, 3] with biases, tanh, the cat-dog-ship data and a short history; and [4, 3]
    /// with no dataset.
    ids: [String; 2],
    seeds: Vec<(Route, Vec<Value>)>,
    /// Answers by route and status, to show what the cases reached.
    seen: RefCell<BTreeMap<String, BTreeMap<u16, u32>>>,
}

/// Small limits, so that a mutated body that happens to be valid stays cheap, and so that
/// repeats and long arrays cross them.
fn limits() -> Config {
    Config {
        max_epochs: 100,
        max_history: 2_000,
        max_samples: 2_000,
        max_parameters: 100_000,
        train_time_limit_secs: 2.0,
        // Expiry on, with a TTL no case outlives: `expires_at` moves, nothing expires.
        session_ttl_secs: 3600,
        ..config()
    }
}

async fn fixture(app: App) -> Fixture {
    let a = app
        .create(
            &json!({"layers": [4, 4, 3], "bias": true, "activation": "tanh",
                        "init": {"method": "numpy_rand", "seed": 3}}),
        )
        .await;
    let b = app
        .create(&json!({"layers": [4, 3], "init": {"method": "xavier", "seed": 9}}))
        .await;
    let x = json!([
        [[56, 231], [24, 1]],
        [[120, 30], [24, 0]],
        [[20, 31], [240, 100]],
        [[56, 201], [22, -10]],
        [[140, 27], [30, 10]],
        [[25, 30], [230, 110]]
    ]);
    let onehot = json!([
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1]
    ]);
    let classes = json!([0, 1, 2, 0, 1, 2]);
    app.put(
        &format!("/sessions/{a}/dataset"),
        &json!({"x": x, "y": onehot}),
    )
    .await
    .expect(200);
    app.train(&a, 3).await;
    let weights = app
        .get(&format!("/sessions/{a}/weights"))
        .await
        .expect_json(200);
    let weights_b = app
        .get(&format!("/sessions/{b}/weights"))
        .await
        .expect_json(200);
    let export = app
        .get(&format!("/sessions/{a}/export"))
        .await
        .expect_json(200);
    let export_b = app
        .get(&format!("/sessions/{b}/export"))
        .await
        .expect_json(200);
    let grads = app
        .post(&format!("/sessions/{a}/gradients"), &json!({}))
        .await
        .expect_json(200);
    let probs = app
        .post(&format!("/sessions/{a}/predict"), &json!({"x": x}))
        .await
        .expect_json(200)["probabilities"]
        .clone();
    let loss = app
        .get(&format!("/sessions/{a}/loss"))
        .await
        .expect_json(200)["loss"]
        .clone();
    let seeds = vec![
        (
            Route::Create,
            vec![
                json!({"layers": [4, 4, 3], "activation": "sigmoid", "learning_rate": 0.01,
                       "grad_reduction": "mean", "bias": true,
                       "init": {"method": "he", "seed": 4294967295u64}}),
                json!({"layers": [4, 3], "init": {"method": "explicit",
                       "weights": [[[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8],
                                    [0.9, 1.0, 1.1, 1.2]]]}}),
                json!({"layers": [4, 2, 3], "bias": true, "init": {"method": "explicit",
                       "weights": [[[1, 2, 3, 4], [5, 6, 7, 8]], [[1, 2], [3, 4], [5, 6]]],
                       "biases": [[0.5, 0.5], [0, 0, 0]]}}),
            ],
        ),
        (Route::Import, vec![export, export_b]),
        (Route::Fork, vec![json!({}), Value::Null]),
        (
            Route::Dataset,
            vec![
                json!({"x": x, "y": onehot}),
                json!({"builtin": "cat-dog-ship"}),
                json!({"builtin": "iris"}),
                json!({"x": [[1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 1]], "y": [0, 1, 2]}),
                json!({"x": [[[1, 2], [3, 4]]], "y": [[0.2, 0.3, 0.5]]}),
            ],
        ),
        (Route::Weights, vec![weights.clone(), weights_b]),
        (
            Route::Train,
            vec![
                json!({"epochs": 3}),
                json!({"epochs": 2, "return_loss": false}),
            ],
        ),
        (
            Route::Predict,
            vec![
                json!({"x": x}),
                json!({"x": x, "y": classes}),
                json!({"x": [[1, 2, 3, 4]], "y": [[0, 0, 1]]}),
            ],
        ),
        (
            Route::Gradients,
            vec![json!({}), json!({"x": x, "y": onehot})],
        ),
        (
            Route::Check,
            vec![
                json!({"gradients": {"weights": grads["weights"], "biases": grads["biases"]},
                       "weights": weights["weights"], "loss": loss, "probabilities": probs,
                       "rtol": 1e-7, "atol": 0}),
                json!({"loss": loss}),
            ],
        ),
        (Route::Gradcheck, vec![json!({"h": 1e-5}), json!({})]),
        (Route::Trace, vec![json!({}), json!({"x": x, "y": classes})]),
    ];
    Fixture {
        app,
        ids: [a, b],
        seeds,
        seen: RefCell::default(),
    }
}

impl Fixture {
    fn seeds(&self, route: Route) -> &[Value] {
        &self
            .seeds
            .iter()
            .find(|(r, _)| *r == route)
            .expect("every route has valid bodies")
            .1
    }

    fn body_text(&self, case: &Case) -> String {
        match &case.body {
            Body::Mutated(i, mutations) => {
                let seeds = self.seeds(case.route);
                let mut v = seeds[i.index(seeds.len())].clone();
                let mut raws = Raws(Vec::new());
                for m in mutations {
                    apply(&mut v, m, &mut raws);
                }
                raws.write(&v)
            }
            Body::Truncated(i, at) => {
                let seeds = self.seeds(case.route);
                let text = seeds[i.index(seeds.len())].to_string();
                let mut cut = at.index(text.len().max(1));
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text[..cut].to_string()
            }
            Body::Random(v) => v.to_string(),
            Body::Text(t) => t.clone(),
        }
    }

    async fn snapshots(&self) -> Vec<Snapshot> {
        let mut out = Vec::new();
        for id in &self.ids {
            let s = self
                .app
                .snapshot(id)
                .await
                .unwrap_or_else(|e| panic!("reading session {id}: {e}"));
            out.push(s);
        }
        out
    }

    async fn total(&self) -> u64 {
        crate::harness::session_total(&self.app).await
    }

    /// Sends one case and checks everything a case promises; updates `before` to the
    /// sessions as they now are.
    async fn run(&self, case: &Case, before: &mut Vec<Snapshot>) {
        let target = &self.ids[case.session];
        let (method, path) = case.route.method_path(target);
        let body = self.body_text(case);
        let total_before = self.total().await;
        let r: Resp = self
            .app
            .request(method, &path, case.content_type, Some(body))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let faults = r.faults();
        assert!(
            faults.is_empty(),
            "{} [{:?}]:\n  {}",
            r.request,
            case.content_type,
            faults.join("\n  ")
        );
        *self
            .seen
            .borrow_mut()
            .entry(format!("{:?}", case.route))
            .or_default()
            .entry(r.status.as_u16())
            .or_default() += 1;
        let ok = r.status.is_success();
        let effect = case.route.effect();
        if ok && effect == Effect::Creates {
            assert_eq!(r.status, 201, "{}: {}", r.request, clip(&r.body));
            let made = r.json();
            let id = made["id"].as_str().expect("a created session has an id");
            assert_eq!(
                r.headers.get("location").and_then(|v| v.to_str().ok()),
                Some(format!("/sessions/{id}").as_str()),
                "{}",
                r.request
            );
            assert_consistent(&self.app, id).await;
            self.app
                .delete(&format!("/sessions/{id}"))
                .await
                .expect(204);
        }
        if ok && case.route == Route::Train {
            let t = r.json();
            assert!(
                matches!(
                    t["status"].as_str(),
                    Some("completed" | "diverged" | "time_limit")
                ),
                "{}: {t}",
                r.request
            );
            if let Some(loss) = t.get("loss") {
                assert_eq!(
                    loss.as_array().map(|l| l.len() as u64),
                    t["epochs_run"].as_u64(),
                    "{}: {t}",
                    r.request
                );
            }
        }
        let after = self.snapshots().await;
        assert_eq!(
            self.total().await,
            total_before,
            "{} ({}) left a session behind or removed one",
            r.request,
            r.status
        );
        for (k, id) in self.ids.iter().enumerate() {
            let may_change = ok && effect == Effect::Changes && k == case.session;
            if may_change {
                assert_consistent(&self.app, id).await;
                continue;
            }
            let changes = after[k].changes_since(&before[k]);
            assert!(
                changes.is_empty(),
                "{} answered {} {} and changed session {id}:\n  {}",
                r.request,
                r.status,
                clip(&r.body),
                changes.join("\n  ")
            );
        }
        *before = after;
    }
}

/// Runs `cases` cases drawn from `body` against a fresh server and fixture.
fn run_cases(cases: u32, body: impl Strategy<Value = Body>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _timing = rt.block_on(shared());
    let server = rt.block_on(Server::start(limits()));
    // A new connection per request, so that what one case does to its connection cannot
    // fail the next case's request (a_refused_body_leaves_the_clients_connection_usable
    // holds the server to that on its own); and a case that hangs fails within seconds.
    let app = App::unpooled(server.app.base.clone(), Duration::from_secs(20));
    let fx = rt.block_on(fixture(app));
    let before = RefCell::new(rt.block_on(fx.snapshots()));
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        // Shrinking replays requests against a server whose sessions have moved on: keep
        // it short, the first failure's message already shows the request.
        max_shrink_iters: 32,
        max_shrink_time: 60_000,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let started = std::time::Instant::now();
    let result = runner.run(&case(body), |c| {
        rt.block_on(fx.run(&c, &mut before.borrow_mut()));
        Ok(())
    });
    eprintln!(
        "{cases} cases in {:?}; answers by route and status: {:?}",
        started.elapsed(),
        fx.seen.borrow()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn mutated_valid_bodies_never_5xx_and_failures_change_nothing() {
    run_cases(600, mutated_bodies());
}

#[test]
fn random_json_bodies_never_5xx_and_failures_change_nothing() {
    run_cases(300, random_bodies());
}

// ---------------------------------------------------------------------------------------------
// Adversarial sizes (issue 9): well-formed requests whose shapes are fine but whose sizes
// are not, under a hard memory cap.

/// One size case: a network, a dataset of `samples` samples, and a route to send them to.
#[derive(Debug, Clone)]
struct SizeCase {
    layers: Vec<u64>,
    samples: u64,
    route: Route,
    epochs: u64,
}

/// Log-uniform in `lo..=hi`: every order of magnitude as likely as the next.
fn log_uniform(lo: u64, hi: u64) -> impl Strategy<Value = u64> {
    ((lo as f64).ln()..=(hi as f64).ln()).prop_map(move |l| (l.exp().round() as u64).clamp(lo, hi))
}

fn size_cases() -> impl Strategy<Value = SizeCase> {
    let routes = [
        Route::Predict,
        Route::Gradients,
        Route::Train,
        Route::Trace,
        Route::Check,
        Route::Fork,
        Route::Import,
        Route::Dataset,
    ];
    (
        log_uniform(1, 4096),
        prop::collection::vec(log_uniform(1, 3_000_000), 0..3),
        log_uniform(1, 100_000),
        log_uniform(1, 200_000),
        select(routes.to_vec()),
        log_uniform(1, 1_000_000),
    )
        .prop_map(|(n_in, hidden, n_out, samples, route, epochs)| {
            let mut layers = vec![n_in];
            layers.extend(hidden);
            layers.push(n_out);
            // The body carries samples x n_in numbers: keep it a few MB, so that what is
            // adversarial is what the server would build from it, not the upload.
            let samples = samples.min((400_000 / n_in).max(1));
            SizeCase {
                layers,
                samples,
                route,
                epochs,
            }
        })
}

/// `{"x": [[1, ...], ...], "y": [0, ...]}` written straight as text (it may be megabytes).
fn size_dataset(n_in: u64, n_out: u64, m: u64) -> String {
    let row = format!("[{}]", vec!["1"; n_in as usize].join(","));
    let x = vec![row.as_str(); m as usize].join(",");
    let y: Vec<String> = (0..m).map(|i| (i % n_out).to_string()).collect();
    format!(r#"{{"x": [{x}], "y": [{}]}}"#, y.join(","))
}

/// What one size case may answer: a success, a 4xx problem, or a 503 with `Retry-After`.
fn size_answer_faults(r: &Resp) -> Vec<String> {
    let status = r.status.as_u16();
    let mut faults: Vec<String> = r
        .faults()
        .into_iter()
        .filter(|f| status != 503 || !f.starts_with("server error 503"))
        .collect();
    if faults.len() == 1 && faults[0].starts_with("body: ") {
        faults.clear();
    }
    if status == 503 && r.headers.get("retry-after").is_none() {
        faults.push("a 503 without Retry-After".into());
    }
    faults
}

async fn run_size_case(
    app: &App,
    c: &SizeCase,
    seen: &RefCell<BTreeMap<String, BTreeMap<u16, u32>>>,
) {
    let send = |method: Method, path: String, body: Option<String>| async move {
        let ct = body.as_ref().map(|_| "application/json");
        let r = app
            .request(method, &path, ct, body)
            .await
            .unwrap_or_else(|e| panic!("no answer (the server died?): {e}"));
        let faults = size_answer_faults(&r);
        assert!(
            faults.is_empty(),
            "{}:\n  {}",
            r.request,
            faults.join("\n  ")
        );
        r
    };
    let note = |route: &str, r: &Resp| {
        *seen
            .borrow_mut()
            .entry(route.into())
            .or_default()
            .entry(r.status.as_u16())
            .or_default() += 1;
    };
    let layers = serde_json::to_string(&c.layers).unwrap();
    let made = send(
        Method::POST,
        "/sessions".into(),
        Some(format!(r#"{{"layers": {layers}}}"#)),
    )
    .await;
    note("Create", &made);
    let (n_in, n_out) = (c.layers[0], *c.layers.last().unwrap());
    let data = size_dataset(n_in, n_out, c.samples);
    if made.status != 201 {
        // Import the same network with its weights left out: refused, never built.
        let doc = format!(
            r#"{{"format": "backprop-server/session-v1", "layers": {layers}, "weights": [[[1.0]]]}}"#
        );
        let r = send(Method::POST, "/sessions/import".into(), Some(doc)).await;
        note("Import", &r);
        return;
    }
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let on = |what: &str| format!("/sessions/{id}/{what}");
    let r = send(Method::PUT, on("dataset"), Some(data.clone())).await;
    note("Dataset", &r);
    let (method, path, body) = match c.route {
        Route::Predict => (Method::POST, on("predict"), Some(data)),
        Route::Gradients => (Method::POST, on("gradients"), Some(data)),
        Route::Train => (
            Method::POST,
            on("train"),
            Some(format!(
                r#"{{"epochs": {}, "return_loss": true}}"#,
                c.epochs
            )),
        ),
        Route::Trace => (Method::POST, on("trace"), Some("{}".into())),
        Route::Check => {
            let row = format!("[{}]", vec!["0.5"; n_out as usize].join(","));
            let p = vec![row.as_str(); c.samples as usize].join(",");
            (
                Method::POST,
                on("check"),
                Some(format!(r#"{{"probabilities": [{p}]}}"#)),
            )
        }
        Route::Fork => (Method::POST, on("fork"), None),
        Route::Import => {
            let doc = send(Method::GET, on("export"), None).await;
            note("Export", &doc);
            if doc.status != 200 {
                (Method::DELETE, format!("/sessions/{id}"), None)
            } else {
                (Method::POST, "/sessions/import".into(), Some(doc.body))
            }
        }
        _ => (Method::GET, on("loss"), None),
    };
    let r = send(method, path, body).await;
    note(&format!("{:?}", c.route), &r);
    if r.status == 201 {
        let other = r.json()["id"].as_str().unwrap().to_owned();
        send(Method::DELETE, format!("/sessions/{other}"), None).await;
    }
    let h = send(Method::GET, "/healthz".into(), None).await;
    assert_eq!(h.status, 200, "/healthz after {c:?}");
    // The session may be gone already (an import case whose export was refused deletes it).
    let _ = app
        .request(Method::DELETE, &format!("/sessions/{id}"), None, None)
        .await;
}

#[test]
fn adversarial_sizes_under_a_memory_cap_get_4xx_or_503_never_an_abort() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _timing = rt.block_on(crate::harness::exclusive());
    let config = Config {
        max_request_memory: 256 << 20,
        train_time_limit_secs: 1.0,
        ..crate::harness::config()
    };
    let process = crate::memcap::capped_server(&config, crate::memcap::CAP);
    let app = App::unpooled(process.base.clone(), Duration::from_secs(60));
    let seen = RefCell::new(BTreeMap::new());
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 40,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let started = std::time::Instant::now();
    let result = runner.run(&size_cases(), |c| {
        rt.block_on(run_size_case(&app, &c, &seen));
        Ok(())
    });
    eprintln!(
        "adversarial sizes under RLIMIT_AS {} MiB: 40 cases in {:?}; answers by route and \
         status: {:?}; RSS peak {} MiB",
        crate::memcap::CAP >> 20,
        started.elapsed(),
        seen.borrow(),
        process.rss_peak_kib() / 1024
    );
    if let Err(e) = result {
        panic!("{e}\nserver log:\n{}", clip(&process.log()));
    }
}
