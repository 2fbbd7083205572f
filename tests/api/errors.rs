//! The contract's error table and its finer points, one row per bad request: each answer
//! must be the right problem response, and no failed request may change a session.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{JSON, TestApp, config, detail, problem_faults, spawn_app};

/// A bad request. `{id}` in the path stands for a trained session ([4, 4, 3] with bias and
/// the cat-dog-ship data), `{fresh}` for one without a dataset ([4, 2], no bias), `{gone}`
/// for a well-formed id that names no session.
struct Row {
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Option<&'static str>,
    status: u16,
    code: &'static str,
}

fn row(
    method: Method,
    path: &'static str,
    body: &'static str,
    status: u16,
    code: &'static str,
) -> Row {
    Row {
        method,
        path,
        content_type: JSON,
        body: Some(body),
        status,
        code,
    }
}

fn get(path: &'static str, status: u16, code: &'static str) -> Row {
    Row {
        method: Method::GET,
        path,
        content_type: None,
        body: None,
        status,
        code,
    }
}

fn typed(
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: &'static str,
    status: u16,
    code: &'static str,
) -> Row {
    Row {
        method,
        path,
        content_type,
        body: Some(body),
        status,
        code,
    }
}

const GONE: &str = "00000000-0000-4000-8000-000000000000";

pub struct Victims {
    pub id: String,
    pub fresh: String,
}

pub async fn victims(app: &TestApp) -> Victims {
    let (id, _) = app
        .create_session(&json!({"layers": [4, 4, 3], "bias": true,
            "init": {"method": "numpy_rand", "seed": 3}}))
        .await;
    app.put_builtin(&id, "cat-dog-ship").await;
    app.train(&id, 3).await;
    let (fresh, _) = app.create_session(&json!({"layers": [4, 2]})).await;
    Victims { id, fresh }
}

