//! Training runs on workers: trains of one session queue in order, reads during a run see
//! the state before it, deletion and health checks do not wait for it, and the per-request
//! time limit stops a run at an epoch boundary, keeping what was done.
//!
//! Slow runs are bounded by the configured time limit, never by their epoch count.

use std::time::{Duration, Instant};

use backprop_server::Config;
use serde_json::{Value, json};

use crate::helpers::{
    Resp, TestApp, assert_problem, config, floats, same_bits, slow_session, spawn_app, synthetic,
};

/// Epochs for a run that only its time limit ends; several fit in the default history.
const LONG: u64 = 100_000;

/// A read that does not wait for a run answers in this; runs here last a second or more.
const QUICK: Duration = Duration::from_millis(750);

fn limited(secs: f64, workers: u32) -> Config {
    Config {
        train_time_limit_secs: secs,
        workers,
        ..config()
    }
}

/// Starts `POST /sessions/{id}/train` in its own task; the handle yields the answer and how
/// long it took.
fn start_train(app: &TestApp, id: &str, epochs: u64) -> tokio::task::JoinHandle<(Resp, Duration)> {
    let app = app.clone();
    let path = format!("/sessions/{id}/train");
    tokio::spawn(async move {
        let t = Instant::now();
        let r = app.post(&path, &json!({ "epochs": epochs })).await;
        (r, t.elapsed())
    })
}

