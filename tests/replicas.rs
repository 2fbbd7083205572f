//! Several replicas on one PostgreSQL (issue 10): the real binary, twice, on a real
//! PostgreSQL that each test starts for itself (Debian's `postgresql`, as the `postgres`
//! user, in a temporary directory; a fresh database per test).
//!
//! Any replica serves any session; trains on one session take turns across replicas, in
//! arrival order, with no lost update; a replica killed mid-train releases the session;
//! idle sessions expire across replicas (not while one is training them); the session cap
//! and keys are counted in the database; a stopped PostgreSQL is 503 `unavailable`
//! until it is back; and a background train started on one replica is followed, streamed
//! and cancelled from the other, and reported `interrupted` there when its replica dies.

#[path = "support/client.rs"]
mod client;
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/server.rs"]
mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backprop_server::Config;
use backprop_server::nn::{Init, NetConfig, Network};
use backprop_server::store::{Limits, Location, Owner, Quota, Session, Store, StoreError};
use serde_json::json;

use client::Client;
use postgres::PgServer;
use server::ServerProcess;

fn replica_config(url: &str) -> Config {
    Config {
        workers: 2,
        session_ttl_secs: 0,
        database: url.parse().expect("a PostgreSQL URL"),
        ..Config::default()
    }
}

async fn start_pg() -> PgServer {
    tokio::task::spawn_blocking(PgServer::start)
        .await
        .expect("starting PostgreSQL")
}

async fn start(config: Config) -> ServerProcess {
    tokio::task::spawn_blocking(move || ServerProcess::start(&config))
        .await
        .expect("starting a replica")
}

