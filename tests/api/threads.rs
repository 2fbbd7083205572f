//! A train on an otherwise idle server runs on every core; one that starts beside another
//! train runs on one thread. Both give the same bits: the thread count changes how soon a
//! train ends, never its weights or its history (reproducibility is the product).

use serde_json::{Value, json};

use crate::helpers::{TestApp, config, same_bits, slow_session, spawn_app, synthetic};

/// `backprop_trains_total{threads="N"}`: trains started on N threads (0 if none yet).
async fn trains_on(app: &TestApp, threads: usize) -> f64 {
    let text = app.get("/metrics").await.expect(200).body.clone();
    let series = format!("backprop_trains_total{{threads=\"{threads}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A session trained `epochs` epochs: its weights and its loss history, as read back.
async fn trained(app: &TestApp, settings: &Value, data: &Value, epochs: u64) -> (Value, Value) {
    let (id, _) = app.create_session(settings).await;
    app.put(&format!("/sessions/{id}/dataset"), data)
        .await
        .expect(200);
    let run = app.train(&id, epochs).await;
    assert_eq!(run["status"], "completed", "{run}");
    let weights = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect_json(200);
    let loss = app
        .get(&format!("/sessions/{id}/loss"))
        .await
        .expect_json(200);
    (weights, loss)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_train_gives_the_same_bits_on_an_idle_server_and_beside_another_train() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let app = spawn_app(config()).await; // two workers
    // 1,000 samples are four chunks of rows: enough for the trainer to start its threads.
    let settings = json!({"layers": [8, 16, 3], "init": {"method": "numpy_rand", "seed": 3},
        "grad_reduction": "mean", "learning_rate": 0.1, "bias": true});
    let data = synthetic(1000, 8, 3, 5);

    let alone = trained(&app, &settings, &data, 30).await;
    assert_eq!(
        trains_on(&app, cores).await,
        1.0,
        "an idle server's train uses every core"
    );

    // Another session trains (only its time limit or this test's end stops it) meanwhile.
    let slow = slow_session(&app).await;
    let busy = {
        let app = app.clone();
        tokio::spawn(async move {
            app.post(
                &format!("/sessions/{slow}/train"),
                &json!({"epochs": 1_000_000, "return_loss": false}),
            )
            .await
        })
    };
    let running = || async {
        let text = app.get("/metrics").await.expect(200).body.clone();
        text.lines().any(|l| l == "backprop_trainings_running 1")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !running().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the other train never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let beside = trained(&app, &settings, &data, 30).await;
    busy.abort();
    if cores > 1 {
        assert_eq!(
            trains_on(&app, 1).await,
            1.0,
            "a train beside another uses one thread"
        );
    }

    for (part, key) in [
        (0, "weights"),
        (0, "biases"),
        (1, "loss"),
        (1, "initial_loss"),
    ] {
        let (got, want) = ([&beside.0, &beside.1][part], [&alone.0, &alone.1][part]);
        same_bits(&got[key], &want[key])
            .unwrap_or_else(|e| panic!("{key} differ on every core and on one thread: {e}"));
    }
    let epochs = alone.1["loss"].as_array().map_or(0, Vec::len);
    assert_eq!(epochs, 30, "{}", alone.1);
}
