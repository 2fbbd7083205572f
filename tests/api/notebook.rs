//! The course notebook end to end, against the NumPy numbers in `tests/golden/notebook.json`
//! (written by `tests/golden/generate.py`): initial weights bit for bit, gradients, 100
//! epochs of history, final weights and predictions to a relative 1e-9.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, close, close_scaled, config, floats, same_bits, spawn_app};

/// The contract's agreement with NumPy after arithmetic (summation order may differ).
const RTOL: f64 = 1e-9;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/notebook.json");
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {path} (run tests/golden/generate.py): {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn settings(case: &Value) -> Value {
    let mut body = json!({});
    for key in [
        "layers",
        "init",
        "activation",
        "bias",
        "grad_reduction",
        "learning_rate",
    ] {
        body[key] = case[key].clone();
    }
    body
}

fn check(name: &str, what: &str, result: Result<(), String>) {
    if let Err(e) = result {
        panic!("case {name}: {what}: {e}");
    }
}

fn argmax(row: &Value) -> u64 {
    let v = floats(row);
    // The first index wins a tie, as the contract says of accuracy.
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notebook_case_matches_numpy() {
    let golden = fixture();
    let cases = golden["cases"].as_array().expect("cases is a list");
    assert!(!cases.is_empty(), "the fixture has no cases");
    let app = spawn_app(config()).await;
    for case in cases {
        run_case(&app, &golden["dataset"], case).await;
    }
}

async fn run_case(app: &TestApp, dataset: &Value, case: &Value) {
    let name = case["name"].as_str().unwrap_or("?");
    let (id, session) = app.create_session(&settings(case)).await;
    for key in ["layers", "activation", "bias", "grad_reduction", "init"] {
        assert_eq!(session[key], case[key], "case {name}: session echoes {key}");
    }
    check(
        name,
        "echoed learning_rate",
        same_bits(&session["learning_rate"], &case["learning_rate"]),
    );

    let put = app.put_builtin(&id, "cat-dog-ship").await;
    assert_eq!(
        put,
        json!({"samples": 6, "features": 4, "classes": 3, "builtin": "cat-dog-ship"}),
        "case {name}: PUT dataset builtin"
    );

    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect_json(200);
    check(
        name,
        "initial weights, bit for bit",
        same_bits(&w["weights"], &case["initial_weights"]),
    );
    check_biases(
        name,
        "initial biases",
        &w["biases"],
        &case["initial_biases"],
        true,
    );

    // The notebook's Backward at the starting weights; asking must change nothing.
    let before = app.snapshot(&id).await;
    let grads = app
        .send(
            Method::POST,
            &format!("/sessions/{id}/gradients"),
            None,
            None,
        )
        .await
        .expect_json(200);
    check(
        name,
        "gradient loss",
        close(&grads["loss"], &case["initial_loss"], RTOL),
    );
    check(
        name,
        "weight gradients",
        close_scaled(
            &grads["weights"],
            &case["initial_gradients"]["weights"],
            RTOL,
        ),
    );
    check_biases(
        name,
        "bias gradients",
        &grads["biases"],
        &case["initial_gradients"]["biases"],
        false,
    );
    let braces = app
        .post(&format!("/sessions/{id}/gradients"), &json!({}))
        .await
        .expect_json(200);
    assert_eq!(
        braces, grads,
        "case {name}: gradients with {{}} differ from an empty body"
    );
    let batch = app
        .post(
            &format!("/sessions/{id}/gradients"),
            &json!({"x": dataset["x"], "y": dataset["y"]}),
        )
        .await
        .expect_json(200);
    check(
        name,
        "gradients on the dataset given inline",
        close_scaled(&batch["weights"], &grads["weights"], 1e-12),
    );
    let changes = app.snapshot(&id).await.changes_since(&before);
    assert!(
        changes.is_empty(),
        "case {name}: gradients changed the session: {changes:?}"
    );

    let epochs = case["epochs"].as_u64().expect("epochs");
    let run = app.train(&id, epochs).await;
    assert_eq!(run["status"], "completed", "case {name}: {run}");
    assert_eq!(run["epochs_run"], epochs, "case {name}: epochs_run");
    assert_eq!(run["epochs_trained"], epochs, "case {name}: epochs_trained");
    check(
        name,
        "loss history",
        close(&run["loss"], &case["loss_history"], RTOL),
    );
    check(
        name,
        "initial_loss",
        close(&run["initial_loss"], &case["initial_loss"], RTOL),
    );
    let loss = run["loss"].as_array().expect("loss list");
    check(
        name,
        "final_loss is the last entry",
        same_bits(&run["final_loss"], &loss[loss.len() - 1]),
    );
    for (k, l) in floats(&run["loss"]).iter().enumerate() {
        assert!(
            l.is_sign_positive(),
            "case {name}: loss entry {k} is {l:e}, below zero"
        );
    }

    check_history_reads(app, name, &id, &run).await;
    check_printed_lines(app, name, &id, &run, case).await;

    let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(
        s["epochs_trained"], epochs,
        "case {name}: session epochs_trained"
    );
    check(
        name,
        "session initial_loss",
        same_bits(&s["initial_loss"], &run["initial_loss"]),
    );
    check(
        name,
        "session last_loss",
        same_bits(&s["last_loss"], &run["final_loss"]),
    );
    assert_eq!(s["dataset"], put, "case {name}: session dataset");

    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect_json(200);
    check(
        name,
        "final weights",
        close_scaled(&w["weights"], &case["final_weights"], RTOL),
    );
    check_biases(
        name,
        "final biases",
        &w["biases"],
        &case["final_biases"],
        false,
    );

    let pred = app
        .post(
            &format!("/sessions/{id}/predict"),
            &json!({"x": dataset["x"], "y": dataset["y"]}),
        )
        .await
        .expect_json(200);
    check(
        name,
        "probabilities",
        close_scaled(&pred["probabilities"], &case["final_probabilities"], RTOL),
    );
    assert_eq!(
        pred["classes"], case["final_classes"],
        "case {name}: predicted classes"
    );
    check(
        name,
        "predict loss is the last history entry",
        close(&pred["loss"], &case["loss_history"][loss.len() - 1], RTOL),
    );
    let labels: Vec<u64> = dataset["y"]
        .as_array()
        .unwrap()
        .iter()
        .map(argmax)
        .collect();
    let right = case["final_classes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&labels)
        .filter(|(c, l)| c.as_u64() == Some(**l))
        .count();
    let accuracy = right as f64 / labels.len() as f64;
    assert_eq!(
        pred["accuracy"].as_f64(),
        Some(accuracy),
        "case {name}: accuracy {pred}"
    );

    let bare = app
        .post(
            &format!("/sessions/{id}/predict"),
            &json!({"x": dataset["x"]}),
        )
        .await
        .expect_json(200);
    assert_eq!(
        bare,
        json!({"probabilities": pred["probabilities"], "classes": pred["classes"]}),
        "case {name}: predict without y has exactly probabilities and classes"
    );
}

/// Biases: null when the case has none; otherwise bitwise or to RTOL. A session with bias
/// whose fixture starts at zero may also say so with explicit zeros.
fn check_biases(name: &str, what: &str, got: &Value, want: &Value, exact: bool) {
    if want.is_null() {
        assert!(
            got.is_null(),
            "case {name}: {what}: {got} (want null, no bias)"
        );
    } else if exact {
        check(name, what, same_bits(got, want));
    } else {
        check(name, what, close_scaled(got, want, RTOL));
    }
}

/// GET /loss as JSON and as CSV, whole and in pages, agrees exactly with the train response.
async fn check_history_reads(app: &TestApp, name: &str, id: &str, run: &Value) {
    let loss = run["loss"].as_array().unwrap();
    let n = loss.len();
    let h = app
        .get(&format!("/sessions/{id}/loss"))
        .await
        .expect_json(200);
    check(name, "GET /loss", same_bits(&h["loss"], &run["loss"]));
    check(
        name,
        "GET /loss initial_loss",
        same_bits(&h["initial_loss"], &run["initial_loss"]),
    );
    assert_eq!(
        (h["offset"].as_u64(), h["total"].as_u64()),
        (Some(0), Some(n as u64)),
        "case {name}: {h}"
    );

    let csv = app.get(&format!("/sessions/{id}/loss?format=csv")).await;
    csv.expect(200);
    assert!(
        csv.content_type().starts_with("text/csv"),
        "case {name}: CSV content type {:?}",
        csv.content_type()
    );
    check_csv(name, &csv.body, 0, &loss[..]);

    let page = app
        .get(&format!("/sessions/{id}/loss?offset=10&limit=5"))
        .await
        .expect_json(200);
    check(
        name,
        "loss page 10..15",
        same_bits(&page["loss"], &json!(loss[10..15])),
    );
    assert_eq!(
        (page["offset"].as_u64(), page["total"].as_u64()),
        (Some(10), Some(n as u64)),
        "case {name}: {page}"
    );
    let csv_page = app
        .get(&format!("/sessions/{id}/loss?format=csv&offset=10&limit=5"))
        .await;
    check_csv(name, &csv_page.expect(200).body, 10, &loss[10..15]);

    for offset in [n, n + 1000] {
        let past = app
            .get(&format!("/sessions/{id}/loss?offset={offset}"))
            .await
            .expect_json(200);
        assert_eq!(
            past["loss"],
            json!([]),
            "case {name}: offset {offset} past the end"
        );
        assert_eq!(past["total"], n, "case {name}: total at offset {offset}");
    }
}

/// `GET /loss?format=text` is the notebook's own output: `iteration: k, loss: v`, `v` as
/// Python prints the float. Each line's number is the session's history entry bit for bit,
/// and what the notebook's code printed for the same seed to 1e-9 (exactly the same line
/// when the two doubles agree).
async fn check_printed_lines(app: &TestApp, name: &str, id: &str, run: &Value, case: &Value) {
    let text = app.get(&format!("/sessions/{id}/loss?format=text")).await;
    text.expect(200);
    assert!(
        text.content_type().starts_with("text/plain"),
        "case {name}: content type {:?}",
        text.content_type()
    );
    let history = floats(&run["loss"]);
    let lines: Vec<&str> = text.body.lines().collect();
    assert_eq!(
        lines.len(),
        history.len(),
        "case {name}: lines of {:?}",
        text.body
    );
    assert!(
        text.body.ends_with('\n'),
        "case {name}: the last line ends with a newline"
    );
    let printed = case["printed"].as_array();
    for (k, (line, h)) in lines.iter().zip(&history).enumerate() {
        let prefix = format!("iteration: {}, loss: ", k + 1);
        let number = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("case {name}: line {line:?} does not start {prefix:?}"));
        let v: f64 = number
            .parse()
            .unwrap_or_else(|e| panic!("case {name}: {line:?}: {e}"));
        assert_eq!(
            v.to_bits(),
            h.to_bits(),
            "case {name}: {line:?} vs history {h:e}"
        );
        let Some(printed) = printed else { continue };
        let theirs = printed[k].as_str().expect("a printed line");
        let p: f64 = theirs
            .strip_prefix(&prefix)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("case {name}: the notebook printed {theirs:?}"));
        if p.to_bits() == v.to_bits() {
            assert_eq!(*line, theirs, "case {name}: same double, another text");
        } else {
            assert!(
                (p - v).abs() <= RTOL * p.abs().max(v.abs()),
                "case {name}: {line:?}, the notebook printed {theirs:?}"
            );
        }
    }
    let page = app
        .get(&format!(
            "/sessions/{id}/loss?format=text&offset=98&limit=5"
        ))
        .await;
    assert_eq!(
        page.expect(200).body,
        format!("{}\n{}\n", lines[98], lines[99]),
        "case {name}: a page of text keeps the iteration numbers"
    );
}

/// Python's `repr` of floats (written by generate.py into `tests/golden/pyrepr.json`),
/// through `GET /loss?format=text`: a session imported with those numbers as its history
/// prints each exactly as Python would (`1e-05`, `5e-324`, `1e+16`, `0.0001`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_text_writes_floats_as_python_does() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/pyrepr.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().expect("cases");
    let app = spawn_app(config()).await;
    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    let mut export = app
        .get(&format!("/sessions/{id}/export"))
        .await
        .expect_json(200);
    export["loss"] = cases.iter().map(|c| c["value"].clone()).collect();
    export["initial_loss"] = json!(1.0);
    let imported = app.post("/sessions/import", &export).await.expect_json(201);
    let new = imported["id"].as_str().expect("an id");
    let text = app
        .get(&format!("/sessions/{new}/loss?format=text"))
        .await
        .expect(200)
        .body
        .clone();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len());
    for (k, (line, c)) in lines.iter().zip(cases).enumerate() {
        let want = format!(
            "iteration: {}, loss: {}",
            k + 1,
            c["repr"].as_str().unwrap()
        );
        assert_eq!(*line, want, "value {}", c["value"]);
    }
}