async fn timed<F: std::future::Future<Output = Resp>>(what: &str, f: F) -> Resp {
    let t = Instant::now();
    let r = f.await;
    let took = t.elapsed();
    assert!(
        took < QUICK,
        "{what} took {took:?} while a run was in progress (want < {QUICK:?})"
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_trains_of_one_session_queue_like_one_long_run() {
    let app = spawn_app(config()).await;
    // 50 epochs take a few milliseconds (release) to a fraction of a second (debug), so the
    // two requests really overlap, and the whole test stays short.
    let settings = json!({"layers": [16, 32, 32, 4], "init": {"method": "xavier", "seed": 2},
        "grad_reduction": "mean", "learning_rate": 0.05});
    let data = synthetic(100, 16, 4, 3);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (id, _) = app.create_session(&settings).await;
        app.put(&format!("/sessions/{id}/dataset"), &data)
            .await
            .expect(200);
        ids.push(id);
    }
    let (shared, twin) = (&ids[0], &ids[1]);

    let a = start_train(&app, shared, 50);
    let b = start_train(&app, shared, 50);
    let (a, b) = (a.await.unwrap().0, b.await.unwrap().0);
    let one = app.train(twin, 100).await;
    let twin_loss = one["loss"].as_array().unwrap();
    assert_eq!(twin_loss.len(), 100);

    let (a, b) = (a.expect_json(200), b.expect_json(200));
    let (first, second) = if a["epochs_trained"] == 50 {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(
        first["epochs_trained"], 50,
        "one request ran first: {first}"
    );
    assert_eq!(
        second["epochs_trained"], 100,
        "the other continued from it: {second}"
    );
    for r in [&first, &second] {
        assert_eq!(
            (r["status"].as_str(), r["epochs_run"].as_u64()),
            (Some("completed"), Some(50)),
            "{r}"
        );
    }
    same_bits(&first["loss"], &json!(twin_loss[..50]))
        .expect("first 50 entries = the twin's 1..=50");
    same_bits(&second["loss"], &json!(twin_loss[50..]))
        .expect("second 50 entries = the twin's 51..=100");

    let h = app
        .get(&format!("/sessions/{shared}/loss"))
        .await
        .expect_json(200);
    same_bits(&h["loss"], &one["loss"]).expect("history identical to one 100-epoch run");
    let w = app.get(&format!("/sessions/{shared}/weights")).await.body;
    let tw = app.get(&format!("/sessions/{twin}/weights")).await.body;
    assert!(
        w == tw,
        "weights after 50 + 50 epochs differ from one 100-epoch run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_a_run_are_quick_and_see_the_state_before_it() {
    let app = spawn_app(limited(1.5, 2)).await;
    let id = slow_session(&app).await;
    app.train(&id, 1).await;
    let before = app.snapshot(&id).await;
    let batch = json!({"x": synthetic(3, 32, 10, 99)["x"]});
    let predict = format!("/sessions/{id}/predict");
    let pred_before = app.post(&predict, &batch).await.expect(200).body.clone();

    let run = start_train(&app, &id, LONG);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let s = timed("GET session", app.get(&format!("/sessions/{id}"))).await;
    timed("GET weights", app.get(&format!("/sessions/{id}/weights"))).await;
    timed("GET loss", app.get(&format!("/sessions/{id}/loss"))).await;
    let p = timed("POST predict", app.post(&predict, &batch)).await;
    timed("GET /sessions", app.get("/sessions")).await;
    assert!(
        !run.is_finished(),
        "the run ended before the reads: the test proves nothing"
    );
    assert_eq!(
        s.expect_json(200)["epochs_trained"],
        1,
        "a read during the run sees it unstarted"
    );
    assert_eq!(
        p.expect(200).body,
        pred_before,
        "predict during the run uses the weights before it"
    );
    let changes = app.snapshot(&id).await.changes_since(&before);
    assert!(!run.is_finished(), "the run ended before the snapshot");
    assert!(changes.is_empty(), "reads during a run saw it: {changes:?}");

    let (r, took) = run.await.unwrap();
    let r = r.expect_json(200);
    assert_eq!(
        r["status"],
        "time_limit",
        "{took:?}: {}",
        crate::helpers::clip(&r.to_string())
    );
    let n = r["epochs_run"].as_u64().unwrap();
    assert!(n >= 1, "{r}");
    let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(
        s["epochs_trained"],
        1 + n,
        "the session keeps the run's epochs: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_a_run_answers_at_once_and_the_run_still_answers() {
    let app = spawn_app(limited(1.0, 2)).await;
    let id = slow_session(&app).await;
    let run = start_train(&app, &id, LONG);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let d = timed(
        "DELETE during a run",
        app.delete(&format!("/sessions/{id}")),
    )
    .await;
    d.expect(204);
    assert!(
        !run.is_finished(),
        "the run ended before DELETE: the test proves nothing"
    );
    assert_problem(&app.get(&format!("/sessions/{id}")).await, 404, "not_found");

    let (r, _) = run.await.unwrap();
    let r = r.expect_json(200);
    assert!(
        matches!(r["status"].as_str(), Some("time_limit" | "completed")),
        "the deleted session's run: {r}"
    );
    assert_eq!(
        r["epochs_run"].as_u64(),
        r["loss"].as_array().map(|l| l.len() as u64),
        "{r}"
    );
    assert_problem(&app.get(&format!("/sessions/{id}")).await, 404, "not_found");
    assert_eq!(
        app.get("/sessions").await.expect_json(200)["total"],
        0,
        "deleted session listed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_every_worker_trains_and_a_queued_run_gets_its_own_limit() {
    let app = spawn_app(limited(1.0, 1)).await;
    let a = slow_session(&app).await;
    let b = slow_session(&app).await;
    let (small, _) = app.create_session(&json!({"layers": [4, 3]})).await;

    let t0 = Instant::now();
    let ra = start_train(&app, &a, LONG);
    let rb = start_train(&app, &b, LONG);
    tokio::time::sleep(Duration::from_millis(300)).await;

    for _ in 0..3 {
        let h = timed("GET /healthz", app.get("/healthz")).await;
        assert_eq!(h.expect_json(200), json!({"status": "ok"}));
    }
    timed("GET /sessions", app.get("/sessions"))
        .await
        .expect(200);
    timed("GET session", app.get(&format!("/sessions/{a}")))
        .await
        .expect(200);
    timed(
        "GET weights",
        app.get(&format!("/sessions/{small}/weights")),
    )
    .await
    .expect(200);
    assert!(
        !ra.is_finished() || !rb.is_finished(),
        "both runs ended before the health checks"
    );

    let mut ends = Vec::new();
    for h in [ra, rb] {
        let (r, _) = h.await.unwrap();
        let r = r.expect_json(200);
        assert_eq!(
            r["status"],
            "time_limit",
            "{}",
            crate::helpers::clip(&r.to_string())
        );
        ends.push((t0.elapsed(), r["epochs_run"].as_u64().unwrap()));
    }
    // One worker: the second run waited for the first, then got a full limit of its own.
    assert!(
        ends.iter().all(|e| e.1 >= 1),
        "a run did no epoch: {ends:?}"
    );
    let last = ends.iter().map(|e| e.0).max().unwrap();
    assert!(
        last >= Duration::from_millis(1800),
        "two 1 s runs on one worker ended after {last:?}: they did not take turns, or the \
         queued run's limit started before it ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limit_stops_at_an_epoch_boundary_and_keeps_the_epochs() {
    let app = spawn_app(limited(0.3, 2)).await;
    let id = slow_session(&app).await;

    let t = Instant::now();
    let r = app.train(&id, LONG).await;
    let took = t.elapsed();
    assert_eq!(
        r["status"],
        "time_limit",
        "{}",
        crate::helpers::clip(&r.to_string())
    );
    let n = r["epochs_run"].as_u64().unwrap();
    assert!((1..LONG).contains(&n), "epochs_run {n}");
    eprintln!("a 0.3 s limit ran {n} epochs of the slow workload in {took:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "a 0.3 s limit answered after {took:?}"
    );
    let loss = r["loss"].as_array().unwrap();
    assert_eq!(loss.len() as u64, n, "one loss per epoch run");
    assert_eq!(r["epochs_trained"], n);
    same_bits(&r["final_loss"], &loss[loss.len() - 1]).expect("final_loss is the last entry");
    assert!(
        floats(&r["loss"])
            .iter()
            .all(|l| l.is_finite() && *l >= 0.0)
    );

    let h = app
        .get(&format!("/sessions/{id}/loss"))
        .await
        .expect_json(200);
    assert_eq!(h["total"], n, "the session keeps exactly the epochs run");
    same_bits(&h["loss"], &r["loss"]).expect("kept history = the response's");
    let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(s["epochs_trained"], n);
    same_bits(&s["last_loss"], &r["final_loss"]).expect("last_loss");

    // Two queued limited runs on one session: each limit starts when its run does.
    let a = start_train(&app, &id, LONG);
    let b = start_train(&app, &id, LONG);
    let mut total = n;
    for h in [a, b] {
        let r: Value = h.await.unwrap().0.expect_json(200);
        assert_eq!(r["status"], "time_limit");
        let k = r["epochs_run"].as_u64().unwrap();
        assert!(
            k >= 1,
            "a queued run lost its time to the one before it: {r:?}"
        );
        total += k;
    }
    let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(s["epochs_trained"], total, "every run's epochs are kept");

    // A short run completes, and return_loss false leaves the list out.
    let q = app
        .post(
            &format!("/sessions/{id}/train"),
            &json!({"epochs": 1, "return_loss": false}),
        )
        .await
        .expect_json(200);
    assert_eq!(q["status"], "completed");
    assert!(
        q.get("loss").is_none(),
        "return_loss false still sent the list: {q}"
    );
    assert_eq!(q["epochs_trained"], total + 1);
}
