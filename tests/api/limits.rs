//! The configurable limits, each set small: at the limit a request works, past it the
//! request is refused with the contract's problem and changes nothing.

use std::time::{Duration, Instant};

use backprop_server::Config;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{JSON, assert_problem, config, detail, problem_faults, spawn_app, synthetic};

fn with(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = config();
    f(&mut c);
    c
}

/// `{"layers": [4, 3]}` padded with spaces to exactly `len` bytes.
fn padded(len: usize) -> String {
    let core = r#"{"layers": [4, 3]}"#;
    format!("{core}{}", " ".repeat(len - core.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_bytes_are_413() {
    let app = spawn_app(with(|c| c.max_body_bytes = 1024)).await;
    // The server may close a connection whose body it did not read; refused bodies go on
    // their own connections, so the pooled client's next request cannot land on a dead one.
    let refused = app.without_pool();
    let at = app
        .send(Method::POST, "/sessions", JSON, Some(&padded(1024)))
        .await;
    at.expect(201);
    for len in [1025, 4096, 100_000] {
        let r = refused
            .send(Method::POST, "/sessions", JSON, Some(&padded(len)))
            .await;
        assert_problem(&r, 413, "body_too_large");
    }
    let id = at.json()["id"].as_str().unwrap().to_string();
    app.put_builtin(&id, "cat-dog-ship").await;
    app.train(&id, 2).await;
    let before = app.snapshot(&id).await;
    let big = synthetic(100, 4, 3, 1).to_string();
    assert!(big.len() > 1024);
    for (method, path) in [
        (Method::PUT, format!("/sessions/{id}/dataset")),
        (Method::POST, format!("/sessions/{id}/predict")),
        (Method::POST, format!("/sessions/{id}/gradients")),
    ] {
        let r = refused.send(method, &path, JSON, Some(&big)).await;
        assert_problem(&r, 413, "body_too_large");
    }
    let w = format!(
        r#"{{"weights": [[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]}}{}"#,
        " ".repeat(2000)
    );
    let r = refused
        .send(
            Method::PUT,
            &format!("/sessions/{id}/weights"),
            JSON,
            Some(&w),
        )
        .await;
    assert_problem(&r, 413, "body_too_large");
    let changes = app.snapshot(&id).await.changes_since(&before);
    assert!(
        changes.is_empty(),
        "a refused body changed the session: {changes:?}"
    );
    assert_eq!(app.get("/sessions").await.expect_json(200)["total"], 1);
}

/// A server that answers before reading a body must close the connection, and RFC 9112
/// (section 9.6) asks it to say so; otherwise a keep-alive client sends its next request on
/// a connection that is going away ("error sending request", now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_unread_body_says_the_connection_closes() {
    let app = spawn_app(with(|c| c.max_body_bytes = 1024)).await;
    let r = app
        .without_pool()
        .send(Method::POST, "/sessions", JSON, Some(&padded(1_000_000)))
        .await;
    assert_problem(&r, 413, "body_too_large");
    let connection = r.header("connection").unwrap_or("").to_ascii_lowercase();
    assert_eq!(
        connection, "close",
        "413 before reading a 1 MB body, without Connection: close; headers {:?}",
        r.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_max_sessions_are_429() {
    let app = spawn_app(with(|c| c.max_sessions = 3)).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.create_session(&json!({"layers": [4, 3]})).await.0);
    }
    for _ in 0..2 {
        let r = app.post("/sessions", &json!({"layers": [4, 3]})).await;
        assert_problem(&r, 429, "too_many_sessions");
    }
    assert_eq!(app.get("/sessions").await.expect_json(200)["total"], 3);
    app.delete(&format!("/sessions/{}", ids[0]))
        .await
        .expect(204);
    app.create_session(&json!({"layers": [4, 3]})).await;
    let r = app.post("/sessions", &json!({"layers": [4, 3]})).await;
    assert_problem(&r, 429, "too_many_sessions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_past_max_parameters_are_too_large_counting_biases() {
    let app = spawn_app(with(|c| c.max_parameters = 100)).await;
    for ok in [
        json!({"layers": [10, 10]}),
        json!({"layers": [10, 9], "bias": true}),
        json!({"layers": [5, 5, 5, 5, 5]}),
    ] {
        app.post("/sessions", &ok).await.expect(201);
    }
    for (body, why) in [
        (
            json!({"layers": [10, 10], "bias": true}),
            "100 weights + 10 biases",
        ),
        (json!({"layers": [10, 11]}), "110 weights"),
        (
            json!({"layers": [4, 4, 4, 4, 4, 4, 4, 4, 3], "bias": true}),
            "124 weights + 31 biases",
        ),
        (
            json!({"layers": [2, 50, 2], "init": {"method": "he", "seed": 1}}),
            "200 weights",
        ),
    ] {
        let r = app.post("/sessions", &body).await;
        let p = assert_problem(&r, 422, "too_large");
        assert!(
            detail(&p).contains("100"),
            "{why}: the detail names the limit: {p}"
        );
    }
    assert_eq!(app.get("/sessions").await.expect_json(200)["total"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_layers_with_default_limits_are_refused_fast() {
    let app = spawn_app(config()).await;
    let mut failures = Vec::new();
    for layers in [
        "[100000, 100000]",
        "[4, 100000, 100000, 3]",
        "[4294967295, 4294967295]",
        "[4000000000, 4000000000, 4000000000, 4000000000, 4000000000, 4000000000, 4000000000, 4000000000, 4000000000]",
        // Integer literals past i64: still sizes, too large, never a "wrong type".
        "[18446744073709551615, 2]",
        "[2, 18446744073709551615, 18446744073709551615, 2]",
    ] {
        let body = format!(r#"{{"layers": {layers}}}"#);
        let t = Instant::now();
        let r = app.send(Method::POST, "/sessions", JSON, Some(&body)).await;
        let took = t.elapsed();
        let faults = problem_faults(&r, 422, "too_large");
        // A size past every integer type the server holds may fairly be called out of range.
        if !faults.is_empty() && !problem_faults(&r, 422, "invalid_value").is_empty() {
            failures.push(format!("{}\n    {}", r.request, faults.join("\n    ")));
        }
        if took >= Duration::from_secs(1) {
            failures.push(format!("layers {layers} took {took:?} to refuse"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(app.get("/sessions").await.expect_json(200)["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_past_max_samples_are_too_large() {
    let app = spawn_app(with(|c| c.max_samples = 5)).await;
    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    let before = app.snapshot(&id).await;
    let six = synthetic(6, 4, 3, 7);
    let five = synthetic(5, 4, 3, 7);
    let path = |p: &str| format!("/sessions/{id}/{p}");
    let mut failures = Vec::new();
    for (method, p, body) in [
        (Method::PUT, "dataset", six.clone()),
        (Method::POST, "predict", json!({"x": six["x"]})),
        (Method::POST, "gradients", six.clone()),
        // The built-in is a dataset like any other: six samples are over a limit of five.
        (Method::PUT, "dataset", json!({"builtin": "cat-dog-ship"})),
    ] {
        let r = app
            .send(method, &path(p), JSON, Some(&body.to_string()))
            .await;
        let faults = problem_faults(&r, 422, "too_large");
        if !faults.is_empty() {
            failures.push(format!("{}\n    {}", r.request, faults.join("\n    ")));
        }
        failures.extend(app.snapshot(&id).await.changes_since(&before));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.put(&path("dataset"), &five).await.expect(200);
    app.post(&path("predict"), &json!({"x": five["x"]}))
        .await
        .expect(200);
    app.post(&path("gradients"), &five).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epochs_past_max_epochs_are_invalid_values() {
    let app = spawn_app(with(|c| c.max_epochs = 10)).await;
    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    app.put_builtin(&id, "cat-dog-ship").await;
    let before = app.snapshot(&id).await;
    for epochs in [11, 1000, 10_000_000_000u64] {
        let r = app
            .post(&format!("/sessions/{id}/train"), &json!({"epochs": epochs}))
            .await;
        assert_problem(&r, 422, "invalid_value");
    }
    assert!(app.snapshot(&id).await.changes_since(&before).is_empty());
    assert_eq!(app.train(&id, 10).await["epochs_run"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_past_max_history_is_refused_before_the_run() {
    let app = spawn_app(with(|c| c.max_history = 20)).await;
    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    app.put_builtin(&id, "cat-dog-ship").await;
    app.train(&id, 15).await;
    let before = app.snapshot(&id).await;
    for epochs in [6, 21, 1000] {
        let r = app
            .post(&format!("/sessions/{id}/train"), &json!({"epochs": epochs}))
            .await;
        let p = assert_problem(&r, 422, "too_large");
        let d = detail(&p);
        assert!(
            d.contains("PUT") && d.contains("/weights"),
            "{epochs} epochs: the detail should say PUT /weights starts a new history: {d:?}"
        );
    }
    assert!(
        app.snapshot(&id).await.changes_since(&before).is_empty(),
        "a refused run changed the session"
    );
    assert_eq!(
        app.train(&id, 5).await["epochs_trained"],
        20,
        "exactly at the limit"
    );
    let r = app
        .post(&format!("/sessions/{id}/train"), &json!({"epochs": 1}))
        .await;
    assert_problem(&r, 422, "too_large");

    // PUT /weights starts a new history, with room for the whole limit again.
    let w = app.get(&format!("/sessions/{id}/weights")).await.body;
    let put = app
        .send(
            Method::PUT,
            &format!("/sessions/{id}/weights"),
            JSON,
            Some(&w),
        )
        .await;
    assert_eq!(
        put.expect(200).body,
        w,
        "PUT /weights answers with the same body"
    );
    let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(
        (&s["epochs_trained"], &s["initial_loss"], &s["last_loss"]),
        (&json!(0), &json!(null), &json!(null)),
        "PUT /weights resets the history: {s}"
    );
    let h = app
        .get(&format!("/sessions/{id}/loss"))
        .await
        .expect_json(200);
    assert_eq!(
        (&h["loss"], &h["total"], &h["initial_loss"]),
        (&json!([]), &json!(0), &json!(null))
    );
    assert_eq!(app.train(&id, 20).await["epochs_trained"], 20);
}
