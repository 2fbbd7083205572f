//! Background trains and live progress (issue 11), against the real binary on its default
//! store (a fresh SQLite file per server): `"wait": false` answers 202 with a job that runs
//! in the session's order with waiting trains and ends with exactly the numbers a waiting
//! train gives; `DELETE /training` cancels at an epoch boundary and keeps what was done;
//! the job time limit; `GET /events` as Server-Sent Events (state first, throttled epochs,
//! the last epoch, `done`); a job cut by `kill -9` is `interrupted` after a restart with
//! what it had committed, and one stopped by SIGTERM is `cancelled`.
//!
//! `BACKPROP_SERVER_BIN=target/release/backprop-server cargo test --test jobs -- --ignored
//! --nocapture readers` measures what event streams cost a training (the README quotes it).

#[path = "support/client.rs"]
mod client;
#[path = "support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use backprop_server::Config;
use serde_json::{Value, json};

use client::Client;
use server::ServerProcess;

fn config() -> Config {
    Config {
        workers: 2,
        session_ttl_secs: 0,
        ..Config::default()
    }
}

async fn start(config: Config) -> ServerProcess {
    tokio::task::spawn_blocking(move || ServerProcess::start(&config))
        .await
        .expect("starting the server")
}

async fn start_args(args: Vec<String>) -> ServerProcess {
    tokio::task::spawn_blocking(move || ServerProcess::start_with(&args, &[]))
        .await
        .expect("starting the server")
}

