//! The contract's "Grading support": check, gradcheck, trace, export/import/fork and
//! version, against the real server on 127.0.0.1:0.
//!
//! The reference numbers come from the server's own routes (`/gradients`, `/weights`,
//! `/loss`, `/predict`), so these tests hold the grading routes to the rest of the API;
//! `tests/core_golden.rs` holds the core to NumPy.

use std::time::Duration;

use backprop_server::Config;
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// The harness

#[path = "support/server.rs"]
mod server;
use server::ServerProcess;

fn config() -> Config {
    Config {
        workers: 2,
        session_ttl_secs: 0,
        ..Config::default()
    }
}

struct App {
    base: String,
    client: reqwest::Client,
    /// The real binary; killed when the app goes.
    _process: ServerProcess,
}

#[derive(Debug)]
struct Resp {
    what: String,
    status: u16,
    location: Option<String>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.what, self.body))
    }

    /// The body as JSON, after checking the status.
    fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status}, got {} with {}",
            self.what, self.status, self.body
        );
        self.json()
    }

    /// A problem response with this status and code.
    fn problem(&self, status: u16, code: &str) -> String {
        let v = self.expect(status);
        assert_eq!(v["code"], code, "{}: wrong code in {v}", self.what);
        v["detail"].as_str().unwrap_or_default().to_owned()
    }
}

async fn spawn(config: Config) -> App {
    let server = tokio::task::spawn_blocking(move || ServerProcess::start(&config))
        .await
        .expect("starting the server");
    App {
        base: server.base.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("an HTTP client"),
        _process: server,
    }
}

