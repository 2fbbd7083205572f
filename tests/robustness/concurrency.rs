//! Load from many tasks at once: sessions training side by side get exactly the numbers
//! each gets alone; one session hammered by trains, predicts, dataset replacements and a
//! delete stays consistent; and the health check stays quick while every worker trains.

use std::time::{Duration, Instant};

use backprop_server::Config;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::harness::{
    App, LONG, Resp, Server, assert_consistent, config, exclusive, numbers, session_total, shared,
    slow_session, synthetic,
};

/// Eight different sessions: the notebook's, and seven that vary every setting and take the
/// blocked matrix-product path (their products are over its small-size cutoff).
fn setups() -> Vec<(Value, Value, u64)> {
    let notebook = (
        json!({"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 0}}),
        json!({"builtin": "cat-dog-ship"}),
        100,
    );
    let mut all = vec![notebook];
    for i in 1..8u64 {
        let activation = ["relu", "tanh", "sigmoid"][i as usize % 3];
        all.push((
            json!({"layers": [16, 32, 4], "activation": activation, "bias": i % 2 == 0,
                   "grad_reduction": if i % 3 == 0 { "sum" } else { "mean" },
                   "learning_rate": 0.01,
                   "init": {"method": if i % 2 == 0 { "he" } else { "xavier" }, "seed": i}}),
            synthetic(96 + 16 * i as usize, 16, 4, 100 + i),
            30,
        ));
    }
    all
}

async fn prepared(app: &App, settings: &Value, data: &Value) -> String {
    let id = app.create(settings).await;
    app.put(&format!("/sessions/{id}/dataset"), data)
        .await
        .expect(200);
    id
}

/// The history and the weights of a session, as the bytes the server wrote.
async fn numbers_of(app: &App, id: &str) -> (String, String) {
    let loss = app.get(&format!("/sessions/{id}/loss")).await.body;
    let weights = app.get(&format!("/sessions/{id}/weights")).await.body;
    (loss, weights)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_training_at_once_get_bitwise_the_numbers_each_gets_alone() {
    let _timing = shared().await;
    // As many workers as sessions, so that all eight runs are in progress at once on
    // threads the OS interleaves.
    let server = Server::start(Config {
        workers: 8,
        ..config()
    })
    .await;
    let app = &server.app;
    let setups = setups();

    let mut alone = Vec::new();
    for (settings, data, epochs) in &setups {
        let id = prepared(app, settings, data).await;
        let r = app.train(&id, *epochs).await;
        assert_eq!(r["status"], "completed", "{settings}: {r}");
        alone.push(numbers_of(app, &id).await);
    }

    let mut ids = Vec::new();
    for (settings, data, _) in &setups {
        ids.push(prepared(app, settings, data).await);
    }
    let runs: Vec<_> = ids
        .iter()
        .zip(&setups)
        .map(|(id, (_, _, epochs))| app.start_train(id, *epochs))
        .collect();
    let mut overlapped = 0;
    let mut spans = Vec::new();
    for run in runs {
        let (r, took) = run.await.unwrap();
        let r = r.expect_json(200);
        assert_eq!(r["status"], "completed", "{r}");
        spans.push(took);
    }
    // Every run was started before any answered; count the ones still running at the end
    // of the shortest, to show that they did overlap.
    let shortest = spans.iter().min().copied().unwrap_or_default();
    overlapped += spans.iter().filter(|t| **t > shortest).count();
    eprintln!("8 concurrent trains took {spans:?}");
    assert!(overlapped > 0, "the runs did not overlap: {spans:?}");

    for (k, id) in ids.iter().enumerate() {
        let together = numbers_of(app, id).await;
        assert!(
            together.0 == alone[k].0,
            "session {k} ({}): the history trained alongside seven others differs from alone:\n\
             alone    {}\ntogether {}",
            setups[k].0,
            crate::harness::clip(&alone[k].0),
            crate::harness::clip(&together.0)
        );
        assert!(
            together.1 == alone[k].1,
            "session {k} ({}): the weights trained alongside seven others differ from alone",
            setups[k].0
        );
    }
}

/// One request of the mixed load on a session.
#[derive(Clone, Copy, Debug)]
enum Op {
    Train(u64),
    Predict,
    Gradients,
    /// PUT this one of the datasets.
    Dataset(usize),
    Delete,
}

/// Starts `op` on session `id` in its own task, after `delay`.
fn start(
    app: &App,
    id: &str,
    op: Op,
    datasets: &[Value],
    delay: Duration,
) -> JoinHandle<(Op, Resp)> {
    let app = app.clone();
    let session = format!("/sessions/{id}");
    let batch = json!({"x": datasets[0]["x"].as_array().unwrap()[..5]});
    let data = match op {
        Op::Dataset(k) => datasets[k].clone(),
        _ => Value::Null,
    };
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let r = match op {
            Op::Train(epochs) => {
                app.post(&format!("{session}/train"), &json!({ "epochs": epochs }))
                    .await
            }
            Op::Predict => app.post(&format!("{session}/predict"), &batch).await,
            Op::Gradients => app.post(&format!("{session}/gradients"), &json!({})).await,
            Op::Dataset(_) => app.put(&format!("{session}/dataset"), &data).await,
            Op::Delete => app.delete(&session).await,
        };
        (op, r)
    })
}

/// Four datasets for an [8, 16, 3] net, told apart by their sample counts.
fn datasets() -> Vec<Value> {
    (0..4)
        .map(|k| synthetic(30 + 20 * k, 8, 3, 50 + k as u64))
        .collect()
}

/// Trains, predicts, gradients and dataset replacements, interleaved.
fn mixed_load() -> Vec<(Op, Duration)> {
    let mut ops = Vec::new();
    for k in 0..24u64 {
        let op = match k % 4 {
            0 => Op::Train(5 + k),
            1 => Op::Predict,
            2 => Op::Dataset(1 + (k as usize / 4) % 3),
            _ => Op::Gradients,
        };
        ops.push((op, Duration::from_millis(3 * k)));
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_trains_predicts_and_dataset_replacements_leave_a_session_consistent() {
    let _timing = shared().await;
    let server = Server::start(config()).await;
    let app = &server.app;
    let data = datasets();
    let id = prepared(
        app,
        &json!({"layers": [8, 16, 3], "init": {"method": "xavier", "seed": 1},
                "grad_reduction": "mean", "learning_rate": 0.05}),
        &data[0],
    )
    .await;

    let tasks: Vec<_> = mixed_load()
        .into_iter()
        .map(|(op, delay)| start(app, &id, op, &data, delay))
        .collect();
    let mut trains = Vec::new();
    for t in tasks {
        let (op, r) = t.await.unwrap();
        let v = r.expect_json(200);
        match op {
            Op::Train(epochs) => {
                assert_eq!(v["status"], "completed", "{op:?}: {v}");
                assert_eq!(v["epochs_run"].as_u64(), Some(epochs), "{op:?}: {v}");
                assert_eq!(
                    numbers(&v["loss"]).map(|l| l.len() as u64),
                    Some(epochs),
                    "{op:?}: {v}"
                );
                trains.push((v["epochs_trained"].as_u64().unwrap(), epochs));
            }
            Op::Predict => {
                assert_eq!(v["probabilities"].as_array().map(Vec::len), Some(5), "{v}");
            }
            _ => {}
        }
    }
    // Trains of one session run one at a time: each continued from the one before it, and
    // none was lost.
    trains.sort_unstable();
    let mut total = 0;
    for (after, epochs) in &trains {
        assert_eq!(
            *after,
            total + epochs,
            "a train of {epochs} epochs ended at {after}, not at {total} + {epochs}: {trains:?}"
        );
        total = *after;
    }
    let s = assert_consistent(app, &id).await;
    assert_eq!(s["epochs_trained"].as_u64(), Some(total), "{s}");
    let export = app
        .get(&format!("/sessions/{id}/export"))
        .await
        .expect_json(200);
    let held = &export["dataset"]["x"];
    assert!(
        data[1..].iter().any(|d| &d["x"] == held),
        "the session's dataset ({} samples) is none of those sent",
        held.as_array().map_or(0, Vec::len)
    );
    assert_eq!(
        s["dataset"]["samples"].as_u64(),
        held.as_array().map(|x| x.len() as u64),
        "{s}"
    );

    // The same load with a delete in the middle of it: everything answers 200 (it came
    // first, or was running), 204 (the delete) or 404 (it came after).
    let tasks: Vec<_> = mixed_load()
        .into_iter()
        .chain([(Op::Delete, Duration::from_millis(30))])
        .map(|(op, delay)| start(app, &id, op, &data, delay))
        .collect();
    let mut answered = Vec::new();
    for t in tasks {
        let (op, r) = t.await.unwrap();
        let status = r.status.as_u16();
        answered.push((op, status));
        match (op, status) {
            (Op::Delete, 204) | (_, 404) => {}
            (Op::Train(epochs), 200) => {
                let v = r.json();
                assert!(
                    matches!(v["status"].as_str(), Some("completed")),
                    "{op:?}: {v}"
                );
                assert_eq!(v["epochs_run"].as_u64(), Some(epochs), "{v}");
                assert_eq!(numbers(&v["loss"]).map(|l| l.len() as u64), Some(epochs));
            }
            (Op::Predict | Op::Gradients | Op::Dataset(_), 200) => {}
            _ => panic!("{op:?} answered {status}: {}", r.body),
        }
    }
    eprintln!("mixed load with a delete: {answered:?}");
    app.get(&format!("/sessions/{id}"))
        .await
        .expect_problem(404, "not_found");
    assert_eq!(session_total(app).await, 0, "the deleted session is listed");
    let fresh = prepared(app, &json!({"layers": [8, 3]}), &data[0]).await;
    app.train(&fresh, 3).await;
    assert_consistent(app, &fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_p99_stays_under_50_ms_while_every_worker_trains() {
    let _timing = exclusive().await;
    let mut server = Server::start(Config {
        workers: 2,
        train_time_limit_secs: 30.0,
        ..config()
    })
    .await;
    let app = server.app.clone();
    let a = slow_session(&app).await;
    let b = slow_session(&app).await;
    let runs = [app.start_train(&a, LONG), app.start_train(&b, LONG)];
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The machine is shared: another process's burst can stall this one for tens of
    // milliseconds. So up to three rounds of 200 requests, and one must hold the bound; a
    // server that lets training starve the runtime misses it in every round.
    let mut rounds = Vec::new();
    let mut held = false;
    for _ in 0..3 {
        let mut took = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let r = app.get("/healthz").await;
            took.push(t.elapsed());
            assert_eq!(r.expect_json(200), json!({"status": "ok"}));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            runs.iter().all(|r| !r.is_finished()),
            "a train ended during the measurement: it proves nothing"
        );
        took.sort_unstable();
        let p99 = took[took.len() * 99 / 100 - 1];
        rounds.push(format!(
            "p50 {:?}, p99 {p99:?}, max {:?}",
            took[took.len() / 2],
            took[took.len() - 1]
        ));
        held = p99 < Duration::from_millis(50);
        if held {
            break;
        }
    }
    eprintln!("/healthz while 2 of 2 workers train: {rounds:?}");
    assert!(
        held,
        "/healthz p99 over 50 ms in every round while every worker trains: {rounds:?}"
    );

    // Shutdown stops both runs at their next epoch boundary, so the test ends promptly.
    server.shut_down();
    for run in runs {
        let (r, _) = run.await.unwrap();
        assert_eq!(r.expect_json(200)["status"], "cancelled");
    }
}
