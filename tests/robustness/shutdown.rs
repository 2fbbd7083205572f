//! Shutdown during training (SIGTERM): the running train stops at an epoch boundary and
//! answers with what it did (status `cancelled`: stopped by the shutdown, not by its time
//! limit), a queued one answers too, and the process exits within a bounded time, well before
//! the training time limit or the shutdown grace period would end it.

use std::time::{Duration, Instant};

use backprop_server::{Config, SHUTDOWN_GRACE};
use reqwest::Method;

use crate::harness::{LONG, Server, config, numbers, shared, slow_session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_train_answers_it_and_the_process_exits_promptly() {
    let _timing = shared().await;
    let limit = 60.0;
    let mut server = Server::start(Config {
        workers: 1,
        train_time_limit_secs: limit,
        ..config()
    })
    .await;
    let app = server.app.clone();
    let running = slow_session(&app).await;
    let queued = slow_session(&app).await;
    let run = app.start_train(&running, LONG);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One worker: this one waits for it.
    let wait = app.start_train(&queued, LONG);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !run.is_finished() && !wait.is_finished(),
        "a run ended before shutdown: the test proves nothing"
    );

    let asked = Instant::now();
    server.shut_down();
    let (r, _) = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the running train did not answer within 10 s of shutdown")
        .expect("the train task");
    let answered = asked.elapsed();
    let r = r.expect_json(200);
    assert_eq!(r["status"], "cancelled", "the running train: {r}");
    let n = r["epochs_run"].as_u64().unwrap();
    assert!(n > 0, "the running train ran no epoch: {r}");
    assert_eq!(
        numbers(&r["loss"]).map(|l| l.len() as u64),
        Some(n),
        "one loss per epoch run: {r}"
    );

    let (q, _) = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the queued train did not answer within 10 s of shutdown")
        .expect("the queued train task");
    let q = q.expect_json(200);
    assert_eq!(q["status"], "cancelled", "the queued train: {q}");

    let process = &mut server.process;
    let exited = tokio::task::block_in_place(|| process.wait_exit(Duration::from_secs(10)))
        .expect("the server did not exit within 10 s of SIGTERM");
    let returned = asked.elapsed();
    assert!(
        exited.success(),
        "the server exited with {exited} after SIGTERM; its log:\n{}",
        server.process.log()
    );
    eprintln!(
        "shutdown: the running train answered after {answered:?} ({n} epochs), the \
         process exited after {returned:?}"
    );
    assert!(
        returned < Duration::from_secs(3),
        "the server exited {returned:?} after SIGTERM: the trains should stop at their next \
         epoch boundary, not run out the time limit ({limit} s) or the grace period \
         ({SHUTDOWN_GRACE:?})"
    );
    let refused = app.request(Method::GET, "/healthz", None, None).await;
    assert!(
        refused.is_err(),
        "the server still answers after it exited: {refused:?}"
    );
}