impl App {
    /// Any request; `body` is sent as is with `content_type`.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> Resp {
        let what = format!(
            "{method} {path} {}",
            body.as_deref().map_or("", |b| &b[..b.len().min(200)])
        );
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await.unwrap_or_default();
        assert!(status < 500, "{what}: server error {status}: {body}");
        Resp {
            what,
            status,
            location,
            body,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.raw(Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Resp {
        self.raw(
            Method::POST,
            path,
            Some("application/json"),
            Some(body.to_string()),
        )
        .await
    }

    async fn put(&self, path: &str, body: &Value) -> Resp {
        self.raw(
            Method::PUT,
            path,
            Some("application/json"),
            Some(body.to_string()),
        )
        .await
    }

    async fn create(&self, body: Value) -> String {
        let s = self.post("/sessions", &body).await.expect(201);
        s["id"].as_str().expect("an id").to_owned()
    }

    async fn dataset(&self, id: &str, body: Value) {
        self.put(&format!("/sessions/{id}/dataset"), &body)
            .await
            .expect(200);
    }

    async fn train(&self, id: &str, epochs: u64) -> Value {
        self.post(
            &format!("/sessions/{id}/train"),
            &json!({ "epochs": epochs }),
        )
        .await
        .expect(200)
    }

    async fn check(&self, id: &str, body: Value) -> Value {
        self.post(&format!("/sessions/{id}/check"), &body)
            .await
            .expect(200)
    }

    /// What a client can read of a session, as text.
    async fn state_of(&self, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        for path in ["", "/weights", "/loss"] {
            out.push(self.get(&format!("/sessions/{id}{path}")).await.body);
        }
        out
    }
}

fn cat_dog_ship_x() -> Value {
    json!([
        [[56, 231], [24, 1]],
        [[120, 30], [24, 0]],
        [[20, 31], [240, 100]],
        [[56, 201], [22, -10]],
        [[140, 27], [30, 10]],
        [[25, 30], [230, 110]]
    ])
}

fn cat_dog_ship_y() -> Vec<usize> {
    vec![0, 1, 2, 0, 1, 2]
}

fn floats(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        other => vec![
            other
                .as_f64()
                .unwrap_or_else(|| panic!("{other} is not a number")),
        ],
    }
}

fn bits(v: &Value) -> Vec<u64> {
    floats(v).into_iter().map(f64::to_bits).collect()
}

fn rel_error(a: f64, b: f64) -> f64 {
    (a - b).abs() / (a.abs() + b.abs()).max(1e-8)
}

/// A notebook session with a hidden layer on cat-dog-ship, trained a little.
async fn notebook_session(app: &App, bias: bool) -> String {
    let id = app
        .create(
            json!({"layers": [4, 4, 3], "bias": bias, "init": {"method": "numpy_rand", "seed": 0}}),
        )
        .await;
    app.dataset(&id, json!({"builtin": "cat-dog-ship"})).await;
    app.train(&id, 5).await;
    id
}

// ---------------------------------------------------------------------------------------
// check

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_the_servers_own_numbers() {
    let app = spawn(config()).await;
    for bias in [false, true] {
        let id = notebook_session(&app, bias).await;
        let grads = app
            .post(&format!("/sessions/{id}/gradients"), &json!({}))
            .await
            .expect(200);
        let weights = app
            .get(&format!("/sessions/{id}/weights"))
            .await
            .expect(200);
        let loss = app.get(&format!("/sessions/{id}/loss")).await.expect(200);
        let probs = app
            .post(
                &format!("/sessions/{id}/predict"),
                &json!({"x": cat_dog_ship_x()}),
            )
            .await
            .expect(200);
        let mut gradients = json!({"weights": grads["weights"]});
        if bias {
            gradients["biases"] = grads["biases"].clone();
        }
        let before = app.state_of(&id).await;
        let r = app
            .check(
                &id,
                json!({
                    "gradients": gradients,
                    "weights": weights["weights"],
                    "loss": loss["loss"],
                    "probabilities": probs["probabilities"],
                }),
            )
            .await;
        assert_eq!(r["pass"], true, "bias={bias}: {r}");
        let first = [
            ("gradients", json!(["weights", 0, 0, 0])),
            ("weights", json!([0, 0, 0])),
            ("loss", json!([0])),
            ("probabilities", json!([0, 0])),
        ];
        for (item, worst) in first {
            let i = &r["items"][item];
            assert_eq!(i["pass"], true, "bias={bias} {item}: {i}");
            assert_eq!(i["allclose"], true, "{item}: {i}");
            assert_eq!(i["rel_error"], 0.0, "{item}: {i}");
            assert_eq!(i["max_abs_error"], 0.0, "{item}: {i}");
            // Every element ties at 0, and the first wins a tie.
            assert_eq!(i["worst_index"], worst, "{item}: {i}");
        }
        assert_eq!(r["rtol"], 1e-7);
        assert_eq!(r["atol"], 0.0);
        assert_eq!(
            app.state_of(&id).await,
            before,
            "a check changed the session"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_worst_element_and_its_errors() {
    let app = spawn(config()).await;
    let id = notebook_session(&app, true).await;
    let grads = app
        .post(&format!("/sessions/{id}/gradients"), &json!({}))
        .await
        .expect(200);

    // One bias gradient off by 0.5: it is the only, so the worst, error.
    let b = grads["biases"][1][2].as_f64().unwrap();
    let mut sub = json!({"weights": grads["weights"], "biases": grads["biases"]});
    sub["biases"][1][2] = json!(b + 0.5);
    let r = app.check(&id, json!({ "gradients": sub })).await;
    let i = &r["items"]["gradients"];
    assert_eq!(r["pass"], false, "{r}");
    assert_eq!(i["pass"], false);
    assert_eq!(i["allclose"], false);
    assert_eq!(i["worst_index"], json!(["biases", 1, 2]), "{i}");
    assert_eq!(i["rel_error"].as_f64(), Some(rel_error(b + 0.5, b)), "{i}");
    assert_eq!(
        i["max_abs_error"].as_f64(),
        Some((b + 0.5 - b).abs()),
        "{i}"
    );
    assert!(
        i["detail"]
            .as_str()
            .unwrap()
            .contains("gradients.biases[1][2]"),
        "{i}"
    );

    // One weight gradient off: its path starts with "weights".
    let flat = floats(&grads["weights"][1]);
    let (j, &big) = flat
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap();
    assert!(big != 0.0, "the notebook's gradients are not all zero");
    let (row, col) = (j / 4, j % 4);
    let mut sub = json!({"weights": grads["weights"], "biases": grads["biases"]});
    sub["weights"][1][row][col] = json!(big * 1.01);
    let i = &app.check(&id, json!({ "gradients": sub })).await["items"]["gradients"];
    assert_eq!(i["worst_index"], json!(["weights", 1, row, col]), "{i}");
    assert_eq!(i["rel_error"].as_f64(), Some(rel_error(big * 1.01, big)));

    // Within the default rtol of 1e-7: passes, with a nonzero error.
    sub["weights"][1][row][col] = json!(big * (1.0 + 1e-9));
    let i = &app.check(&id, json!({ "gradients": sub })).await["items"]["gradients"];
    assert_eq!(i["pass"], true, "{i}");
    assert!(i["rel_error"].as_f64().unwrap() > 0.0, "{i}");
    assert_eq!(i["worst_index"], json!(["weights", 1, row, col]), "{i}");

    // Two elements with the same relative error (1: the sign flipped): the first wins.
    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect(200);
    let mut sub = w["weights"].clone();
    for (k, r, c) in [(1usize, 2usize, 1usize), (0, 3, 2)] {
        let v = sub[k][r][c].as_f64().unwrap();
        assert!(v != 0.0);
        sub[k][r][c] = json!(-v);
    }
    let i = &app.check(&id, json!({ "weights": sub })).await["items"]["weights"];
    assert_eq!(i["rel_error"], 1.0, "{i}");
    assert_eq!(i["worst_index"], json!([0, 3, 2]), "{i}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tolerances_follow_numpy_allclose() {
    let app = spawn(config()).await;
    let id = notebook_session(&app, false).await;
    let b = app.get(&format!("/sessions/{id}/loss")).await.expect(200)["loss"][0]
        .as_f64()
        .unwrap();
    assert!(b > 0.0);
    // NumPy scales rtol by the reference b only: |a - b| <= atol + rtol * |b|.
    let cases = [
        (b * 1.105, 0.1, 0.0, false), // within 0.1 |a|, not within 0.1 |b|
        (b * 0.905, 0.1, 0.0, true),  // within 0.1 |b|, not within 0.1 |a|
        (b + 0.75, 0.0, 1.0, true),
        (b + 0.75, 0.0, 0.5, false),
        (b, 0.0, 0.0, true),
    ];
    let history = floats(&app.get(&format!("/sessions/{id}/loss")).await.expect(200)["loss"]);
    for (a, rtol, atol, want) in cases {
        let mut loss = history.clone();
        loss[0] = a;
        let r = app
            .check(&id, json!({"loss": loss, "rtol": rtol, "atol": atol}))
            .await;
        let i = &r["items"]["loss"];
        assert_eq!(
            i["allclose"], want,
            "a={a} b={b} rtol={rtol} atol={atol}: {i}"
        );
        assert_eq!(i["pass"], want);
        assert_eq!(r["pass"], want);
        assert_eq!(r["rtol"], rtol);
        assert_eq!(r["atol"], atol);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shape_faults_fail_the_item_not_the_request() {
    let app = spawn(config()).await;
    let id = notebook_session(&app, false).await;
    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect(200)["weights"]
        .clone();
    let good_loss = app.get(&format!("/sessions/{id}/loss")).await.expect(200)["loss"].clone();

    let mut wide = w.clone();
    for row in wide[1].as_array_mut().unwrap() {
        row.as_array_mut().unwrap().push(json!(0.5));
    }
    let mut ragged = w.clone();
    ragged[0][2].as_array_mut().unwrap().pop();
    let mut stringy = w.clone();
    stringy[1][0][3] = json!("0.25");
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        ("weights", wide, vec!["(3, 5)", "[(4, 4), (3, 4)]"]),
        ("weights", ragged, vec!["ragged", "[(4, 4), (3, 4)]"]),
        (
            "weights",
            json!([w[0]]),
            vec!["[(4, 4)]", "[(4, 4), (3, 4)]"],
        ),
        (
            "weights",
            json!(3.5),
            vec!["a single number", "[(4, 4), (3, 4)]"],
        ),
        (
            "weights",
            stringy,
            vec!["weights[1][0][3]", "a string", "\"0.25\""],
        ),
        ("loss", json!([0.5, 0.25]), vec!["(2,)", "(5,)"]),
        (
            "probabilities",
            json!([[1, 0, 0]]),
            vec!["(1, 3)", "(6, 3)"],
        ),
        (
            "gradients",
            json!({"weights": w, "biases": [[0, 0, 0, 0], [0, 0, 0]]}),
            vec!["no bias"],
        ),
    ];
    for (item, value, want) in cases {
        let mut body = json!({ "loss": good_loss });
        body[item] = value.clone();
        let r = app.check(&id, body).await;
        let i = &r["items"][item];
        assert_eq!(r["pass"], false, "{item} {value}: {r}");
        assert_eq!(i["pass"], false, "{item} {value}: {i}");
        for key in ["rel_error", "max_abs_error", "worst_index", "allclose"] {
            assert!(
                i[key].is_null(),
                "{item} {value}: {key} should be null: {i}"
            );
        }
        let detail = i["detail"].as_str().unwrap();
        for w in want {
            assert!(
                detail.contains(w),
                "{item} {value}: detail {detail:?} lacks {w:?}"
            );
        }
        // The other item is still judged on its own.
        if item != "loss" {
            assert_eq!(r["items"]["loss"]["pass"], true, "{r}");
        }
    }

    // A bias session's gradients without biases: the item fails and says what is missing.
    let bid = notebook_session(&app, true).await;
    let g = app
        .post(&format!("/sessions/{bid}/gradients"), &json!({}))
        .await
        .expect(200);
    let i = &app
        .check(&bid, json!({"gradients": {"weights": g["weights"]}}))
        .await["items"]["gradients"];
    assert_eq!(i["pass"], false, "{i}");
    let detail = i["detail"].as_str().unwrap();
    assert!(
        detail.contains("gradients.biases is missing") && detail.contains("[(4,), (3,)]"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_malformed_requests() {
    let app = spawn(config()).await;
    let id = notebook_session(&app, false).await;
    let bare = app.create(json!({"layers": [4, 3]})).await;
    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect(200)["weights"]
        .clone();
    let path = format!("/sessions/{id}/check");
    let cases = [
        (json!({}), 400, "invalid_request"),
        (json!({"rtol": 1e-3}), 400, "invalid_request"),
        (json!({"weights": w, "rtol": -1e-7}), 422, "invalid_value"),
        (json!({"weights": w, "atol": -0.5}), 422, "invalid_value"),
        (
            json!({"weights": w, "rtol": "1e-7"}),
            400,
            "invalid_request",
        ),
        (json!({"weights": w, "weight": w}), 400, "invalid_request"),
        (
            json!({"gradients": {"weights": w, "bias": []}}),
            400,
            "invalid_request",
        ),
        (json!({"gradients": {"biases": []}}), 400, "invalid_request"),
    ];
    let before = app.state_of(&id).await;
    for (body, status, code) in cases {
        app.post(&path, &body).await.problem(status, code);
    }
    assert_eq!(app.state_of(&id).await, before);
    app.raw(Method::POST, &path, Some("application/json"), None)
        .await
        .problem(400, "invalid_json");
    app.raw(
        Method::POST,
        &path,
        Some("application/json"),
        Some("{\"loss\": [1e400]}".into()),
    )
    .await
    .problem(400, "invalid_json");
    app.post(
        "/sessions/00000000-0000-4000-8000-000000000000/check",
        &json!({"loss": []}),
    )
    .await
    .problem(404, "not_found");

    // Without a dataset: gradients and probabilities have no reference; the rest does.
    let bare_path = format!("/sessions/{bare}/check");
    let detail = app
        .post(&bare_path, &json!({"gradients": {"weights": []}}))
        .await
        .problem(409, "no_dataset");
    assert!(detail.contains("dataset"), "{detail}");
    app.post(&bare_path, &json!({"probabilities": []}))
        .await
        .problem(409, "no_dataset");
    let r = app.check(&bare, json!({"loss": []})).await;
    assert_eq!(
        r["items"]["loss"]["pass"], true,
        "two empty histories match: {r}"
    );
    assert!(r["items"]["loss"]["worst_index"].is_null(), "{r}");
    let bw = app
        .get(&format!("/sessions/{bare}/weights"))
        .await
        .expect(200);
    let r = app.check(&bare, json!({"weights": bw["weights"]})).await;
    assert_eq!(r["pass"], true, "{r}");
}

// ---------------------------------------------------------------------------------------
// gradcheck

/// Ten samples in [-1.5, 1.5] with soft labels: inputs of that size keep sigmoid and tanh
/// out of saturation, where gradients are too small for a relative error to mean much.
/// With xavier seed 4 every case below measures under 1e-8 (seed 3 gets 7e-7 for sigmoid:
/// a tiny gradient element carries the float noise of the loss divided by 2h).
fn small_data() -> Value {
    let x: Vec<Vec<f64>> = (0..10)
        .map(|j| {
            (0..4)
                .map(|i| 1.5 * ((7 * j + 3 * i + 1) as f64).sin())
                .collect()
        })
        .collect();
    let y: Vec<Vec<f64>> = (0..10)
        .map(|j| {
            let r: Vec<f64> = (0..3).map(|i| 1.1 + ((5 * j + i) as f64).cos()).collect();
            let s: f64 = r.iter().sum();
            r.iter().map(|v| v / s).collect()
        })
        .collect();
    json!({ "x": x, "y": y })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradcheck_agrees_away_from_kinks() {
    let app = spawn(config()).await;
    for activation in ["relu", "sigmoid", "tanh"] {
        for reduction in ["sum", "mean"] {
            for bias in [false, true] {
                let label = format!("{activation} {reduction} bias={bias}");
                let id = app
                    .create(json!({
                        "layers": [4, 5, 3], "activation": activation, "bias": bias,
                        "grad_reduction": reduction, "init": {"method": "xavier", "seed": 4},
                    }))
                    .await;
                app.dataset(&id, small_data()).await;
                if bias {
                    // Move the biases off zero so their gradients are checked at a general point.
                    app.post(&format!("/sessions/{id}/train"), &json!({"epochs": 3}))
                        .await
                        .expect(200);
                }
                let r = app
                    .post(&format!("/sessions/{id}/gradcheck"), &json!({}))
                    .await
                    .expect(200);
                assert_eq!(r["h"], 1e-5, "{label}: {r}");
                let layers = r["layers"].as_array().unwrap();
                assert_eq!(layers.len(), 2, "{label}: {r}");
                for (k, l) in layers.iter().enumerate() {
                    assert_eq!(l["near_kink"], 0, "{label} layer {k}: {r}");
                    let e = l["rel_error"].as_f64().unwrap();
                    assert!(e < 1e-6, "{label} layer {k}: rel_error {e}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradcheck_counts_and_feels_a_kink() {
    let app = spawn(config()).await;
    // Hidden unit 0 has zero weights: its ReLU input is exactly 0 for every sample, where
    // the one-sided slopes differ and the centered difference cannot match the analytic 0.
    let w1 = json!([
        [0, 0, 0, 0],
        [0.01, -0.02, 0.03, 0.01],
        [-0.01, 0.02, 0.01, 0.02],
        [0.02, 0.01, -0.01, 0.01]
    ]);
    let w2 = json!([
        [0.5, -0.2, 0.1, 0.3],
        [-0.4, 0.2, 0.3, -0.1],
        [0.1, 0.1, -0.3, 0.2]
    ]);
    let id = app
        .create(json!({"layers": [4, 4, 3], "grad_reduction": "mean",
                       "init": {"method": "explicit", "weights": [w1, w2]}}))
        .await;
    app.dataset(&id, json!({"builtin": "cat-dog-ship"})).await;
    let r = app
        .post(&format!("/sessions/{id}/gradcheck"), &json!({"h": 1e-6}))
        .await
        .expect(200);
    assert_eq!(r["h"], 1e-6);
    let layers = &r["layers"];
    assert_eq!(
        layers[0]["near_kink"], 6,
        "one unit at the kink for 6 samples: {r}"
    );
    assert_eq!(
        layers[1]["near_kink"], 0,
        "the output layer has no ReLU: {r}"
    );
    assert!(layers[0]["rel_error"].as_f64().unwrap() > 1e-2, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gradcheck_refuses_bad_steps_missing_data_and_too_much_work() {
    let app = spawn(config()).await;
    let id = notebook_session(&app, false).await;
    let path = format!("/sessions/{id}/gradcheck");
    for h in [json!(0), json!(-1e-5), json!(1.5)] {
        let detail = app
            .post(&path, &json!({ "h": h }))
            .await
            .problem(422, "invalid_value");
        assert!(detail.contains("h is"), "{detail}");
    }
    app.post(&path, &json!({"h": "1e-5"}))
        .await
        .problem(400, "invalid_request");
    app.post(&path, &json!({"step": 1e-5}))
        .await
        .problem(400, "invalid_request");
    // No body at all is the default step.
    let r = app.raw(Method::POST, &path, None, None).await.expect(200);
    assert_eq!(r["h"], 1e-5);

    let bare = app.create(json!({"layers": [4, 3]})).await;
    app.post(&format!("/sessions/{bare}/gradcheck"), &json!({}))
        .await
        .problem(409, "no_dataset");

    // 2100 parameters on iris's 150 samples: 2 * 2100 * 150 * 2100 > 1e9 multiply-adds.
    let big = app.create(json!({"layers": [4, 300, 3]})).await;
    app.dataset(&big, json!({"builtin": "iris"})).await;
    let detail = app
        .post(&format!("/sessions/{big}/gradcheck"), &json!({}))
        .await
        .problem(422, "too_large");
    assert!(detail.contains("2100 parameters"), "{detail}");
}

// ---------------------------------------------------------------------------------------
// trace

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_agrees_with_gradients_and_predict() {
    let app = spawn(config()).await;
    for (reduction, bias) in [("sum", false), ("mean", true)] {
        let label = format!("{reduction} bias={bias}");
        let id = app
            .create(
                json!({"layers": [4, 4, 3], "activation": "tanh", "bias": bias,
                           "grad_reduction": reduction, "init": {"method": "xavier", "seed": 1}}),
            )
            .await;
        app.dataset(&id, json!({"builtin": "cat-dog-ship"})).await;
        app.train(&id, 2).await;
        let t = app
            .post(&format!("/sessions/{id}/trace"), &json!({}))
            .await
            .expect(200);
        let g = app
            .post(&format!("/sessions/{id}/gradients"), &json!({}))
            .await
            .expect(200);
        let p = app
            .post(
                &format!("/sessions/{id}/predict"),
                &json!({"x": cat_dog_ship_x(), "y": cat_dog_ship_y()}),
            )
            .await
            .expect(200);
        let layers = t["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "{label}");
        for (k, l) in layers.iter().enumerate() {
            assert_eq!(
                bits(&l["weight_gradient"]),
                bits(&g["weights"][k]),
                "{label}: layer {k}'s weight_gradient is not /gradients'"
            );
            if bias {
                assert_eq!(bits(&l["bias_gradient"]), bits(&g["biases"][k]), "{label}");
            } else {
                assert!(l["bias_gradient"].is_null(), "{label}: {l}");
            }
        }
        assert_eq!(
            bits(&t["probabilities"]),
            bits(&p["probabilities"]),
            "{label}"
        );
        assert_eq!(t["loss"], g["loss"], "{label}");
        assert_eq!(t["loss"], p["loss"], "{label}");

        // Layer 1 takes the samples, flattened; layer 2 takes layer 1's activation.
        assert_eq!(
            floats(&layers[0]["input"]),
            floats(&cat_dog_ship_x()),
            "{label}"
        );
        assert_eq!(layers[1]["input"], layers[0]["activation"], "{label}");
        let (z, a, local) = (
            floats(&layers[0]["pre_activation"]),
            floats(&layers[0]["activation"]),
            floats(&layers[0]["local_gradient"]),
        );
        for ((z, a), d) in z.iter().zip(&a).zip(&local) {
            assert!((z.tanh() - a).abs() <= 1e-15, "{label}: tanh({z}) != {a}");
            assert!(
                (1.0 - a * a - d).abs() <= 1e-15,
                "{label}: tanh' at {z} != {d}"
            );
        }
        // The last layer: upstream is P - Y (over M for mean), local all ones.
        let m = 6.0;
        let scale = if reduction == "mean" { 1.0 / m } else { 1.0 };
        let probs = floats(&t["probabilities"]);
        let upstream = floats(&layers[1]["upstream_gradient"]);
        for (j, c) in cat_dog_ship_y().into_iter().enumerate() {
            for i in 0..3 {
                let y = if i == c { 1.0 } else { 0.0 };
                let want = (probs[j * 3 + i] - y) * scale;
                assert_eq!(
                    upstream[j * 3 + i].to_bits(),
                    want.to_bits(),
                    "{label} [{j}][{i}]"
                );
            }
        }
        assert!(
            floats(&layers[1]["local_gradient"])
                .iter()
                .all(|&v| v == 1.0)
        );
        assert_eq!(layers[1]["activation"], t["probabilities"], "{label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_takes_a_batch_of_at_most_64() {
    let app = spawn(config()).await;
    let id = app
        .create(json!({"layers": [4, 3], "init": {"method": "he", "seed": 5}}))
        .await;
    let path = format!("/sessions/{id}/trace");
    app.post(&path, &json!({})).await.problem(409, "no_dataset");

    let batch = json!({"x": [[1, 2, 3, 4], [0.5, 0, -1, 2], [3, 3, 3, 3]], "y": [2, 0, 1]});
    let t = app.post(&path, &batch).await.expect(200);
    let l = &t["layers"][0];
    assert_eq!(l["input"].as_array().unwrap().len(), 3);
    assert_eq!(l["pre_activation"].as_array().unwrap().len(), 3);
    assert_eq!(t["probabilities"].as_array().unwrap().len(), 3);
    let g = app
        .post(&format!("/sessions/{id}/gradients"), &batch)
        .await
        .expect(200);
    assert_eq!(bits(&l["weight_gradient"]), bits(&g["weights"][0]));

    let x: Vec<Vec<f64>> = (0..65).map(|i| vec![i as f64; 4]).collect();
    let y: Vec<usize> = (0..65).map(|i| i % 3).collect();
    app.post(&path, &json!({"x": x, "y": y}))
        .await
        .problem(422, "too_large");
    app.post(&path, &json!({"x": &x[..64], "y": &y[..64]}))
        .await
        .expect(200);
    app.post(&path, &json!({"x": &x[..3]}))
        .await
        .problem(400, "invalid_request");

    // iris has 150 samples: too many to trace whole, so the answer says to send a batch.
    app.dataset(&id, json!({"builtin": "iris"})).await;
    let detail = app.post(&path, &json!({})).await.problem(422, "too_large");
    assert!(detail.contains("batch"), "{detail}");
    app.post(&path, &batch).await.expect(200);
}

// ---------------------------------------------------------------------------------------
// export, import, fork

/// Trains both sessions 100 epochs and demands bit-identical histories and parameters.
async fn assert_train_identically(app: &App, a: &str, b: &str, label: &str) {
    let ta = app.train(a, 100).await;
    let tb = app.train(b, 100).await;
    assert_eq!(
        ta["loss"].as_array().map(Vec::len),
        Some(100),
        "{label}: {ta}"
    );
    assert_eq!(
        bits(&ta["loss"]),
        bits(&tb["loss"]),
        "{label}: the histories differ"
    );
    for path in ["/weights", "/loss"] {
        let wa = app.get(&format!("/sessions/{a}{path}")).await.expect(200);
        let wb = app.get(&format!("/sessions/{b}{path}")).await.expect(200);
        assert_eq!(wa, wb, "{label}: GET {path} differs after training");
    }
}

/// The session resource without what differs between two sessions by design.
fn settings(s: &Value) -> Value {
    let mut s = s.clone();
    for key in ["id", "created_at", "expires_at"] {
        s.as_object_mut().unwrap().remove(key);
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_trains_on_bit_for_bit() {
    let app = spawn(config()).await;
    let notebook = notebook_session(&app, false).await;

    // Everything off its default: bias, tanh, mean, a learning rate, soft labels, 2x2 samples.
    let custom = app
        .create(
            json!({"layers": [4, 5, 3], "activation": "tanh", "bias": true,
                       "grad_reduction": "mean", "learning_rate": 0.05,
                       "init": {"method": "xavier", "seed": 11}}),
        )
        .await;
    app.dataset(
        &custom,
        json!({"x": [[[0.1, 0.7], [0.3, 0.2]], [[0.9, 0.4], [0.6, 0.05]], [[0.3, 0.3], [0.8, 0.1]]],
               "y": [[0.7, 0.2, 0.1], [0, 1, 0], [0.25, 0.25, 0.5]]}),
    )
    .await;
    app.train(&custom, 9).await;

    // An iris session whose dataset was set after training started elsewhere.
    let iris = app
        .create(json!({"layers": [4, 3], "init": {"method": "he", "seed": 2}}))
        .await;
    app.dataset(&iris, json!({"builtin": "iris"})).await;

    for (label, id) in [("notebook", notebook), ("custom", custom), ("iris", iris)] {
        let doc = app.get(&format!("/sessions/{id}/export")).await;
        let parsed = doc.expect(200);
        assert_eq!(parsed["format"], "backprop-server/session-v1", "{label}");
        let imported = app
            .raw(
                Method::POST,
                "/sessions/import",
                Some("application/json"),
                Some(doc.body.clone()),
            )
            .await;
        let session = imported.expect(201);
        let new = session["id"].as_str().unwrap().to_owned();
        assert_ne!(new, id, "{label}: the import got the original's id");
        assert_eq!(
            imported.location.as_deref(),
            Some(&*format!("/sessions/{new}"))
        );
        let original = app.get(&format!("/sessions/{id}")).await.expect(200);
        assert_eq!(settings(&session), settings(&original), "{label}");
        // The import's own export is the same document, byte for byte.
        let again = app.get(&format!("/sessions/{new}/export")).await;
        assert_eq!(
            again.body, doc.body,
            "{label}: export -> import -> export changed it"
        );
        assert_train_identically(&app, &id, &new, label).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_document_holds_the_session() {
    let app = spawn(config()).await;
    let id = app
        .create(json!({"layers": [4, 2, 3], "bias": true, "init": {"method": "numpy_rand", "seed": 42}}))
        .await;
    let empty = app.get(&format!("/sessions/{id}/export")).await.expect(200);
    assert!(empty["dataset"].is_null(), "{empty}");
    assert_eq!(empty["loss"], json!([]));
    assert!(empty["initial_loss"].is_null());
    assert_eq!(empty["init"], json!({"method": "numpy_rand", "seed": 42}));

    app.dataset(
        &id,
        json!({"x": [[[1, 2], [3, 4]], [[4, 3], [2, 1]]], "y": [2, 0]}),
    )
    .await;
    let train = app.train(&id, 4).await;
    let doc = app.get(&format!("/sessions/{id}/export")).await.expect(200);
    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect(200);
    assert_eq!(doc["weights"], w["weights"]);
    assert_eq!(doc["biases"], w["biases"]);
    assert_eq!(doc["loss"], train["loss"]);
    assert_eq!(doc["initial_loss"], train["initial_loss"]);
    for (key, want) in [
        ("layers", json!([4, 2, 3])),
        ("activation", json!("relu")),
        ("learning_rate", json!(0.0001)),
        ("grad_reduction", json!("sum")),
        ("bias", json!(true)),
    ] {
        assert_eq!(doc[key], want, "{key}");
    }
    let d = &doc["dataset"];
    assert_eq!(
        d["x"],
        json!([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]),
        "{d}"
    );
    assert_eq!(d["y"], json!([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), "{d}");
    assert_eq!(d["sample_shape"], json!([2, 2]));
    assert!(d["builtin"].is_null());

    app.dataset(&id, json!({"builtin": "cat-dog-ship"})).await;
    let doc = app.get(&format!("/sessions/{id}/export")).await.expect(200);
    assert_eq!(doc["dataset"]["builtin"], "cat-dog-ship");
    assert_eq!(floats(&doc["dataset"]["x"]), floats(&cat_dog_ship_x()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_checks_the_document_like_create_dataset_and_weights() {
    let app = spawn(config()).await;
    let id = notebook_session(&app, false).await;
    let doc = app.get(&format!("/sessions/{id}/export")).await.expect(200);
    let total = || async { app.get("/sessions").await.expect(200)["total"].clone() };
    let before = total().await;

    let edit = |f: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        f(&mut d);
        d
    };
    let mut cdr = doc["dataset"].clone();
    cdr["builtin"] = Value::Null;
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "unknown format",
            edit(&|d| d["format"] = json!("v0")),
            400,
            "invalid_request",
        ),
        (
            "no format",
            edit(&|d| {
                d.as_object_mut().unwrap().remove("format");
            }),
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            edit(&|d| d["id"] = json!("x")),
            400,
            "invalid_request",
        ),
        (
            "layer of 0",
            edit(&|d| d["layers"] = json!([4, 0, 3])),
            422,
            "invalid_value",
        ),
        (
            "one size",
            edit(&|d| d["layers"] = json!([4])),
            422,
            "invalid_value",
        ),
        (
            // 4.0 is an integer (JSON Schema's count); 4.5 is not.
            "fractional size",
            edit(&|d| d["layers"] = json!([4, 4.5, 3])),
            400,
            "invalid_request",
        ),
        (
            "negative size",
            edit(&|d| d["layers"] = json!([4, -4, 3])),
            422,
            "invalid_value",
        ),
        (
            // Their products overflow even a u128: refused by the limit, never wrapped.
            "sizes near u64::MAX",
            edit(&|d| d["layers"] = json!([4, u64::MAX, u64::MAX, u64::MAX, u64::MAX, 3])),
            422,
            "too_large",
        ),
        (
            "learning rate",
            edit(&|d| d["learning_rate"] = json!(-1)),
            422,
            "invalid_value",
        ),
        (
            "activation",
            edit(&|d| d["activation"] = json!("gelu")),
            400,
            "invalid_request",
        ),
        (
            "seed",
            edit(&|d| d["init"]["seed"] = json!(-1)),
            422,
            "invalid_value",
        ),
        (
            "explicit with a seed",
            edit(&|d| d["init"]["method"] = json!("explicit")),
            400,
            "invalid_request",
        ),
        (
            "weights shape",
            edit(&|d| d["weights"][1][0].as_array_mut().unwrap().push(json!(1))),
            422,
            "shape_mismatch",
        ),
        (
            "biases without bias",
            edit(&|d| d["biases"] = json!([[0, 0, 0, 0], [0, 0, 0]])),
            422,
            "shape_mismatch",
        ),
        (
            "unknown builtin",
            edit(&|d| d["dataset"]["builtin"] = json!("mnist")),
            404,
            "not_found",
        ),
        (
            "builtin with other data",
            edit(&|d| d["dataset"]["x"][3][0] = json!(61)),
            422,
            "invalid_value",
        ),
        (
            "sample too long",
            edit(&|d| {
                d["dataset"] = cdr.clone();
                d["dataset"]["x"][2].as_array_mut().unwrap().push(json!(1));
            }),
            422,
            "shape_mismatch",
        ),
        (
            "label out of range",
            edit(&|d| {
                d["dataset"] = cdr.clone();
                d["dataset"]["y"] = json!([0, 1, 2, 0, 1, 7]);
            }),
            422,
            "invalid_labels",
        ),
        (
            "sample_shape",
            edit(&|d| {
                d["dataset"] = cdr.clone();
                d["dataset"]["sample_shape"] = json!([3, 2]);
            }),
            422,
            "shape_mismatch",
        ),
        (
            "x without y",
            edit(&|d| {
                d["dataset"] = json!({"x": cdr["x"]});
            }),
            400,
            "invalid_request",
        ),
        (
            "negative loss",
            edit(&|d| d["loss"][2] = json!(-0.5)),
            422,
            "invalid_value",
        ),
        (
            "history without initial_loss",
            edit(&|d| d["initial_loss"] = Value::Null),
            422,
            "invalid_value",
        ),
    ];
    for (label, body, status, code) in cases {
        let r = app.post("/sessions/import", &body).await;
        assert_eq!(r.status, status, "{label}: {}", r.body);
        assert_eq!(r.json()["code"], code, "{label}: {}", r.body);
    }
    app.raw(
        Method::POST,
        "/sessions/import",
        Some("application/json"),
        None,
    )
    .await
    .problem(400, "invalid_json");
    assert_eq!(
        total().await,
        before,
        "a refused import left a session behind"
    );

    // The same data without the builtin name imports as plain data, and trains the same.
    let r = app
        .post("/sessions/import", &edit(&|d| d["dataset"] = cdr.clone()))
        .await
        .expect(201);
    assert!(r["dataset"]["builtin"].is_null(), "{r}");
    let new = r["id"].as_str().unwrap().to_owned();
    assert_train_identically(&app, &id, &new, "builtin as plain data").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_fork_respect_the_server_limits() {
    let cfg = Config {
        max_parameters: 20,
        max_samples: 5,
        max_history: 3,
        max_sessions: 2,
        ..config()
    };
    let app = spawn(cfg).await;
    let id = app
        .create(json!({"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 0}}))
        .await;
    app.dataset(&id, json!({"x": [[1, 2, 3, 4]], "y": [1]}))
        .await;
    app.train(&id, 2).await;
    let doc = app.get(&format!("/sessions/{id}/export")).await.expect(200);

    let mut big = doc.clone();
    big["layers"] = json!([4, 4, 3]);
    big["weights"] = json!([vec![vec![0.1; 4]; 4], vec![vec![0.1; 4]; 3]]);
    app.post("/sessions/import", &big)
        .await
        .problem(422, "too_large");

    let mut many = doc.clone();
    many["dataset"]["x"] = json!(vec![vec![1.0; 4]; 6]);
    many["dataset"]["y"] = json!(vec![[0.0, 1.0, 0.0]; 6]);
    app.post("/sessions/import", &many)
        .await
        .problem(422, "too_large");

    let mut long = doc.clone();
    long["loss"] = json!([0.5, 0.4, 0.3, 0.2]);
    app.post("/sessions/import", &long)
        .await
        .problem(422, "too_large");

    // One session exists; one more fits, then neither import nor fork may add a third.
    let copy = app
        .post(&format!("/sessions/{id}/fork"), &Value::Null)
        .await;
    assert_eq!(copy.status, 400, "null is a body: {}", copy.body);
    let fork = app
        .raw(Method::POST, &format!("/sessions/{id}/fork"), None, None)
        .await;
    fork.expect(201);
    app.post("/sessions/import", &doc)
        .await
        .problem(429, "too_many_sessions");
    app.raw(Method::POST, &format!("/sessions/{id}/fork"), None, None)
        .await
        .problem(429, "too_many_sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_copies_the_session_and_then_goes_its_own_way() {
    let app = spawn(config()).await;
    let id = notebook_session(&app, true).await;
    let before = app.state_of(&id).await;
    let r = app
        .raw(Method::POST, &format!("/sessions/{id}/fork"), None, None)
        .await;
    let fork = r.expect(201);
    let new = fork["id"].as_str().unwrap().to_owned();
    assert_ne!(new, id);
    assert_eq!(r.location.as_deref(), Some(&*format!("/sessions/{new}")));
    let original = app.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(settings(&fork), settings(&original));
    assert_eq!(fork["epochs_trained"], 5);
    assert_eq!(
        app.state_of(&id).await,
        before,
        "forking changed the original"
    );
    assert_eq!(
        app.get(&format!("/sessions/{id}/export")).await.body,
        app.get(&format!("/sessions/{new}/export")).await.body,
        "the fork's document is not the original's"
    );
    assert_train_identically(&app, &id, &new, "fork").await;

    // From here on they are two sessions.
    app.train(&new, 3).await;
    let a = app.get(&format!("/sessions/{id}")).await.expect(200);
    let b = app.get(&format!("/sessions/{new}")).await.expect(200);
    assert_eq!(a["epochs_trained"], 105);
    assert_eq!(b["epochs_trained"], 108);

    // A fork takes no body; a session without a dataset forks too.
    let path = format!("/sessions/{id}/fork");
    app.post(&path, &json!({}))
        .await
        .problem(400, "invalid_request");
    app.raw(
        Method::POST,
        &path,
        Some("text/plain"),
        Some("please".into()),
    )
    .await
    .problem(400, "invalid_request");
    app.raw(
        Method::POST,
        &path,
        Some("application/json"),
        Some("  \n".into()),
    )
    .await
    .expect(201);
    app.raw(Method::GET, &path, None, None)
        .await
        .problem(405, "method_not_allowed");
    app.raw(
        Method::POST,
        "/sessions/00000000-0000-4000-8000-000000000000/fork",
        None,
        None,
    )
    .await
    .problem(404, "not_found");
    let bare = app.create(json!({"layers": [2, 2]})).await;
    let f = app
        .raw(Method::POST, &format!("/sessions/{bare}/fork"), None, None)
        .await
        .expect(201);
    assert!(f["dataset"].is_null(), "{f}");
}

// ---------------------------------------------------------------------------------------
// version

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_states_the_build_and_its_conventions() {
    let app = spawn(config()).await;
    let v = app.get("/version").await.expect(200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert_eq!(v["name"], "backprop-server");
    assert_eq!(v["export_format"], "backprop-server/session-v1");
    let c = &v["conventions"];
    for (key, want) in [
        ("float", json!("f64")),
        ("weights_shape", json!("(out, in)")),
        ("loss", json!("mean_cross_entropy")),
        ("grad_reduction_default", json!("sum")),
        ("learning_rate_default", json!(0.0001)),
        ("rtol_default", json!(1e-7)),
        ("atol_default", json!(0.0)),
        ("trace_max_samples", json!(64)),
    ] {
        assert_eq!(c[key], want, "conventions.{key} in {v}");
    }
    assert_eq!(c["init"]["default_method"], "numpy_rand");
    assert!(
        c["init"]["xavier"]
            .as_str()
            .unwrap()
            .contains("sqrt(6 / (in + out))")
    );
    assert!(c["init"]["he"].as_str().unwrap().contains("sqrt(6 / in)"));
    assert!(
        c["rel_error"]
            .as_str()
            .unwrap()
            .contains("max(1e-8, |a| + |b|)")
    );
    assert!(
        c["allclose"]
            .as_str()
            .unwrap()
            .contains("atol + rtol * |b|")
    );
    assert_eq!(c["gradcheck"]["h_default"], 1e-5);
    app.raw(Method::POST, "/version", None, None)
        .await
        .problem(405, "method_not_allowed");
}
