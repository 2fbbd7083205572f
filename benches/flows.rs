//! Grade flows per second over HTTP, with each store, in one run (issue 10):
//!
//! ```sh
//! cargo bench --bench flows
//! ```
//!
//! A grade flow is what the course server does per submission: create the notebook's
//! session, put the built-in dataset, train 100 epochs, read the gradient, predict the six
//! samples, delete the session. A few clients (4, then 16) run flows back to back against
//! the release binary started with `--database memory`, then `sqlite:` (a fresh file, the
//! default store) and `postgres://` (a PostgreSQL this bench starts, as the tests do), in
//! interleaved rounds so all three see the same machine; the figures are medians and
//! ratios to `memory`. The goal: SQLite at least 50% of memory. Every write a flow makes
//! (four of its six requests) waits for an fsync before its answer, so the bench also
//! measures this disk's fsync latency meanwhile: it is the floor under each of them.
//!
//! Then the restart: 10,000 sessions stored in SQLite (each with the dataset and 100
//! epochs of history), the server killed (`kill -9`) and started again; the time from exec
//! to `/readyz` answering 200, and to the first session read back.
//!
//! `FLOWS_SECS` (default 3) sets each round's length, `FLOWS_ROUNDS` (default 3) the
//! rounds, `FLOWS_RESTART_SESSIONS` (default 10000) the sessions for the restart.

#[path = "../tests/support/client.rs"]
mod client;
#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/server.rs"]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backprop_server::Config;
use backprop_server::store::Location;
use serde_json::json;

use client::Client;
use postgres::PgServer;
use server::ServerProcess;

/// Concurrent clients, in turn: "a few", then a busier course server.
const CLIENTS: [usize; 2] = [4, 16];

/// Clients that fill the database for the restart.
const FILLERS: usize = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(database: Location) -> Config {
    Config {
        database,
        // The bench's clients share the machine: two workers, as on the course's 2-core box.
        workers: 2,
        ..Config::default()
    }
}