fn check_csv(name: &str, body: &str, offset: usize, want: &[Value]) {
    let mut lines = body.lines();
    assert_eq!(
        lines.next(),
        Some("epoch,loss"),
        "case {name}: CSV header in {body:?}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), want.len(), "case {name}: CSV rows in {body:?}");
    for (i, (row, w)) in rows.iter().zip(want).enumerate() {
        let (epoch, value) = row
            .split_once(',')
            .unwrap_or_else(|| panic!("case {name}: CSV row {row:?} has no comma"));
        assert_eq!(
            epoch,
            (offset + i + 1).to_string(),
            "case {name}: CSV row {row:?}"
        );
        let v: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("case {name}: CSV loss {value:?}: {e}"));
        assert_eq!(
            v.to_bits(),
            w.as_f64().unwrap().to_bits(),
            "case {name}: CSV row {row:?} differs from the JSON history {w}"
        );
        assert_eq!(
            value,
            w.to_string(),
            "case {name}: CSV writes floats as JSON does"
        );
    }
}

/// The same data given inline (one-hot rows, or class indices) trains exactly as the built-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_notebook_data_trains_like_the_builtin() {
    let golden = fixture();
    let case = &golden["cases"][0];
    let data = &golden["dataset"];
    let app = spawn_app(config()).await;
    let labels: Vec<u64> = data["y"].as_array().unwrap().iter().map(argmax).collect();

    let mut histories = Vec::new();
    for (what, body) in [
        ("builtin", json!({"builtin": "cat-dog-ship"})),
        ("one-hot rows", json!({"x": data["x"], "y": data["y"]})),
        ("class indices", json!({"x": data["x"], "y": labels})),
    ] {
        let (id, _) = app.create_session(&settings(case)).await;
        let put = app
            .put(&format!("/sessions/{id}/dataset"), &body)
            .await
            .expect_json(200);
        let builtin = if what == "builtin" {
            json!("cat-dog-ship")
        } else {
            Value::Null
        };
        assert_eq!(
            put,
            json!({"samples": 6, "features": 4, "classes": 3, "builtin": builtin}),
            "PUT dataset as {what}"
        );
        let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
        assert_eq!(s["dataset"], put, "session dataset after PUT as {what}");
        let run = app.train(&id, 100).await;
        check(
            what,
            "loss history",
            close(&run["loss"], &case["loss_history"], RTOL),
        );
        histories.push((what, run["loss"].clone()));
    }
    for (what, h) in &histories[1..] {
        check(
            what,
            "history identical to the builtin's",
            same_bits(h, &histories[0].1),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_datasets_are_the_notebooks() {
    let golden = fixture();
    let data = &golden["dataset"];
    let app = spawn_app(config()).await;

    let got = app.get("/datasets/cat-dog-ship").await.expect_json(200);
    assert_eq!(got["name"], "cat-dog-ship");
    check(
        "cat-dog-ship",
        "x, sample shape 2x2",
        same_bits(&got["x"], &data["x"]),
    );
    let labels: Vec<u64> = data["y"].as_array().unwrap().iter().map(argmax).collect();
    assert_eq!(got["y"], json!(labels), "y as class indices");
    assert_eq!(got["class_names"], data["class_names"]);

    let list = app.get("/datasets").await.expect_json(200);
    let find = |name: &str| {
        list["datasets"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} missing from GET /datasets: {list}"))
    };
    for (name, samples, names) in [
        ("cat-dog-ship", 6, json!(["cat", "dog", "ship"])),
        ("iris", 150, json!(["setosa", "versicolor", "virginica"])),
    ] {
        let d = find(name);
        assert_eq!(
            (
                &d["samples"],
                &d["features"],
                &d["classes"],
                &d["class_names"]
            ),
            (&json!(samples), &json!(4), &json!(3), &names),
            "GET /datasets entry {d}"
        );
        assert!(
            d["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{name} description: {d}"
        );
    }
    let iris = app.get("/datasets/iris").await.expect_json(200);
    let x = iris["x"].as_array().expect("iris x");
    assert_eq!(x.len(), 150);
    assert!(
        x.iter().all(|r| r
            .as_array()
            .is_some_and(|r| r.len() == 4 && r.iter().all(Value::is_number))),
        "iris rows are flat rows of 4"
    );
    let y = iris["y"].as_array().expect("iris y");
    assert_eq!(y.len(), 150);
    // The R / scikit-learn copy: 50 of each class, in order.
    for (i, c) in y.iter().enumerate() {
        assert_eq!(c.as_u64(), Some(i as u64 / 50), "iris label {i}");
    }
}
