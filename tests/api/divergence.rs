//! Overflow: a run that would make a weight or the loss non-finite stops before that update
//! and keeps the last applied epoch; a forward pass that overflows is a 422, never a NaN.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, config, floats, same_bits, spawn_app};

/// The notebook's data times `scale`, one-hot labels.
fn cat_dog_ship(scale: f64) -> Value {
    let x = [
        [[56, 231], [24, 1]],
        [[120, 30], [24, 0]],
        [[20, 31], [240, 100]],
        [[56, 201], [22, -10]],
        [[140, 27], [30, 10]],
        [[25, 30], [230, 110]],
    ];
    let x: Vec<Vec<Vec<f64>>> = x
        .iter()
        .map(|s| {
            s.iter()
                .map(|r| r.iter().map(|&v| v as f64 * scale).collect())
                .collect()
        })
        .collect();
    json!({"x": x, "y": [0, 1, 2, 0, 1, 2]})
}

/// Trains `settings` on `data` until it diverges, then checks the run against a twin session
/// that trains exactly the applied epochs.
async fn diverge(app: &TestApp, what: &str, settings: Value, data: Value) -> u64 {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (id, _) = app.create_session(&settings).await;
        app.put(&format!("/sessions/{id}/dataset"), &data)
            .await
            .expect(200);
        ids.push(id);
    }
    let (id, twin) = (&ids[0], &ids[1]);
    let start = app.get(&format!("/sessions/{id}/weights")).await.body;

    let r = app.train(id, 100).await;
    assert_eq!(r["status"], "diverged", "{what}: {r}");
    let n = r["epochs_run"].as_u64().unwrap();
    let loss = r["loss"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no loss list: {r}"));
    assert_eq!(loss.len() as u64, n, "{what}: epochs_run == len(loss): {r}");
    assert!(n < 100, "{what}: {r}");
    assert_eq!(
        r["epochs_trained"], n,
        "{what}: only applied epochs count: {r}"
    );
    assert!(
        floats(&r["loss"])
            .iter()
            .all(|l| l.is_finite() && *l >= 0.0),
        "{what}: {r}"
    );
    if n == 0 {
        assert!(
            r["final_loss"].is_null(),
            "{what}: no update applied, final_loss {r}"
        );
        let w = app.get(&format!("/sessions/{id}/weights")).await.body;
        assert_eq!(
            w, start,
            "{what}: no update applied, yet the weights changed"
        );
    } else {
        same_bits(&r["final_loss"], &loss[loss.len() - 1]).expect("final_loss is the last entry");
        let t = app.train(twin, n).await;
        assert_eq!(
            t["status"], "completed",
            "{what}: the twin's {n} epochs: {t}"
        );
        same_bits(&t["loss"], &r["loss"])
            .unwrap_or_else(|e| panic!("{what}: history vs twin: {e}"));
        let w = app.get(&format!("/sessions/{id}/weights")).await.body;
        let tw = app.get(&format!("/sessions/{twin}/weights")).await.body;
        assert_eq!(
            w, tw,
            "{what}: weights are not those of the last applied epoch {n}"
        );
    }
    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect_json(200);
    assert!(
        floats(&w["weights"]).iter().all(|v| v.is_finite()),
        "{what}: weights {w}"
    );
    let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(s["epochs_trained"], n, "{what}: session {s}");
    assert!(
        s["initial_loss"].as_f64().is_some_and(f64::is_finite),
        "{what}: the first forward pass was finite: {s}"
    );

    // Training on from there diverges at once and changes nothing.
    let before = app.snapshot(id).await;
    let again = app.train(id, 10).await;
    assert_eq!(
        (again["status"].as_str(), again["epochs_run"].as_u64()),
        (Some("diverged"), Some(0)),
        "{what}: {again}"
    );
    assert_eq!(again["epochs_trained"], n);
    let changes = app.snapshot(id).await.changes_since(&before);
    assert!(
        changes.is_empty(),
        "{what}: a run with no applied epoch changed: {changes:?}"
    );
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_learning_rates_diverge_keeping_the_last_applied_epoch() {
    let app = spawn_app(config()).await;
    // Large inputs: the first update already overflows the logits.
    diverge(
        &app,
        "[4, 3], lr 1e300, inputs x 1000",
        json!({"layers": [4, 3], "learning_rate": 1e300, "init": {"method": "numpy_rand", "seed": 0}}),
        cat_dog_ship(1000.0),
    )
    .await;
    // Two layers multiply two huge steps: at seed 8, epoch 1 leaves huge but finite logits
    // (NumPy), epoch 2 overflows them, so exactly one epoch is applied (so for any rate from
    // 1e80 to 1e150). At most seeds the first step instead leaves every hidden ReLU input
    // negative on the notebook's data, and training stalls without diverging.
    let n = diverge(
        &app,
        "[4, 4, 3], lr 1e100, seed 8",
        json!({"layers": [4, 4, 3], "learning_rate": 1e100, "init": {"method": "numpy_rand", "seed": 8}}),
        cat_dog_ship(1.0),
    )
    .await;
    assert_eq!(
        n, 1,
        "[4, 4, 3] at lr 1e100 applies one epoch before it overflows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_near_the_largest_double_overflow_to_a_422() {
    let app = spawn_app(config()).await;
    let big = json!([[1e308, 1e308, 1e308, 1e308]]);
    for layers in [json!([4, 3]), json!([4, 4, 3])] {
        let (id, _) = app
            .create_session(&json!({"layers": layers, "init": {"method": "numpy_rand", "seed": 0}}))
            .await;
        let before = app.snapshot(&id).await;
        let p = app
            .post(&format!("/sessions/{id}/predict"), &json!({"x": big}))
            .await;
        assert_problem(&p, 422, "non_finite_result");
        let p = app
            .post(
                &format!("/sessions/{id}/predict"),
                &json!({"x": big, "y": [0]}),
            )
            .await;
        assert_problem(&p, 422, "non_finite_result");
        let g = app
            .post(
                &format!("/sessions/{id}/gradients"),
                &json!({"x": big, "y": [0]}),
            )
            .await;
        assert_problem(&g, 422, "non_finite_result");
        assert!(
            app.snapshot(&id).await.changes_since(&before).is_empty(),
            "{layers}: changed"
        );

        // Finite inputs are a valid dataset; what overflows is the computation on them.
        let put = app
            .put(
                &format!("/sessions/{id}/dataset"),
                &json!({"x": big, "y": [0]}),
            )
            .await;
        put.expect(200);
        let before = app.snapshot(&id).await;
        let g = app
            .send(
                Method::POST,
                &format!("/sessions/{id}/gradients"),
                None,
                None,
            )
            .await;
        assert_problem(&g, 422, "non_finite_result");
        let r = app.train(&id, 10).await;
        assert_eq!(
            (
                r["status"].as_str(),
                r["epochs_run"].as_u64(),
                r["epochs_trained"].as_u64()
            ),
            (Some("diverged"), Some(0), Some(0)),
            "{layers}: overflow in the first forward pass: {r}"
        );
        assert!(r["final_loss"].is_null(), "{layers}: {r}");
        assert_eq!(r["loss"], json!([]), "{layers}: {r}");
        let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
        assert!(
            s["initial_loss"].is_null(),
            "{layers}: initial_loss stays null: {s}"
        );
        let changes = app.snapshot(&id).await.changes_since(&before);
        assert!(
            changes.is_empty(),
            "{layers}: a run that overflowed at once changed: {changes:?}"
        );
    }
}