/// One grade flow; panics on any answer but the expected one.
async fn flow(c: &Client) {
    let id = c
        .create(&json!({"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 0}}))
        .await;
    let s = format!("/sessions/{id}");
    c.put(&format!("{s}/dataset"), &json!({"builtin": "cat-dog-ship"}))
        .await
        .expect(200);
    c.post(&format!("{s}/train"), &json!({"epochs": 100}))
        .await
        .expect(200);
    c.post(&format!("{s}/gradients"), &json!({}))
        .await
        .expect(200);
    let x = json!([
        [[56, 231], [24, 1]],
        [[120, 30], [24, 0]],
        [[20, 31], [240, 100]],
        [[56, 201], [22, -10]],
        [[140, 27], [30, 10]],
        [[25, 30], [230, 110]]
    ]);
    c.post(&format!("{s}/predict"), &json!({"x": x}))
        .await
        .expect(200);
    c.delete(&s).await.expect(204);
}

/// Flows per second with `clients` clients for `secs`.
async fn rate(base: &str, clients: usize, secs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (c, done, stop) = (Client::new(base), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    flow(&c).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a client");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn start(config: Config) -> ServerProcess {
    tokio::task::spawn_blocking(move || ServerProcess::start(&config))
        .await
        .expect("starting the server")
}

async fn until_ready(c: &Client) {
    loop {
        if let Ok(a) = c.try_call(reqwest::Method::GET, "/readyz", None).await
            && a.status == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn flows() {
    let secs = env_or("FLOWS_SECS", 3);
    let rounds = env_or("FLOWS_ROUNDS", 3);
    let pg = tokio::task::spawn_blocking(PgServer::start)
        .await
        .expect("starting PostgreSQL");
    let dir = tempfile::tempdir().expect("a directory for SQLite");
    let stores = [
        ("memory", Location::Memory),
        ("sqlite", Location::Sqlite(dir.path().join("flows.db"))),
        ("postgres", pg.fresh_database().await.parse().unwrap()),
    ];
    let servers = [
        start(config(stores[0].1.clone())).await,
        start(config(stores[1].1.clone())).await,
        start(config(stores[2].1.clone())).await,
    ];
    // Warm up each (connections, caches, the first pages of each database).
    for s in &servers {
        rate(&s.base, 4, 1).await;
    }
    let fsync = {
        let probe = dir.path().join("fsync.probe");
        tokio::task::spawn_blocking(move || fsync_ms(&probe))
    };
    let mut seen: [[Vec<f64>; 3]; CLIENTS.len()] = Default::default();
    for round in 0..rounds {
        for (c, &clients) in CLIENTS.iter().enumerate() {
            for (k, s) in servers.iter().enumerate() {
                let r = rate(&s.base, clients, secs).await;
                eprintln!(
                    "round {round}: {clients:>2} clients {:<8} {r:8.1} flows/s",
                    stores[k].0
                );
                seen[c][k].push(r);
            }
        }
    }
    let fsync = fsync.await.expect("the fsync probe");
    println!("\ngrade flows per second ({rounds} rounds of {secs} s, medians):");
    println!(
        "{:>8} {:<10} {:>10} {:>10}",
        "clients", "store", "flows/s", "vs memory"
    );
    for (c, clients) in CLIENTS.iter().enumerate() {
        let memory = median(seen[c][0].clone());
        for (k, (name, _)) in stores.iter().enumerate() {
            let m = median(seen[c][k].clone());
            println!(
                "{clients:>8} {name:<10} {m:>10.1} {:>9.0}%",
                100.0 * m / memory
            );
        }
    }
    println!(
        "fsync of a 4 KiB write on this disk meanwhile: median {:.2} ms, p90 {:.2} ms",
        fsync.0, fsync.1
    );
}

/// The median and 90th percentile of write-then-fdatasync of 4 KiB, in ms, sampled while
/// the rounds run (a commit waits for one of these).
fn fsync_ms(path: &std::path::Path) -> (f64, f64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).expect("the fsync probe file");
    let mut seen = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let t = Instant::now();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        f.sync_data().unwrap();
        seen.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(20));
    }
    seen.sort_by(f64::total_cmp);
    (seen[seen.len() / 2], seen[seen.len() * 9 / 10])
}

async fn restart() {
    let n = env_or("FLOWS_RESTART_SESSIONS", 10_000) as usize;
    let dir = tempfile::tempdir().expect("a directory for SQLite");
    let db = Location::Sqlite(dir.path().join("restart.db"));
    let mut server = start(config(db.clone())).await;
    let filled = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..FILLERS)
        .map(|_| {
            let (c, next) = (Client::new(&server.base), next.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while (next.fetch_add(1, Ordering::Relaxed) as usize) < n {
                    let id = c.create(&json!({"layers": [4, 3]})).await;
                    let s = format!("/sessions/{id}");
                    c.put(&format!("{s}/dataset"), &json!({"builtin": "cat-dog-ship"}))
                        .await
                        .expect(200);
                    c.post(
                        &format!("{s}/train"),
                        &json!({"epochs": 100, "return_loss": false}),
                    )
                    .await
                    .expect(200);
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("a filler"));
    }
    eprintln!("stored {} sessions in {:?}", ids.len(), filled.elapsed());
    server.kill9();
    let size: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();

    let t = Instant::now();
    let server = start(config(db)).await;
    let c = Client::new(&server.base);
    until_ready(&c).await;
    let ready = t.elapsed();
    let last = ids.last().expect("a session");
    let s = c.get(&format!("/sessions/{last}")).await.expect(200);
    assert_eq!(s["epochs_trained"], 100);
    let first_read = t.elapsed();
    let list = c.get("/sessions?limit=100").await.expect(200);
    assert_eq!(list["total"], n);
    let listed = t.elapsed();
    println!(
        "\nrestart with {n} sessions stored in SQLite ({:.1} MiB on disk), kill -9 then exec:",
        size as f64 / 1048576.0
    );
    println!(
        "  /readyz 200 after          {:>8.1} ms",
        ready.as_secs_f64() * 1e3
    );
    println!(
        "  first session read after   {:>8.1} ms",
        first_read.as_secs_f64() * 1e3
    );
    println!(
        "  first page of 100 after    {:>8.1} ms",
        listed.as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run only then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        flows().await;
        restart().await;
    });
}
