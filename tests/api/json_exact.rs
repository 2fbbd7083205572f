//! Every f64 survives the JSON round trip bit for bit, in both directions: the server reads
//! the nearest double and writes text that reads back as the same double.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{JSON, config, spawn_app};

/// Hard cases for a float parser or printer, as written in the request (one 3x4 matrix).
const VALUES: [&str; 12] = [
    "0.30000000000000004",
    "5e-324",
    "-5e-324",
    "1.7976931348623157e308",
    "2.2250738585072014e-308",
    "2.225073858507201e-308",
    "-0.0",
    "0.1",
    "1e-7",
    "123456789.12345678",
    // Not representable: the nearest double is 9007199254740992 (ties to even).
    "9007199254740993",
    "-2.4703282292062328e-324",
];

const BIASES: [&str; 3] = ["0.30000000000000004", "5e-324", "-0.0"];

/// `got` (a matrix or a vector, flattened) holds exactly the doubles nearest to `sent`;
/// Rust's parser rounds correctly, so it is the reference.
fn check_bits(what: &str, got: &Value, sent: &[&str]) {
    let got: Vec<&Value> = match got {
        Value::Array(a) => a
            .iter()
            .flat_map(|r| match r {
                Value::Array(row) => row.iter().collect(),
                v => vec![v],
            })
            .collect(),
        other => panic!("{what}: {other} is not an array"),
    };
    assert_eq!(got.len(), sent.len(), "{what}: {got:?}");
    for (g, s) in got.iter().zip(sent) {
        let want: f64 = s.parse().unwrap();
        let g = g
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: {g} is not a number"));
        assert_eq!(
            g.to_bits(),
            want.to_bits(),
            "{what}: sent {s}, read back {g:e} ({:#018x}), want {want:e} ({:#018x})",
            g.to_bits(),
            want.to_bits()
        );
    }
}

fn matrix(vals: &[&str]) -> String {
    let rows: Vec<String> = vals
        .chunks(4)
        .map(|r| format!("[{}]", r.join(", ")))
        .collect();
    format!("[{}]", rows.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_round_trip_bit_for_bit() {
    let app = spawn_app(config()).await;
    let m = matrix(&VALUES);

    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    let body = format!(r#"{{"weights": [{m}]}}"#);
    let put = app
        .send(
            Method::PUT,
            &format!("/sessions/{id}/weights"),
            JSON,
            Some(&body),
        )
        .await
        .expect_json(200);
    check_bits("PUT /weights answer", &put["weights"][0], &VALUES);
    let get = app.get(&format!("/sessions/{id}/weights")).await;
    check_bits("GET /weights", &get.expect_json(200)["weights"][0], &VALUES);
    for text in ["0.30000000000000004", "5e-324", "-0.0"] {
        assert!(
            get.body.contains(text),
            "GET /weights does not write {text} shortest: {}",
            get.body
        );
    }

    let b = format!("[{}]", BIASES.join(", "));
    let body = format!(
        r#"{{"layers": [4, 3], "bias": true, "init": {{"method": "explicit", "weights": [{m}], "biases": [{b}]}}}}"#
    );
    let created = app
        .send(Method::POST, "/sessions", JSON, Some(&body))
        .await
        .expect_json(201);
    let id = created["id"].as_str().unwrap();
    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect_json(200);
    check_bits("explicit init weights", &w["weights"][0], &VALUES);
    check_bits("explicit init biases", &w["biases"][0], &BIASES);

    // Settings are numbers too: the learning rate comes back bit for bit.
    let lr = "0.30000000000000004";
    let body = format!(r#"{{"layers": [4, 3], "learning_rate": {lr}}}"#);
    let s = app
        .send(Method::POST, "/sessions", JSON, Some(&body))
        .await
        .expect_json(201);
    assert_eq!(
        s["learning_rate"].as_f64().map(f64::to_bits),
        Some(0.30000000000000004f64.to_bits()),
        "learning_rate echo: {s}"
    );
}

/// A loss that is exactly zero is written `0.0`: never `-0.0`, never negative.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_loss_is_written_as_positive_zero() {
    let app = spawn_app(config()).await;
    // Logits 1000 apart: the softmax is exactly one-hot, so the loss is exactly 0.
    let (id, _) = app
        .create_session(&json!({"layers": [2, 2], "init": {"method": "explicit",
            "weights": [[[1000, 0], [0, 0]]]}}))
        .await;
    let data = json!({"x": [[1, 0]], "y": [0]});
    app.put(&format!("/sessions/{id}/dataset"), &data)
        .await
        .expect(200);
    let predict = app.post(&format!("/sessions/{id}/predict"), &data).await;
    let grads = app
        .post(&format!("/sessions/{id}/gradients"), &json!({}))
        .await;
    let train = app
        .post(&format!("/sessions/{id}/train"), &json!({"epochs": 2}))
        .await;
    let history = app.get(&format!("/sessions/{id}/loss")).await;
    let session = app.get(&format!("/sessions/{id}")).await;
    let mut losses = vec![
        ("predict loss", predict.expect_json(200)["loss"].clone()),
        ("gradients loss", grads.expect_json(200)["loss"].clone()),
    ];
    let t = train.expect_json(200);
    let h = history.expect_json(200);
    let s = session.expect_json(200);
    for (what, v) in [
        ("train loss", &t["loss"]),
        ("train initial_loss", &t["initial_loss"]),
        ("train final_loss", &t["final_loss"]),
        ("GET /loss loss", &h["loss"]),
        ("GET /loss initial_loss", &h["initial_loss"]),
        ("session initial_loss", &s["initial_loss"]),
        ("session last_loss", &s["last_loss"]),
    ] {
        losses.push((what, v.clone()));
    }
    for (what, v) in &losses {
        let values = crate::helpers::floats(v);
        assert!(!values.is_empty(), "{what}: no value in {v}");
        for l in values {
            assert_eq!(l.to_bits(), 0.0f64.to_bits(), "{what}: {l:?} is not +0.0");
        }
    }
    let csv = app.get(&format!("/sessions/{id}/loss?format=csv")).await;
    assert_eq!(
        csv.expect(200).body.trim_end(),
        "epoch,loss\n1,0.0\n2,0.0",
        "CSV of zero losses"
    );
}