/// Sends every row, and after each checks the problem response and that neither victim
/// changed; reports all failing rows at once.
async fn run_table(app: &TestApp, v: &Victims, rows: Vec<Row>) {
    let mut failures = Vec::new();
    let before = (app.snapshot(&v.id).await, app.snapshot(&v.fresh).await);
    // A failed create must not leave a session behind either.
    let list_before = app.get("/sessions").await.body;
    for r in rows {
        let path = r
            .path
            .replace("{id}", &v.id)
            .replace("{fresh}", &v.fresh)
            .replace("{gone}", GONE)
            .replace("{ID}", &v.id.to_ascii_uppercase());
        let resp = app
            .send(r.method.clone(), &path, r.content_type, r.body)
            .await;
        let mut faults = problem_faults(&resp, r.status, r.code);
        faults.extend(extra_faults(&resp, r.status));
        for (victim, snap) in [(&v.id, &before.0), (&v.fresh, &before.1)] {
            faults.extend(app.snapshot(victim).await.changes_since(snap));
        }
        let list = app.get("/sessions").await.body;
        if list != list_before {
            faults.push(format!(
                "GET /sessions changed: {}",
                crate::helpers::clip(&list)
            ));
        }
        if !faults.is_empty() {
            failures.push(format!("{}\n    {}", resp.request, faults.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What particular statuses carry beyond the problem body.
fn extra_faults(resp: &crate::helpers::Resp, status: u16) -> Vec<String> {
    let mut faults = Vec::new();
    if status == 415 {
        let body = resp.json();
        let d = detail(&body);
        if !(d.contains("--json") || d.contains("Content-Type: application/json")) {
            faults.push(format!("415 detail {d:?} does not show the curl fix"));
        }
    }
    faults
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_bodies() {
    let app = spawn_app(config()).await;
    let v = victims(&app).await;
    use Method as M;
    let rows = vec![
        row(M::POST, "/sessions", "{", 400, "invalid_json"),
        row(M::POST, "/sessions", "", 400, "invalid_json"),
        typed(M::POST, "/sessions", None, "", 400, "invalid_json"),
        typed(
            M::POST,
            "/sessions",
            Some("text/plain"),
            "",
            400,
            "invalid_json",
        ),
        row(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": 1e400}"#,
            400,
            "invalid_json",
        ),
        row(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": NaN}"#,
            400,
            "invalid_json",
        ),
        row(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": Infinity}"#,
            400,
            "invalid_json",
        ),
        row(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3]} trailing"#,
            400,
            "invalid_json",
        ),
        row(
            M::POST,
            "/sessions",
            r#"{'layers': [4, 3]}"#,
            400,
            "invalid_json",
        ),
        row(M::PUT, "/sessions/{id}/dataset", "", 400, "invalid_json"),
        typed(
            M::PUT,
            "/sessions/{id}/dataset",
            Some("text/plain"),
            "",
            400,
            "invalid_json",
        ),
        row(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [0],}"#,
            400,
            "invalid_json",
        ),
        row(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 1e400]], "y": [0]}"#,
            400,
            "invalid_json",
        ),
        row(M::PUT, "/sessions/{id}/weights", "", 400, "invalid_json"),
        row(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[[1e400, 0, 0, 0]]]}"#,
            400,
            "invalid_json",
        ),
        row(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[[-1e999, 0, 0, 0]]]}"#,
            400,
            "invalid_json",
        ),
        row(M::POST, "/sessions/{id}/train", "", 400, "invalid_json"),
        typed(
            M::POST,
            "/sessions/{id}/train",
            None,
            "",
            400,
            "invalid_json",
        ),
        row(
            M::POST,
            "/sessions/{id}/train",
            "{epochs: 5}",
            400,
            "invalid_json",
        ),
        row(M::POST, "/sessions/{id}/predict", "", 400, "invalid_json"),
        row(
            M::POST,
            "/sessions/{id}/predict",
            "[1, 2",
            400,
            "invalid_json",
        ),
        row(
            M::POST,
            "/sessions/{id}/gradients",
            "{",
            400,
            "invalid_json",
        ),
        row(
            M::POST,
            "/sessions/{id}/gradients",
            r#"{"x": [[1e400, 0, 0, 0]], "y": [0]}"#,
            400,
            "invalid_json",
        ),
    ];
    run_table(&app, &v, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_wrong_form() {
    let app = spawn_app(config()).await;
    let v = victims(&app).await;
    use Method as M;
    let ir = |m: M, p: &'static str, b: &'static str| row(m, p, b, 400, "invalid_request");
    let rows = vec![
        ir(M::POST, "/sessions", r#"{"layers": ["4", 3]}"#),
        // JSON Schema integers: 1e12 is one, judged by its range.
        row(
            M::POST,
            "/sessions",
            r#"{"layers": [1e12, 3]}"#,
            422,
            "too_large",
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "activation": 5}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "activation": ["relu"]}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "grad_reduction": {}}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": ["numpy_rand", 0]}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": ["numpy_rand", 0, null, null]}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": 5}}"#,
        ),
        ir(M::POST, "/sessions", r#"{"layers": [4, 3.5]}"#),
        ir(M::POST, "/sessions", r#"{"layers": "4,3"}"#),
        ir(M::POST, "/sessions", r#"{"layers": null}"#),
        ir(M::POST, "/sessions", "{}"),
        ir(M::POST, "/sessions", "[]"),
        ir(M::POST, "/sessions", "[4, 3]"),
        ir(M::POST, "/sessions", "42"),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "activaton": "relu"}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "activation": "softplus"}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "activation": "ReLU"}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "grad_reduction": "avg"}"#,
        ),
        ir(M::POST, "/sessions", r#"{"layers": [4, 3], "bias": "yes"}"#),
        ir(M::POST, "/sessions", r#"{"layers": [4, 3], "bias": 1}"#),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": "0.1"}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "gaussian", "seed": 1}}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 1.5}}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "numpy_rand", "seed": "1"}}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "numpy_rand", "sed": 1}}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "xavier", "seed": 1, "scale": 2}}"#,
        ),
        ir(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": "numpy_rand"}"#,
        ),
        ir(M::POST, "/sessions/{id}/train", r#"{"epochs": "10"}"#),
        ir(M::POST, "/sessions/{id}/train", r#"{"epochs": 2.5}"#),
        ir(M::POST, "/sessions/{id}/train", "{}"),
        ir(
            M::POST,
            "/sessions/{id}/train",
            r#"{"epochs": 5, "retrun_loss": false}"#,
        ),
        ir(
            M::POST,
            "/sessions/{id}/train",
            r#"{"epochs": 5, "return_loss": "no"}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"builtin": "cat-dog-ship", "x": [[1, 2, 3, 4]], "y": [0]}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"builtin": "cat-dog-ship", "y": [0]}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"builtin": "cat-dog-ship", "x": [[1, 2, 3, 4]]}"#,
        ),
        ir(M::PUT, "/sessions/{id}/dataset", r#"{"x": [[1, 2, 3, 4]]}"#),
        ir(M::PUT, "/sessions/{id}/dataset", r#"{"y": [0]}"#),
        ir(M::PUT, "/sessions/{id}/dataset", "{}"),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [0], "extra": 1}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [0.5]}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": ["0"]}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [["1", 2, 3, 4]], "y": [0]}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[null, 2, 3, 4]], "y": [0]}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": "cats", "y": [0]}"#,
        ),
        ir(M::PUT, "/sessions/{id}/dataset", r#"{"builtin": 5}"#),
        ir(M::PUT, "/sessions/{id}/weights", r#"{"weights": "none"}"#),
        ir(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weight": [[[0, 0, 0, 0]]]}"#,
        ),
        ir(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[[0, 0, "0", 0]]]}"#,
        ),
        ir(M::POST, "/sessions/{id}/predict", "{}"),
        ir(
            M::POST,
            "/sessions/{id}/predict",
            r#"{"x": [[1, 2, 3, 4]], "z": 1}"#,
        ),
        ir(
            M::POST,
            "/sessions/{id}/gradients",
            r#"{"x": [[1, 2, 3, 4]]}"#,
        ),
        ir(M::POST, "/sessions/{id}/gradients", r#"{"y": [0]}"#),
        ir(
            M::POST,
            "/sessions/{id}/gradients",
            r#"{"x": [[1, 2, 3, 4]], "y": [0], "lr": 1}"#,
        ),
        get("/sessions?limit=abc", 400, "invalid_request"),
        get("/sessions?limit=1.5", 400, "invalid_request"),
        get("/sessions?offset=x", 400, "invalid_request"),
        get("/sessions/{id}/loss?format=xml", 400, "invalid_request"),
        get("/sessions/{id}/loss?limit=abc", 400, "invalid_request"),
        get("/sessions/{id}/loss?offset=1.5", 400, "invalid_request"),
    ];
    run_table(&app, &v, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_out_of_range() {
    let app = spawn_app(config()).await;
    let v = victims(&app).await;
    use Method as M;
    let iv = |m: M, p: &'static str, b: &'static str| row(m, p, b, 422, "invalid_value");
    let rows = vec![
        iv(M::POST, "/sessions", r#"{"layers": [4, 0]}"#),
        iv(M::POST, "/sessions", r#"{"layers": [0, 3]}"#),
        iv(M::POST, "/sessions", r#"{"layers": [4, -3]}"#),
        iv(M::POST, "/sessions", r#"{"layers": [4]}"#),
        iv(M::POST, "/sessions", r#"{"layers": []}"#),
        iv(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 4, 4, 4, 4, 4, 4, 4, 4, 3]}"#,
        ),
        iv(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": 0}"#,
        ),
        iv(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": 0.0}"#,
        ),
        iv(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": -0.0}"#,
        ),
        iv(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": -0.1}"#,
        ),
        iv(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 4294967296}}"#,
        ),
        iv(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "he", "seed": -1}}"#,
        ),
        iv(M::POST, "/sessions/{id}/train", r#"{"epochs": 0}"#),
        iv(M::POST, "/sessions/{id}/train", r#"{"epochs": -1}"#),
        iv(M::POST, "/sessions/{id}/train", r#"{"epochs": 1000001}"#),
        get("/sessions?limit=0", 422, "invalid_value"),
        get("/sessions?limit=1001", 422, "invalid_value"),
        get("/sessions?offset=-1", 422, "invalid_value"),
        get("/sessions/{id}/loss?limit=0", 422, "invalid_value"),
        get("/sessions/{id}/loss?limit=1000001", 422, "invalid_value"),
        get("/sessions/{id}/loss?offset=-1", 422, "invalid_value"),
        get(
            "/sessions/{id}/loss?format=csv&limit=0",
            422,
            "invalid_value",
        ),
    ];
    run_table(&app, &v, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_that_do_not_fit() {
    let app = spawn_app(config()).await;
    let v = victims(&app).await;
    use Method as M;
    let sm = |m: M, p: &'static str, b: &'static str| row(m, p, b, 422, "shape_mismatch");
    let rows = vec![
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4, 5]], "y": [0]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3]], "y": [0]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4], [1, 2, 3]], "y": [0, 1]}"#,
        ),
        // Same number of values, different shapes: the contract wants one shape for all.
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[[1, 2], [3, 4]], [1, 2, 3, 4]], "y": [0, 1]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[[1, 2], [3, 4, 5]]], "y": [0]}"#,
        ),
        // Nine levels deep; eight is the most.
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[[[[[[[[[1, 2, 3, 4]]]]]]]]]], "y": [0]}"#,
        ),
        sm(M::PUT, "/sessions/{id}/dataset", r#"{"x": [], "y": []}"#),
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4], [1, 2, 3, 4]], "y": [0]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [0, 1]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [[1, 0]]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [[0.25, 0.25, 0.25, 0.25]]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{fresh}/dataset",
            r#"{"builtin": "cat-dog-ship"}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{fresh}/dataset",
            r#"{"builtin": "iris"}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]], [[0,0,0],[0,0,0],[0,0,0]]]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]]]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]], [[0,0,0,0],[0,0,0,0],[0,0,0,0]], [[0,0,0]]]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0]], [[0,0,0,0],[0,0,0,0],[0,0,0,0]]]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,0,0]], [[0,0,0,0],[0,0,0,0],[0,0,0,0]]], "biases": [[0,0,0,0],[0,0]]}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [], "biases": null}"#,
        ),
        sm(
            M::PUT,
            "/sessions/{fresh}/weights",
            r#"{"weights": [[[0,0,0,0],[0,0,0,0]]], "biases": [[0,0]]}"#,
        ),
        sm(M::POST, "/sessions/{id}/predict", r#"{"x": []}"#),
        sm(M::POST, "/sessions/{id}/predict", r#"{"x": [[1, 2, 3]]}"#),
        sm(
            M::POST,
            "/sessions/{id}/predict",
            r#"{"x": [[1, 2, 3, 4]], "y": [0, 1]}"#,
        ),
        sm(
            M::POST,
            "/sessions/{id}/gradients",
            r#"{"x": [[1, 2, 3, 4]], "y": [[1, 0]]}"#,
        ),
        sm(M::POST, "/sessions/{id}/gradients", r#"{"x": [], "y": []}"#),
        sm(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "explicit", "weights": [[[1, 2, 3]]]}}"#,
        ),
        sm(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"method": "explicit", "weights": [[[0,0,0,0],[0,0,0,0],[0,0,0,0]]], "biases": [[0, 0, 0]]}}"#,
        ),
        sm(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "bias": true, "init": {"method": "explicit", "weights": [[[0,0,0,0],[0,0,0,0],[0,0,0,0]]], "biases": [[0, 0]]}}"#,
        ),
        sm(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 4, 3], "init": {"method": "explicit", "weights": [[[0,0,0,0],[0,0,0,0],[0,0,0,0]]]}}"#,
        ),
    ];
    run_table(&app, &v, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_that_are_not_classes() {
    let app = spawn_app(config()).await;
    let v = victims(&app).await;
    use Method as M;
    let il = |m: M, p: &'static str, b: &'static str| row(m, p, b, 422, "invalid_labels");
    let rows = vec![
        il(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [3]}"#,
        ),
        il(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [-1]}"#,
        ),
        il(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4], [4, 3, 2, 1]], "y": [0, 99]}"#,
        ),
        il(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [[0.5, 0.4, 0.0]]}"#,
        ),
        il(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [[1.5, -0.5, 0.0]]}"#,
        ),
        il(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [[0, 0, 0]]}"#,
        ),
        il(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [[1, 0, 1e-5]]}"#,
        ),
        il(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4], [4, 3, 2, 1]], "y": [0, [1, 0, 0]]}"#,
        ),
        il(
            M::POST,
            "/sessions/{id}/predict",
            r#"{"x": [[1, 2, 3, 4]], "y": [7]}"#,
        ),
        il(
            M::POST,
            "/sessions/{id}/gradients",
            r#"{"x": [[1, 2, 3, 4]], "y": [[0.9, 0.0, 0.0]]}"#,
        ),
    ];
    run_table(&app, &v, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_things_conflicts_and_media_types() {
    let app = spawn_app(config()).await;
    let v = victims(&app).await;
    use Method as M;
    let nf = |p: &'static str| get(p, 404, "not_found");
    let um = |m: M, p: &'static str, ct: Option<&'static str>, b: &'static str| {
        typed(m, p, ct, b, 415, "unsupported_media_type")
    };
    let rows = vec![
        nf("/sessions/{gone}"),
        nf("/sessions/{gone}/weights"),
        nf("/sessions/{gone}/loss"),
        nf("/sessions/not-a-uuid"),
        nf("/sessions/{ID}"),
        nf("/datasets/mnist"),
        nf("/nope"),
        nf("/sessions/{id}/"),
        nf("/sessions/{id}/weights/"),
        nf("/sessions/{id}/bogus"),
        nf("/sessions/"),
        nf("/Sessions"),
        nf("/healthz/"),
        Row {
            method: M::DELETE,
            path: "/sessions/{gone}",
            content_type: None,
            body: None,
            status: 404,
            code: "not_found",
        },
        row(
            M::PUT,
            "/sessions/{gone}/dataset",
            r#"{"builtin": "iris"}"#,
            404,
            "not_found",
        ),
        row(
            M::POST,
            "/sessions/{gone}/train",
            r#"{"epochs": 1}"#,
            404,
            "not_found",
        ),
        row(
            M::PUT,
            "/sessions/{gone}/weights",
            r#"{"weights": [[[0, 0, 0, 0]]]}"#,
            404,
            "not_found",
        ),
        row(
            M::POST,
            "/sessions/{gone}/predict",
            r#"{"x": [[1, 2, 3, 4]]}"#,
            404,
            "not_found",
        ),
        row(
            M::POST,
            "/sessions/{gone}/gradients",
            "{}",
            404,
            "not_found",
        ),
        row(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"builtin": "mnist"}"#,
            404,
            "not_found",
        ),
        row(
            M::POST,
            "/sessions/{fresh}/train",
            r#"{"epochs": 1}"#,
            409,
            "no_dataset",
        ),
        typed(
            M::POST,
            "/sessions/{fresh}/gradients",
            None,
            "",
            409,
            "no_dataset",
        ),
        row(
            M::POST,
            "/sessions/{fresh}/gradients",
            "{}",
            409,
            "no_dataset",
        ),
        um(
            M::POST,
            "/sessions",
            Some("text/plain"),
            r#"{"layers": [4, 3]}"#,
        ),
        um(M::POST, "/sessions", None, r#"{"layers": [4, 3]}"#),
        um(
            M::POST,
            "/sessions",
            Some("application/x-www-form-urlencoded"),
            r#"{"layers": [4, 3]}"#,
        ),
        um(
            M::POST,
            "/sessions",
            Some("text/json"),
            r#"{"layers": [4, 3]}"#,
        ),
        um(
            M::PUT,
            "/sessions/{id}/dataset",
            Some("text/plain"),
            r#"{"builtin": "iris"}"#,
        ),
        um(
            M::POST,
            "/sessions/{id}/train",
            Some("application/xml"),
            r#"{"epochs": 1}"#,
        ),
        um(M::PUT, "/sessions/{id}/weights", None, r#"{"weights": []}"#),
        um(
            M::POST,
            "/sessions/{id}/predict",
            Some("multipart/form-data"),
            r#"{"x": [[1, 2, 3, 4]]}"#,
        ),
        um(
            M::POST,
            "/sessions/{id}/gradients",
            Some("text/plain"),
            "{}",
        ),
    ];
    run_table(&app, &v, rows).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_name_the_allowed_ones() {
    let app = spawn_app(config()).await;
    let v = victims(&app).await;
    use Method as M;
    let cases: &[(M, &str, &[&str])] = &[
        (M::DELETE, "/healthz", &["GET"]),
        (M::POST, "/healthz", &["GET"]),
        (M::POST, "/openapi.yaml", &["GET"]),
        (M::PUT, "/sessions", &["GET", "POST"]),
        (M::DELETE, "/sessions", &["GET", "POST"]),
        (M::POST, "/datasets", &["GET"]),
        (M::DELETE, "/datasets/iris", &["GET"]),
        (M::POST, "/sessions/{id}", &["GET", "DELETE"]),
        (M::PUT, "/sessions/{id}", &["GET", "DELETE"]),
        (M::GET, "/sessions/{id}/dataset", &["PUT"]),
        (M::GET, "/sessions/{id}/train", &["POST"]),
        (M::PUT, "/sessions/{id}/train", &["POST"]),
        (M::POST, "/sessions/{id}/loss", &["GET"]),
        (M::DELETE, "/sessions/{id}/weights", &["GET", "PUT"]),
        (M::POST, "/sessions/{id}/weights", &["GET", "PUT"]),
        (M::GET, "/sessions/{id}/predict", &["POST"]),
        (M::GET, "/sessions/{id}/gradients", &["POST"]),
    ];
    let before = app.snapshot(&v.id).await;
    let mut failures = Vec::new();
    for (method, path, allowed) in cases {
        let path = path.replace("{id}", &v.id);
        let resp = app.send(method.clone(), &path, None, None).await;
        let mut faults = problem_faults(&resp, 405, "method_not_allowed");
        let allow: Vec<String> = resp
            .header("allow")
            .unwrap_or("")
            .split(',')
            .map(|m| m.trim().to_ascii_uppercase())
            .collect();
        for m in *allowed {
            if !allow.iter().any(|a| a == m) {
                faults.push(format!("Allow {allow:?} lacks {m}"));
            }
        }
        if allow.iter().any(|a| a == method.as_str()) {
            faults.push(format!("Allow {allow:?} lists the refused method"));
        }
        if !faults.is_empty() {
            failures.push(format!("{}\n    {}", resp.request, faults.join("\n    ")));
        }
    }
    failures.extend(app.snapshot(&v.id).await.changes_since(&before));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