/// Advisory locks granted in the database: trains holding a session's turn.
async fn turns_held(url: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connecting");
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut conn)
    .await
    .expect("reading pg_locks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_trains_spread_over_two_replicas_are_one_400_epoch_run() {
    let pg = start_pg().await;
    let url = pg.fresh_database().await;
    let (ra, rb) = (
        start(replica_config(&url)).await,
        start(replica_config(&url)).await,
    );
    let (a, b) = (Client::new(&ra.base), Client::new(&rb.base));
    let settings = json!({"layers": [4, 4, 3], "init": {"method": "numpy_rand", "seed": 0},
                          "learning_rate": 0.001});
    let id = a.create(&settings).await;
    b.put(
        &format!("/sessions/{id}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);

    let trains: Vec<_> = (0..40)
        .map(|i| {
            let c = if i % 2 == 0 { a.clone() } else { b.clone() };
            let path = format!("/sessions/{id}/train");
            tokio::spawn(async move {
                c.post(&path, &json!({"epochs": 10, "return_loss": false}))
                    .await
                    .expect(200)
            })
        })
        .collect();
    let mut after = Vec::new();
    for t in trains {
        let r = t.await.expect("a train task");
        assert_eq!(r["status"], "completed", "{r}");
        after.push(r["epochs_trained"].as_u64().expect("epochs_trained"));
    }
    after.sort_unstable();
    let want: Vec<u64> = (1..=40).map(|k| 10 * k).collect();
    assert_eq!(
        after, want,
        "each train must extend the history the one before left (no lost update, no overlap)"
    );

    // The same network trained 400 epochs in one call, on one replica.
    let one = b.create(&settings).await;
    a.put(
        &format!("/sessions/{one}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);
    b.post(&format!("/sessions/{one}/train"), &json!({"epochs": 400}))
        .await
        .expect(200);
    for (what, path_a, path_b) in [
        (
            "weights",
            format!("/sessions/{id}/weights"),
            format!("/sessions/{one}/weights"),
        ),
        (
            "history",
            format!("/sessions/{id}/loss"),
            format!("/sessions/{one}/loss"),
        ),
    ] {
        // Read through the other replica each time: both must serve the latest state.
        let got = b.get(&path_a).await.expect(200);
        let want = a.get(&path_b).await.expect(200);
        assert_eq!(
            got.to_string(),
            want.to_string(),
            "{what} after 40 x 10 epochs over two replicas differ from one 400-epoch run"
        );
    }
    let loss = a.get(&format!("/sessions/{id}/loss")).await.expect(200);
    assert_eq!(loss["total"], 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_train_releases_the_session_to_the_other() {
    let pg = start_pg().await;
    let url = pg.fresh_database().await;
    let mut ra = start(Config {
        train_time_limit_secs: 30.0,
        ..replica_config(&url)
    })
    .await;
    let rb = start(replica_config(&url)).await;
    let (a, b) = (Client::new(&ra.base), Client::new(&rb.base));
    let id = a.slow_session().await;
    let before = b.get(&format!("/sessions/{id}/weights")).await.expect(200);

    let doomed = {
        let a = a.clone();
        let path = format!("/sessions/{id}/train");
        tokio::spawn(async move {
            a.try_call(
                reqwest::Method::POST,
                &path,
                Some(&json!({"epochs": 1_000_000})),
            )
            .await
        })
    };
    // Wait until replica A holds the session's turn: its train is running.
    let started = Instant::now();
    while turns_held(&url).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "replica A's train never took the session's turn"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    ra.kill9();
    let lost = doomed.await.expect("the train task");
    assert!(lost.is_err(), "a killed replica answered: {lost:?}");

    // Replica B gets the session's turn (PostgreSQL released A's lock with its connection)
    // and finds the state A's unfinished train never committed.
    let t = Instant::now();
    let r = b
        .post(&format!("/sessions/{id}/train"), &json!({"epochs": 3}))
        .await
        .expect(200);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "B waited {:?} for the dead replica's turn",
        t.elapsed()
    );
    assert_eq!(r["epochs_trained"], 3, "{r}");
    let s = b.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(s["epochs_trained"], 3, "{s}");
    let weights = b.get(&format!("/sessions/{id}/weights")).await.expect(200);
    assert_ne!(weights, before, "B's train changed nothing");
    // A change's turn is given back when the change is dropped, by a query sent from a task
    // of its own (a drop cannot wait), so it may land a few milliseconds after the answer,
    // later still on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(5);
    while turns_held(&url).await != 0 {
        assert!(
            Instant::now() < deadline,
            "a turn is still held 5 s after every train ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_on_every_replica_but_not_while_one_trains_them() {
    let pg = start_pg().await;
    let url = pg.fresh_database().await;
    let ttl = |c: Config| Config {
        session_ttl_secs: 1,
        ..c
    };
    let ra = start(ttl(Config {
        train_time_limit_secs: 3.0,
        ..replica_config(&url)
    }))
    .await;
    let rb = start(ttl(replica_config(&url))).await;
    let (a, b) = (Client::new(&ra.base), Client::new(&rb.base));

    let idle = a.create(&json!({"layers": [4, 3]})).await;
    let busy = a.create(&json!({"layers": [4, 3]})).await;
    let trained = a.slow_session().await;
    // A train longer than the TTL (3 s, by its time limit), on A.
    let train = {
        let a = a.clone();
        let path = format!("/sessions/{trained}/train");
        tokio::spawn(async move { a.post(&path, &json!({"epochs": 1_000_000})).await })
    };
    // `busy` is used through B only; `idle` by nobody.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(3500) {
        b.get(&format!("/sessions/{busy}")).await.expect(200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for (name, c) in [("A", &a), ("B", &b)] {
        c.get(&format!("/sessions/{idle}"))
            .await
            .expect_problem(404, "not_found");
        c.get(&format!("/sessions/{busy}")).await.expect(200);
        let list = c.get("/sessions").await.expect(200);
        let ids: Vec<&str> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert!(
            !ids.contains(&idle.as_str()),
            "replica {name} still lists the idle session"
        );
        assert!(
            ids.contains(&busy.as_str()),
            "replica {name} lost the session used through B"
        );
    }
    let r = train.await.expect("the train task").expect(200);
    assert_eq!(r["status"], "time_limit", "{r}");
    let s = b.get(&format!("/sessions/{trained}")).await.expect(200);
    assert_eq!(
        s["epochs_trained"], r["epochs_trained"],
        "the session trained for longer than its TTL expired meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_503_unavailable_until_it_is_back() {
    let pg = start_pg().await;
    let url = pg.fresh_database().await;
    let r = start(replica_config(&url)).await;
    let c = Client::new(&r.base);
    let id = c
        .create(&json!({"layers": [4, 3], "init": {"seed": 3}}))
        .await;
    let before = c.get(&format!("/sessions/{id}/weights")).await.expect(200);
    c.get("/readyz").await.expect(200);

    tokio::task::block_in_place(|| pg.stop());
    c.get("/healthz").await.expect(200);
    for (what, answer) in [
        ("GET /readyz", c.get("/readyz").await),
        (
            "GET /sessions/{id}",
            c.get(&format!("/sessions/{id}")).await,
        ),
        (
            "POST /sessions",
            c.post("/sessions", &json!({"layers": [4, 3]})).await,
        ),
    ] {
        answer.expect_problem(503, "unavailable");
        assert!(
            answer
                .retry_after
                .as_deref()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some(),
            "{what} while PostgreSQL is down: 503 without a Retry-After in seconds"
        );
    }

    tokio::task::block_in_place(|| pg.start_again());
    let t = Instant::now();
    while c.get("/readyz").await.status != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "/readyz never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = c.get(&format!("/sessions/{id}/weights")).await.expect(200);
    assert_eq!(after, before, "the session changed across the outage");
    c.put(
        &format!("/sessions/{id}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);
    c.post(&format!("/sessions/{id}/train"), &json!({"epochs": 2}))
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_is_counted_across_replicas() {
    let pg = start_pg().await;
    let url = pg.fresh_database().await;
    let capped = Config {
        max_sessions: 3,
        ..replica_config(&url)
    };
    let (ra, rb) = (start(capped.clone()).await, start(capped).await);
    let (a, b) = (Client::new(&ra.base), Client::new(&rb.base));
    a.create(&json!({"layers": [4, 3]})).await;
    b.create(&json!({"layers": [4, 3]})).await;
    let last = a.create(&json!({"layers": [4, 3]})).await;
    for c in [&a, &b] {
        c.post("/sessions", &json!({"layers": [4, 3]}))
            .await
            .expect_problem(429, "too_many_sessions");
    }
    b.delete(&format!("/sessions/{last}")).await.expect(204);
    b.create(&json!({"layers": [4, 3]})).await;
    let list = a.get("/sessions").await.expect(200);
    assert_eq!(list["total"], 3, "{list}");
}

fn a_session() -> Session {
    let net =
        Network::new(NetConfig::new(vec![4, 3]), &Init::NumpyRand { seed: 0 }).expect("a network");
    Session {
        net: Arc::new(net),
        init: (&Init::NumpyRand { seed: 0 }).into(),
        dataset: None,
        history: Default::default(),
        initial_loss: None,
    }
}

/// Keys (issue 9 builds the routes on this): stored in the database, so every replica
/// sees each one, its session count, and its revocation; names are unique across replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_their_sessions_are_shared_by_replicas() {
    let pg = start_pg().await;
    let location: Location = pg.fresh_database().await.parse().unwrap();
    let limits = Limits {
        max_sessions: 100,
        ttl_secs: 0,
    };
    let a = Store::open(&location, limits.clone())
        .await
        .expect("store A");
    let b = Store::open(&location, limits).await.expect("store B");

    a.create_key("alice", "hash-a").await.expect("alice's key");
    match b.create_key("alice", "hash-b").await {
        Err(StoreError::KeyExists(name)) => assert_eq!(name, "alice"),
        other => panic!("a second key named alice: {other:?}"),
    }
    b.create_key("bob", "hash-b").await.expect("bob's key");
    let alice = Owner {
        name: Some("alice"),
        max_sessions: 1,
    };
    let s = a
        .insert(a_session(), Some(alice))
        .await
        .expect("alice's session");
    assert_eq!(s.owner.as_deref(), Some("alice"));
    match b.insert(a_session(), Some(alice)).await {
        Err(StoreError::TooManySessions { limit: 1, quota }) => {
            assert_eq!(quota, Quota::Key(Some("alice".into())))
        }
        other => panic!("alice's second session past her limit of 1: {other:?}"),
    }
    b.insert(a_session(), None).await.expect("an admin session");

    let keys = b.keys().await.expect("listing keys");
    let summary: Vec<(String, usize)> = keys
        .iter()
        .map(|k| (k.key.name.clone(), k.sessions))
        .collect();
    assert_eq!(summary, [("alice".to_string(), 1), ("bob".to_string(), 0)]);
    let (owned, total) = b.list(0, 10, Some("alice")).await.expect("alice's list");
    assert_eq!((owned.len(), total), (1, 1));
    assert_eq!(owned[0].id, s.id);
    assert_eq!(b.count(None).await.unwrap(), 2);

    let found = b
        .key_by_hash("hash-a")
        .await
        .unwrap()
        .expect("alice by hash");
    assert_eq!(found.name, "alice");
    assert!(b.delete_key("alice").await.unwrap());
    assert!(!a.delete_key("alice").await.unwrap(), "deleted twice");
    assert_eq!(a.key_by_hash("hash-a").await.unwrap(), None);
    // Her sessions stay (until their TTL).
    a.get(&s.id)
        .await
        .expect("alice's session after her key went");
}

/// Background trains across replicas: a job started on A is followed on B (its progress, its
/// event stream), cancelled from B, and a job whose replica is killed is reported
/// `interrupted` by the other, with what it had committed, and the session trains on there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_one_replica_is_seen_cancelled_and_cut_from_the_other() {
    let pg = start_pg().await;
    let url = pg.fresh_database().await;
    let fast_commits = |c: Config| Config {
        job_checkpoint_secs: 0.2,
        ..c
    };
    let mut ra = start(fast_commits(replica_config(&url))).await;
    let rb = start(fast_commits(replica_config(&url))).await;
    let (a, b) = (Client::new(&ra.base), Client::new(&rb.base));
    let id = a.slow_session().await;
    a.post(
        &format!("/sessions/{id}/train"),
        &json!({"epochs": 1_000_000, "wait": false, "return_loss": false}),
    )
    .await
    .expect(202);
    // B sees it run, and its progress move (A's heartbeats carry it).
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let j = b.get(&format!("/sessions/{id}/training")).await.expect(200);
        let n = j["epochs_done"].as_u64().unwrap();
        if j["state"] == "running" && seen.last() != Some(&n) && n > 0 {
            seen.push(n);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "B never saw A's job make progress: {j}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B's event stream shows it too: its state, then epochs.
    let mut events = reqwest::Client::new()
        .get(format!("{}/sessions/{id}/events", rb.base))
        .send()
        .await
        .expect("GET /events on B");
    let mut text = String::new();
    while text.matches("event: epoch").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), events.chunk())
            .await
            .expect("B's stream went quiet")
            .expect("reading B's stream")
            .expect("B's stream ended early");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("event: state\n"), "{text}");

    // Cancelled from B: A stops at an epoch boundary, and both say so.
    let job = b.delete(&format!("/sessions/{id}/training")).await;
    let job = match job.status {
        200 => job.json(),
        _ => {
            job.expect(202);
            loop {
                let j = b.get(&format!("/sessions/{id}/training")).await.expect(200);
                if j["state"] == "done" {
                    break j;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(job["result"]["status"], "cancelled", "{job}");
    let n = job["result"]["epochs_run"].as_u64().unwrap();
    assert!(n > 0, "{job}");
    let on_a = a.get(&format!("/sessions/{id}/training")).await.expect(200);
    assert_eq!(on_a["result"], job["result"], "A and B disagree");
    let s = a.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(s["epochs_trained"].as_u64(), Some(n), "{s}");
    // B's stream ends with done.
    while let Ok(Some(chunk)) = events.chunk().await {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("event: done\n"), "B's stream: {text}");

    // A job on A, and A killed: B reports it interrupted with what A committed.
    a.post(
        &format!("/sessions/{id}/train"),
        &json!({"epochs": 500_000, "wait": false, "return_loss": false}),
    )
    .await
    .expect(202);
    let started = Instant::now();
    loop {
        let j = b.get(&format!("/sessions/{id}/training")).await.expect(200);
        if j["state"] == "running" && j["epochs_done"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    ra.kill9();
    let started = Instant::now();
    let job = loop {
        let j = b.get(&format!("/sessions/{id}/training")).await.expect(200);
        if j["state"] == "done" {
            break j;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "B never took the dead replica's job for dead: {j}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(job["result"]["status"], "interrupted", "{job}");
    let kept = job["result"]["epochs_run"].as_u64().unwrap();
    let s = b.get(&format!("/sessions/{id}")).await.expect(200);
    assert_eq!(s["epochs_trained"].as_u64(), Some(n + kept), "{s}");
    let r = b
        .post(&format!("/sessions/{id}/train"), &json!({"epochs": 2}))
        .await
        .expect(200);
    assert_eq!(r["epochs_trained"].as_u64(), Some(n + kept + 2), "{r}");
}