/// The notebook's one-layer net on its own data: epochs take microseconds.
async fn quick_session(c: &Client, seed: u64) -> String {
    let id = c
        .create(&json!({"layers": [4, 3], "init": {"method": "numpy_rand", "seed": seed}}))
        .await;
    c.put(
        &format!("/sessions/{id}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);
    id
}

/// Polls `GET /training` until the job is done (or `within` passes); the job.
async fn wait_done(c: &Client, id: &str, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let job = c.get(&format!("/sessions/{id}/training")).await.expect(200);
        if job["state"] == "done" {
            return job;
        }
        assert!(
            started.elapsed() < within,
            "the job was not done within {within:?}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET /training` until the job has done at least `epochs`; the job.
async fn wait_progress(c: &Client, id: &str, epochs: u64) -> Value {
    let started = Instant::now();
    loop {
        let job = c.get(&format!("/sessions/{id}/training")).await.expect(200);
        if job["epochs_done"].as_u64().unwrap_or(0) >= epochs {
            return job;
        }
        assert!(
            job["state"] != "done",
            "the job ended before {epochs} epochs: {job}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the job did not reach {epochs} epochs in 60 s: {job}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a background train long enough to outlast any test (1,000,000 epochs): 202.
async fn start_long_job(c: &Client, id: &str, return_loss: bool) {
    c.post(
        &format!("/sessions/{id}/train"),
        &json!({"epochs": 1_000_000, "wait": false, "return_loss": return_loss}),
    )
    .await
    .expect(202);
}

fn losses(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list of losses: {v}"))
        .iter()
        .map(|l| l.as_f64().expect("a number"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_train_is_a_202_job_in_the_sessions_order_with_a_waiting_trains_numbers() {
    let server = start(config()).await;
    let c = Client::new(&server.base);
    let (job_side, wait_side) = (quick_session(&c, 7).await, quick_session(&c, 7).await);

    let resp = reqwest::Client::new()
        .post(format!("{}/sessions/{job_side}/train", server.base))
        .json(&json!({"epochs": 3000, "wait": false}))
        .send()
        .await
        .expect("POST /train");
    assert_eq!(resp.status().as_u16(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/sessions/{job_side}/training"));
    let job: Value = resp.json().await.unwrap();
    assert!(
        job["state"] == "queued" || job["state"] == "running",
        "a new job: {job}"
    );
    assert_eq!(job["epochs_requested"], 3000, "{job}");
    assert_eq!(job["result"], Value::Null, "{job}");

    // A waiting train sent after the 202 runs after the job, on top of its epochs.
    let after = c
        .post(
            &format!("/sessions/{job_side}/train"),
            &json!({"epochs": 50}),
        )
        .await
        .expect(200);
    assert_eq!(after["epochs_trained"], 3050, "{after}");
    let job = wait_done(&c, &job_side, Duration::from_secs(30)).await;
    let result = &job["result"];
    assert_eq!(result["status"], "completed", "{job}");
    assert_eq!(result["epochs_run"], 3000, "{job}");
    assert_eq!(job["epochs_done"], 3000, "{job}");
    assert!(job["started_at"].is_string(), "{job}");

    // The same two trains, waited for, on an identical session: the same numbers, bit for bit.
    let first = c
        .post(
            &format!("/sessions/{wait_side}/train"),
            &json!({"epochs": 3000}),
        )
        .await
        .expect(200);
    assert_eq!(result["loss"], first["loss"], "the job's losses");
    assert_eq!(result["final_loss"], first["final_loss"]);
    assert_eq!(result["initial_loss"], first["initial_loss"]);
    assert_eq!(job["last_loss"], first["final_loss"]);
    c.post(
        &format!("/sessions/{wait_side}/train"),
        &json!({"epochs": 50}),
    )
    .await
    .expect(200);
    let (a, b) = (
        c.get(&format!("/sessions/{job_side}/loss"))
            .await
            .expect(200),
        c.get(&format!("/sessions/{wait_side}/loss"))
            .await
            .expect(200),
    );
    assert_eq!(losses(&a["loss"]).len(), 3050);
    assert_eq!(
        a["loss"], b["loss"],
        "histories after job + wait vs wait + wait"
    );
    let (wa, wb) = (
        c.get(&format!("/sessions/{job_side}/weights"))
            .await
            .expect(200),
        c.get(&format!("/sessions/{wait_side}/weights"))
            .await
            .expect(200),
    );
    assert_eq!(wa, wb, "weights after job + wait vs wait + wait");

    // return_loss false leaves the list out of the result, as on a waiting train.
    c.post(
        &format!("/sessions/{wait_side}/train"),
        &json!({"epochs": 5, "wait": false, "return_loss": false}),
    )
    .await
    .expect(202);
    let quiet = wait_done(&c, &wait_side, Duration::from_secs(30)).await;
    assert_eq!(quiet["result"]["status"], "completed", "{quiet}");
    assert!(quiet["result"].get("loss").is_none(), "{quiet}");

    // No job yet: 404 for GET and DELETE, saying how to start one.
    let fresh = quick_session(&c, 1).await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        let p = c
            .call(method, &format!("/sessions/{fresh}/training"), None)
            .await
            .expect_problem(404, "not_found");
        assert!(
            p["detail"].as_str().unwrap().contains("\"wait\": false"),
            "{p}"
        );
    }
    // A job on a session with no dataset is refused as a waiting train is.
    let bare = c.create(&json!({"layers": [4, 3]})).await;
    c.post(
        &format!("/sessions/{bare}/train"),
        &json!({"epochs": 5, "wait": false}),
    )
    .await
    .expect_problem(409, "no_dataset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_training_cancels_at_an_epoch_boundary_and_keeps_what_was_done() {
    let server = start(Config {
        job_time_limit_secs: 60.0,
        ..config()
    })
    .await;
    let c = Client::new(&server.base);
    let id = c.slow_session().await;
    start_long_job(&c, &id, true).await;
    wait_progress(&c, &id, 3).await;
    // A second background train while this one runs: 409, naming the ways on.
    let busy = c
        .post(
            &format!("/sessions/{id}/train"),
            &json!({"epochs": 5, "wait": false}),
        )
        .await
        .expect_problem(409, "conflict");
    assert!(
        busy["detail"].as_str().unwrap().contains("DELETE"),
        "{busy}"
    );

    let asked = Instant::now();
    let job = c
        .delete(&format!("/sessions/{id}/training"))
        .await
        .expect(200);
    let took = asked.elapsed();
    assert_eq!(job["state"], "done", "{job}");
    let result = &job["result"];
    assert_eq!(result["status"], "cancelled", "{job}");
    let n = result["epochs_run"].as_u64().unwrap();
    assert!(n >= 3, "{job}");
    assert_eq!(losses(&result["loss"]).len() as u64, n, "{job}");
    assert!(
        took < Duration::from_secs(3),
        "the cancel took {took:?}: it should stop at the next epoch boundary"
    );
    // What was done is the session's, and it trains on from there.
    let s = c.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(s["epochs_trained"].as_u64(), Some(n), "{s}");
    assert_eq!(s["last_loss"], result["final_loss"], "{s}");
    let again = c.get(&format!("/sessions/{id}/training")).await.expect(200);
    assert_eq!(again, job, "GET /training after the cancel");
    // Cancelling a finished job changes nothing.
    let twice = c
        .delete(&format!("/sessions/{id}/training"))
        .await
        .expect(200);
    assert_eq!(twice, job);
    let next = c
        .post(&format!("/sessions/{id}/train"), &json!({"epochs": 2}))
        .await
        .expect(200);
    assert_eq!(next["epochs_trained"].as_u64(), Some(n + 2), "{next}");

    // A job cancelled while it waits for its turn runs nothing.
    let (path, body) = (format!("/sessions/{id}/train"), json!({"epochs": 20}));
    let waiting = c.post(&path, &body);
    let queued = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let j = c
            .post(
                &format!("/sessions/{id}/train"),
                &json!({"epochs": 5, "wait": false}),
            )
            .await
            .expect(202);
        assert_eq!(j["state"], "queued", "behind a waiting train: {j}");
        c.delete(&format!("/sessions/{id}/training")).await
    };
    let (w, cancelled) = tokio::join!(waiting, queued);
    w.expect(200);
    let job = match cancelled.status {
        200 => cancelled.json(),
        _ => wait_done(&c, &id, Duration::from_secs(30)).await,
    };
    assert_eq!(job["result"]["status"], "cancelled", "{job}");
    assert_eq!(job["result"]["epochs_run"], 0, "{job}");
    let s = c.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(s["epochs_trained"].as_u64(), Some(n + 22), "{s}");

    // Deleting the session stops its job too (nobody is left to read it).
    c.post(
        &format!("/sessions/{id}/train"),
        &json!({"epochs": 100_000, "wait": false}),
    )
    .await
    .expect(202);
    c.delete(&format!("/sessions/{id}")).await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_takes_a_worker_like_a_waiting_train() {
    // One worker, and commits far apart: the running job holds the worker throughout.
    let server = start(Config {
        workers: 1,
        job_checkpoint_secs: 60.0,
        ..config()
    })
    .await;
    let c = Client::new(&server.base);
    let (busy, other) = (c.slow_session().await, quick_session(&c, 2).await);
    start_long_job(&c, &busy, false).await;
    wait_progress(&c, &busy, 1).await;
    let waiting = {
        let (c, path) = (c.clone(), format!("/sessions/{other}/train"));
        tokio::spawn(async move { c.post(&path, &json!({"epochs": 1})).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a train on another session ran while the only worker ran a job"
    );
    c.delete(&format!("/sessions/{busy}/training"))
        .await
        .expect(200);
    let r = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting train did not run once the job let go of the worker")
        .unwrap()
        .expect(200);
    assert_eq!(r["status"], "completed", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stops_at_the_job_time_limit_not_the_train_time_limit() {
    let server = start(Config {
        job_time_limit_secs: 0.5,
        train_time_limit_secs: 0.1,
        ..config()
    })
    .await;
    let c = Client::new(&server.base);
    let id = c.slow_session().await;
    let started = Instant::now();
    start_long_job(&c, &id, false).await;
    let job = wait_done(&c, &id, Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert_eq!(job["result"]["status"], "time_limit", "{job}");
    assert!(
        took >= Duration::from_millis(500),
        "stopped after {took:?}: the train limit (0.1 s) was applied, not the job's (0.5 s)"
    );
    let n = job["result"]["epochs_run"].as_u64().unwrap();
    let s = c.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(s["epochs_trained"].as_u64(), Some(n), "{s}");
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
struct Sse {
    name: String,
    data: Value,
    at: Instant,
}

/// Reads `GET /sessions/{id}/events` to its end: the events and the comment lines seen.
async fn read_events(base: &str, id: &str) -> (Vec<Sse>, usize) {
    let mut resp = reqwest::Client::new()
        .get(format!("{base}/sessions/{id}/events"))
        .send()
        .await
        .expect("GET /events");
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/event-stream"), "content type {ct}");
    let (mut buf, mut events, mut comments) = (String::new(), Vec::new(), 0);
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), resp.chunk())
        .await
        .expect("no event for 60 s")
        .expect("reading the stream")
    {
        buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut name, mut data) = (String::from("message"), String::new());
            for line in block.lines() {
                if line.starts_with(':') {
                    comments += 1;
                } else if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if !data.is_empty() {
                let data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event {name}: data not JSON ({e}): {data}"));
                events.push(Sse {
                    name,
                    data,
                    at: Instant::now(),
                });
            }
        }
    }
    (events, comments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_the_state_then_throttled_epochs_the_last_epoch_and_done() {
    let server = start(config()).await;
    let c = Client::new(&server.base);
    let id = quick_session(&c, 3).await;
    // With no job: the state and done at once.
    let (idle, _) = read_events(&server.base, &id).await;
    let names: Vec<_> = idle.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["state", "done"], "{idle:?}");
    assert_eq!(idle[0].data["job"], Value::Null);

    const EPOCHS: u64 = 100_000;
    c.post(
        &format!("/sessions/{id}/train"),
        &json!({"epochs": EPOCHS, "wait": false, "return_loss": false}),
    )
    .await
    .expect(202);
    let (events, _) = read_events(&server.base, &id).await;
    assert_eq!(events[0].name, "state", "{:?}", &events[..2]);
    let done = events.last().unwrap();
    assert_eq!(done.name, "done", "the last event: {done:?}");
    assert_eq!(
        done.data["job"]["result"]["status"], "completed",
        "{done:?}"
    );
    assert_eq!(done.data["epochs_trained"], EPOCHS, "{done:?}");
    let epochs: Vec<&Sse> = events.iter().filter(|e| e.name == "epoch").collect();
    assert!(!epochs.is_empty(), "no epoch event: {events:?}");
    let last = epochs.last().unwrap();
    assert_eq!(last.data["epoch"], EPOCHS, "the last epoch is always sent");
    assert_eq!(
        last.data["loss"], done.data["last_loss"],
        "{last:?} {done:?}"
    );
    let ks: Vec<u64> = epochs
        .iter()
        .map(|e| e.data["epoch"].as_u64().unwrap())
        .collect();
    assert!(
        ks.windows(2).all(|w| w[0] < w[1]),
        "epochs not increasing: {ks:?}"
    );
    // The losses are the history's, at those epochs.
    let history = c.get(&format!("/sessions/{id}/loss")).await.expect(200);
    let history = losses(&history["loss"]);
    for e in &epochs {
        let k = e.data["epoch"].as_u64().unwrap() as usize;
        assert_eq!(e.data["loss"].as_f64(), Some(history[k - 1]), "epoch {k}");
    }
    // Throttled: about 20 a second (a window of 50 ms between two).
    let span = last.at.duration_since(events[0].at).as_secs_f64();
    let rate = epochs.len() as f64 / span.max(0.05);
    eprintln!(
        "events: {} epoch events over {span:.2} s of a {EPOCHS}-epoch train ({rate:.1}/s)",
        epochs.len()
    );
    // At most one per 50 ms as sent (the last epoch aside): counted over the whole span,
    // since delivery may bunch two into one read on a busy machine.
    let allowed = (span / 0.05).floor() as usize + 2;
    assert!(
        epochs.len() <= allowed,
        "{} epoch events in {span:.2} s: more than one per 50 ms",
        epochs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_hold_back_nothing_and_hold_no_backlog() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(config()).await;
    let c = Client::new(&server.base);
    let id = quick_session(&c, 5).await;
    start_long_job(&c, &id, false).await;
    wait_progress(&c, &id, 1).await;
    // 20 streams whose clients send the request and then read nothing at all.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let req = format!("GET /sessions/{id}/events HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, at0) = (
        server.rss_kib(),
        c.get(&format!("/sessions/{id}/training")).await.json(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, at1) = (
        server.rss_kib(),
        c.get(&format!("/sessions/{id}/training")).await.json(),
    );
    let (e0, e1) = (
        at0["epochs_done"].as_u64().unwrap(),
        at1["epochs_done"].as_u64().unwrap(),
    );
    eprintln!(
        "with 20 stalled readers: {} epochs in 2 s, RSS {rss0} -> {rss1} KiB",
        e1 - e0
    );
    assert!(
        e1 > e0 + 1000,
        "the job crawled with stalled readers: {e0} -> {e1}"
    );
    // The history grows by 8 bytes an epoch (the job's losses, kept until its next commit
    // and then in the session); anything past that and a margin would be a backlog.
    let history_kib = (e1 - e0) * 8 / 1024;
    assert!(
        rss1 < rss0 + history_kib + 1024,
        "the server grew from {rss0} to {rss1} KiB in 2 s with 20 stalled readers, of which \
         {history_kib} KiB for the history"
    );
    // A stalled reader that reads at last finds its stream alive, state first.
    let mut buf = vec![0; 4096];
    let n = stalled[0].read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.contains("event: state"), "{head}");
    let job = c
        .delete(&format!("/sessions/{id}/training"))
        .await
        .expect(200);
    assert_eq!(job["result"]["status"], "cancelled", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cut_by_kill_9_is_interrupted_with_what_it_committed_and_sigterm_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("jobs.db").display());
    let args = vec![
        "--addr=127.0.0.1:0".to_owned(),
        format!("--database={db}"),
        "--session-ttl-secs=0".to_owned(),
        "--job-checkpoint-secs=0.2".to_owned(),
    ];
    let mut server = start_args(args.clone()).await;
    let c = Client::new(&server.base);
    let id = c.slow_session().await;
    start_long_job(&c, &id, true).await;
    // Let a few checkpoints commit.
    wait_progress(&c, &id, 5).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = c.get(&format!("/sessions/{id}/training")).await.expect(200);
    assert_eq!(before["state"], "running", "{before}");
    server.kill9();

    let server = start_args(args.clone()).await;
    let c = Client::new(&server.base);
    let job = c.get(&format!("/sessions/{id}/training")).await.expect(200);
    assert_eq!(job["state"], "done", "{job}");
    let result = &job["result"];
    assert_eq!(result["status"], "interrupted", "{job}");
    let kept = result["epochs_run"].as_u64().unwrap();
    assert!(kept > 0, "nothing was committed before the kill: {job}");
    assert_eq!(job["epochs_done"].as_u64(), Some(kept), "{job}");
    let s = c.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(s["epochs_trained"].as_u64(), Some(kept), "{s}");
    assert_eq!(s["last_loss"], result["final_loss"], "{s}");
    let history = c.get(&format!("/sessions/{id}/loss")).await.expect(200);
    assert_eq!(
        result["loss"], history["loss"],
        "the job's losses are the session's"
    );
    assert!(
        kept <= before["epochs_done"].as_u64().unwrap() + 1_000,
        "more kept than done? {job} vs {before}"
    );

    // It trains on; a job stopped by SIGTERM says `cancelled`, also after the restart.
    c.post(
        &format!("/sessions/{id}/train"),
        &json!({"epochs": 500_000, "wait": false, "return_loss": false}),
    )
    .await
    .expect(202);
    wait_progress(&c, &id, 2).await;
    let mut server = server;
    server.terminate();
    let process = &mut server;
    tokio::task::block_in_place(|| process.wait_exit(Duration::from_secs(15)))
        .expect("the server did not exit within 15 s of SIGTERM");
    let server = start_args(args).await;
    let c = Client::new(&server.base);
    let job = c.get(&format!("/sessions/{id}/training")).await.expect(200);
    assert_eq!(job["result"]["status"], "cancelled", "{job}");
    let n = job["result"]["epochs_run"].as_u64().unwrap();
    assert!(n > 0, "{job}");
    let s = c.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(s["epochs_trained"].as_u64(), Some(kept + n), "{s}");
}

/// The figures: events a client receives during a 100,000-epoch train, and how much 10
/// attached stream readers slow that train. Medians of alternating rounds. Ignored by
/// default (tens of seconds); `BACKPROP_SERVER_BIN` may name a release binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: BACKPROP_SERVER_BIN=target/release/backprop-server cargo test --test jobs -- --ignored --nocapture readers"]
async fn readers_cost_the_training_little() {
    const EPOCHS: u64 = 100_000;
    const ROUNDS: usize = 9;
    let args = vec![
        "--addr=127.0.0.1:0".to_owned(),
        "--database=memory".to_owned(),
        "--workers=1".to_owned(),
    ];
    let server = match std::env::var("BACKPROP_SERVER_BIN") {
        Ok(bin) => tokio::task::spawn_blocking(move || {
            ServerProcess::start_command(std::process::Command::new(bin), &args, &[])
        })
        .await
        .unwrap(),
        Err(_) => start_args(args).await,
    };
    let c = Client::new(&server.base);
    // Iris on a [4, 16, 3] net: long enough epochs for a timing, short enough for rounds.
    let id = c
        .create(
            &json!({"layers": [4, 16, 3], "init": {"method": "xavier", "seed": 1},
                        "learning_rate": 0.001, "grad_reduction": "mean"}),
        )
        .await;
    c.put(
        &format!("/sessions/{id}/dataset"),
        &json!({"builtin": "iris"}),
    )
    .await
    .expect(200);
    let (mut alone, mut watched, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut alone_cpu, mut watched_cpu) = (Vec::new(), Vec::new());
    for round in 0..2 * ROUNDS {
        let readers = if round % 2 == 0 { 0 } else { 10 };
        // A new history each round, so --max-history never stops the rounds.
        let w = c.get(&format!("/sessions/{id}/weights")).await.expect(200);
        c.put(&format!("/sessions/{id}/weights"), &w)
            .await
            .expect(200);
        let (started, cpu_before) = (Instant::now(), cpu_secs(server.pid()));
        c.post(
            &format!("/sessions/{id}/train"),
            &json!({"epochs": EPOCHS, "wait": false, "return_loss": false}),
        )
        .await
        .expect(202);
        // One reader in both arms times the job (its `done` arrives as the job ends, with no
        // polling to compete for the 2 cores); the other arm adds 10 more.
        let timer = {
            let (base, id) = (server.base.clone(), id.clone());
            tokio::spawn(async move {
                let (events, _) = read_events(&base, &id).await;
                (events, started.elapsed().as_secs_f64())
            })
        };
        let streams: Vec<_> = (0..readers)
            .map(|_| {
                let (base, id) = (server.base.clone(), id.clone());
                tokio::spawn(async move { read_events(&base, &id).await })
            })
            .collect();
        let (events, took) = timer.await.unwrap();
        let done = events.last().expect("events");
        assert_eq!(done.name, "done", "{done:?}");
        assert_eq!(
            done.data["job"]["result"]["status"], "completed",
            "{done:?}"
        );
        for s in streams {
            let (events, _) = s.await.unwrap();
            let epochs: Vec<_> = events.iter().filter(|e| e.name == "epoch").collect();
            if let (Some(first), Some(last)) = (events.first(), epochs.last()) {
                let span = last.at.duration_since(first.at).as_secs_f64();
                rates.push(epochs.len() as f64 / span.max(0.05));
            }
        }
        let cpu = cpu_secs(server.pid()) - cpu_before;
        if readers == 0 {
            alone.push(took);
            alone_cpu.push(cpu);
        } else {
            watched.push(took);
            watched_cpu.push(cpu);
        }
        eprintln!("round {round}: 1 + {readers} readers, {took:.3} s, server CPU {cpu:.2} s");
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, w, r) = (median(&mut alone), median(&mut watched), median(&mut rates));
    eprintln!(
        "{EPOCHS} epochs of [4, 16, 3] on iris: median {a:.3} s with 1 reader, {w:.3} s \
         with 11 ({:+.2}%); a reader received a median {r:.1} epoch events/s",
        (w / a - 1.0) * 100.0
    );
    let (ac, wc) = (median(&mut alone_cpu), median(&mut watched_cpu));
    eprintln!(
        "the server's CPU time per round (training, polling and streams): median {ac:.2} s \
         with 1 reader, {wc:.2} s with 11 ({:+.2}%)",
        (wc / ac - 1.0) * 100.0
    );
}

/// A process's CPU time so far (user and system, from `/proc/PID/stat`), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name (which may hold spaces) close with ')'.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks / hz
}
