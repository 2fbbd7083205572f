//! A client that goes away during training does not leave the worker training for nobody:
//! the run stops at its next epoch boundary, the worker is free for others, and the session
//! it ran on is consistent and trains on.

use std::time::{Duration, Instant};

use backprop_server::Config;

use crate::harness::{App, LONG, Server, assert_consistent, config, exclusive, slow_session};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_frees_its_worker_and_leaves_the_session_consistent() {
    let _timing = exclusive().await;
    let limit = 20.0;
    let server = Server::start(Config {
        workers: 1,
        train_time_limit_secs: limit,
        ..config()
    })
    .await;
    let app = &server.app;
    let abandoned = slow_session(app).await;
    let other = slow_session(app).await;
    let before = app.session(&abandoned).await["epochs_trained"].as_u64();

    // Its own client, so that dropping the request closes its own connection.
    let quitter = App::new(app.base.clone());
    let run = quitter.start_train(&abandoned, LONG);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !run.is_finished(),
        "the run ended within 300 ms: the test proves nothing"
    );
    run.abort();
    assert!(
        run.await.is_err_and(|e| e.is_cancelled()),
        "the request was not dropped"
    );
    let gone = Instant::now();

    // One worker: this waits until the abandoned run lets go of it.
    let r = app.train(&other, 3).await;
    let freed = gone.elapsed();
    eprintln!("after the client went away, another session's 3 epochs finished in {freed:?}");
    assert_eq!(r["status"], "completed", "{r}");
    assert!(
        freed < Duration::from_secs(5),
        "the only worker was busy for {freed:?} after its client went away (the time limit, \
         {limit} s, would have freed it); the run should stop at its next epoch boundary"
    );

    let s = assert_consistent(app, &abandoned).await;
    let kept = s["epochs_trained"].as_u64().unwrap();
    eprintln!("the abandoned run kept {kept} epochs (the session had {before:?})");
    let next = app.train(&abandoned, 2).await;
    assert_eq!(next["status"], "completed", "{next}");
    assert_eq!(next["epochs_trained"].as_u64(), Some(kept + 2), "{next}");
    assert_consistent(app, &abandoned).await;
}
