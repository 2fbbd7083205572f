//! Durability (issue 10): the real binary on SQLite (the default store), `kill -9` at random
//! moments under mixed traffic, a restart on the same file, and every acknowledged change
//! back bit for bit; nothing half-written; a database it must not touch refused at start.
//!
//! How the expected state is known: every change the server under test acknowledges is
//! applied, in the same order, to a mirror session on a second server that never dies
//! (`--database memory`). Training is deterministic, so after a restart each session's
//! export (settings, weights, dataset, history, `initial_loss`) must equal its mirror's,
//! byte for byte. A change that was in flight at the kill may be there or not, but wholly:
//! the export must equal the mirror's either before it or after it (computed on a fork of
//! the mirror). The TTL clock is checked against what the client saw and when it asked.

#[path = "support/client.rs"]
mod client;
#[path = "support/server.rs"]
mod server;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backprop_server::Config;
use backprop_server::store::Location;
use reqwest::Method;
use serde_json::{Value, json};

use client::{Answer, Client};
use server::ServerProcess;

const ROUNDS: usize = 5;
const CLIENTS: usize = 4;
/// Sessions one client keeps at most (so the listing stays one page).
const LIVE_PER_CLIENT: usize = 6;
const TTL: i64 = 3600;

/// A small xorshift generator: the test's randomness, replayable from its printed seed.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The server's TTL clock second for a use at `ms`: rounded up.
fn second(ms: i64) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

/// Unix seconds of `2026-11-27T10:00:00Z`.
fn unix(text: &str) -> i64 {
    use time::{Date, Month, PrimitiveDateTime, Time};
    let num = |r: std::ops::Range<usize>| text[r].parse::<u16>().expect("a timestamp");
    let date = Date::from_calendar_date(
        i32::from(num(0..4)),
        Month::try_from(num(5..7) as u8).unwrap(),
        num(8..10) as u8,
    )
    .unwrap();
    let t = Time::from_hms(num(11..13) as u8, num(14..16) as u8, num(17..19) as u8).unwrap();
    PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp()
}

/// A session the test created, and what it knows of its TTL clock: `expires_at` lies in
/// `low..=high` (exact when the server last reported it and nothing touched it since).
#[derive(Clone, Debug)]
struct Tracked {
    sid: String,
    /// Its mirror on the reference server.
    rid: String,
    layers: Vec<usize>,
    bias: bool,
    created_at: String,
    low: i64,
    high: i64,
}

impl Tracked {
    /// A request that reached the server between `sent` and `answered` (ms) touched it.
    fn used(&mut self, sent: i64, answered: i64) {
        self.low = self.low.max(second(sent) + TTL);
        self.high = self.high.max(second(answered) + TTL);
    }
    fn seen(&mut self, session: &Value) {
        if let Some(at) = session["expires_at"].as_str() {
            let at = unix(at);
            self.low = at;
            self.high = at;
        }
    }
}

/// A change: what it sends (the same to both servers).
#[derive(Clone, Debug)]
enum Change {
    Create(Value),
    Dataset(Value),
    Train(Value),
    Weights(Value),
    Delete,
}

impl Change {
    fn request(&self, id: &str) -> (Method, String, Option<Value>) {
        match self {
            Self::Create(b) => (Method::POST, "/sessions".into(), Some(b.clone())),
            Self::Dataset(b) => (
                Method::PUT,
                format!("/sessions/{id}/dataset"),
                Some(b.clone()),
            ),
            Self::Train(b) => (
                Method::POST,
                format!("/sessions/{id}/train"),
                Some(b.clone()),
            ),
            Self::Weights(b) => (
                Method::PUT,
                format!("/sessions/{id}/weights"),
                Some(b.clone()),
            ),
            Self::Delete => (Method::DELETE, format!("/sessions/{id}"), None),
        }
    }
}

/// A change in flight when the server died: on `sid` (None for a create).
#[derive(Clone, Debug)]
struct Pending {
    sid: Option<String>,
    change: Change,
}

fn random_create(rng: &mut Rng) -> Value {
    let layers = rng.pick(&[
        json!([4, 3]),
        json!([4, 4, 3]),
        json!([3, 5, 2]),
        json!([16, 32, 4]),
        json!([2, 2]),
    ]);
    let init = match rng.below(3) {
        0 => json!({"method": "numpy_rand", "seed": rng.below(1 << 32)}),
        1 => json!({"method": "xavier", "seed": rng.below(100)}),
        _ => json!({"method": "he", "seed": rng.below(100)}),
    };
    json!({"layers": layers, "bias": rng.below(2) == 0, "init": init,
           "learning_rate": rng.pick(&[0.0001, 0.01, 0.1]),
           "grad_reduction": rng.pick(&["sum", "mean"])})
}

fn random_dataset(rng: &mut Rng, t: &Tracked) -> Value {
    let (n_in, n_out) = (t.layers[0], t.layers[t.layers.len() - 1]);
    if (n_in, n_out) == (4, 3) && rng.below(2) == 0 {
        return json!({"builtin": "cat-dog-ship"});
    }
    let m = 1 + rng.below(if n_in == 16 { 200 } else { 40 }) as usize;
    let x: Vec<Vec<f64>> = (0..m)
        .map(|_| (0..n_in).map(|_| rng.unit() * 4.0 - 2.0).collect())
        .collect();
    let y = if rng.below(2) == 0 {
        json!((0..m).map(|_| rng.below(n_out as u64)).collect::<Vec<_>>())
    } else {
        json!(
            (0..m)
                .map(|_| {
                    let hot = rng.below(n_out as u64) as usize;
                    (0..n_out)
                        .map(|i| {
                            if i == hot {
                                0.75
                            } else {
                                0.25 / (n_out - 1) as f64
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        )
    };
    json!({"x": x, "y": y})
}

fn random_weights(rng: &mut Rng, t: &Tracked) -> Value {
    let weights: Vec<Vec<Vec<f64>>> = t
        .layers
        .windows(2)
        .map(|w| {
            (0..w[1])
                .map(|_| (0..w[0]).map(|_| rng.unit() - 0.5).collect())
                .collect()
        })
        .collect();
    if t.bias && rng.below(2) == 0 {
        let biases: Vec<Vec<f64>> = t.layers[1..]
            .iter()
            .map(|&o| (0..o).map(|_| rng.unit() * 0.1).collect())
            .collect();
        json!({"weights": weights, "biases": biases})
    } else {
        json!({"weights": weights})
    }
}

/// One client's traffic on its own sessions until the server dies; its sessions after,
/// and the change it had in flight.
async fn client(
    s: Client,
    r: Client,
    mut mine: Vec<Tracked>,
    mut rng: Rng,
) -> (Vec<Tracked>, Option<Pending>) {
    loop {
        let roll = rng.below(100);
        if mine.is_empty() || (roll < 12 && mine.len() < LIVE_PER_CLIENT) {
            let body = random_create(&mut rng);
            let sent = now_ms();
            let Ok(a) = s.try_call(Method::POST, "/sessions", Some(&body)).await else {
                let p = Pending {
                    sid: None,
                    change: Change::Create(body),
                };
                return (mine, Some(p));
            };
            let created = a.expect(201);
            let mirror = r.post("/sessions", &body).await.expect(201);
            assert_eq!(summary(&created), summary(&mirror), "create {body}");
            let mut t = Tracked {
                sid: created["id"].as_str().unwrap().into(),
                rid: mirror["id"].as_str().unwrap().into(),
                layers: serde_json::from_value(body["layers"].clone()).unwrap(),
                bias: body["bias"] == true,
                created_at: created["created_at"].as_str().unwrap().into(),
                low: 0,
                high: 0,
            };
            t.seen(&created);
            t.used(sent, now_ms());
            t.seen(&created);
            mine.push(t);
            continue;
        }
        let k = rng.below(mine.len() as u64) as usize;
        let change = match roll {
            0..=29 => Some(Change::Train(json!({
                "epochs": if mine[k].layers[0] == 16 { 1 + rng.below(300) } else { 1 + rng.below(40) },
                "return_loss": rng.below(2) == 0,
            }))),
            30..=49 => Some(Change::Dataset(random_dataset(&mut rng, &mine[k]))),
            50..=59 => Some(Change::Weights(random_weights(&mut rng, &mine[k]))),
            60..=65 => Some(Change::Delete),
            _ => None,
        };
        let sid = mine[k].sid.clone();
        let sent = now_ms();
        let Some(change) = change else {
            // A read: it touches the clock, and GET /sessions/{id} reports it.
            let path = rng.pick(&["", "/weights", "/loss", "/export"]);
            let Ok(a) = s
                .try_call(Method::GET, &format!("/sessions/{sid}{path}"), None)
                .await
            else {
                // A read that may or may not have touched the clock: only the upper bound moves.
                mine[k].high = mine[k].high.max(second(now_ms()) + TTL);
                return (mine, None);
            };
            mine[k].used(sent, now_ms());
            let body = a.expect(200);
            if path.is_empty() {
                mine[k].seen(&body);
            }
            continue;
        };
        let (method, path, body) = change.request(&sid);
        let Ok(a) = s.try_call(method.clone(), &path, body.as_ref()).await else {
            mine[k].high = mine[k].high.max(second(now_ms()) + TTL);
            let p = Pending {
                sid: Some(sid),
                change,
            };
            return (mine, Some(p));
        };
        mine[k].used(sent, now_ms());
        let (_, rpath, _) = change.request(&mine[k].rid);
        let m = r.call(method, &rpath, body.as_ref()).await;
        assert_eq!(
            (a.status, a.body.replace(&sid, &mine[k].rid)),
            (m.status, m.body),
            "{change:?} on {sid}: the server under test and the reference disagree"
        );
        if matches!(change, Change::Delete) && a.status == 204 {
            mine.remove(k);
        }
    }
}

/// The session resource without what differs between two servers.
fn summary(s: &Value) -> Value {
    let mut s = s.clone();
    if let Some(o) = s.as_object_mut() {
        for k in ["id", "created_at", "expires_at"] {
            o.remove(k);
        }
    }
    s
}

async fn export(c: &Client, id: &str) -> String {
    let a = c.get(&format!("/sessions/{id}/export")).await;
    a.expect(200);
    a.body
}

/// Every session the server lists, by id (this touches none).
async fn listed(s: &Client) -> HashMap<String, Value> {
    let list = s.get("/sessions?limit=1000").await.expect(200);
    list["sessions"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| (v["id"].as_str().unwrap().to_owned(), v.clone()))
        .collect()
}

/// The mirror's state with `change` applied, on a fork (deleted after): its export.
async fn mirror_after(r: &Client, rid: &str, change: &Change) -> Option<String> {
    let a = r
        .call(Method::POST, &format!("/sessions/{rid}/fork"), None)
        .await;
    let fork = a.expect(201)["id"].as_str().unwrap().to_owned();
    let (method, path, body) = change.request(&fork);
    let a = r.call(method, &path, body.as_ref()).await;
    let after = (a.status < 300).then_some(());
    let doc = export(r, &fork).await;
    r.delete(&format!("/sessions/{fork}")).await;
    after.map(|()| doc)
}

/// After a restart: every acknowledged session is back, bit for bit and with its clock; each
/// change in flight at the kill is wholly there or wholly absent; nothing else is there.
async fn verify(
    s: &Client,
    r: &Client,
    world: &mut [Vec<Tracked>],
    pending: Vec<(usize, Pending)>,
) {
    let mut on_server = listed(s).await;
    // A delete in flight at the kill may have taken its session: that is checked below.
    let maybe_deleted: HashSet<String> = pending
        .iter()
        .filter(|(_, p)| matches!(p.change, Change::Delete))
        .filter_map(|(_, p)| p.sid.clone())
        .collect();
    let mut checked = 0;
    // Changes in flight found applied, and found not applied.
    let (mut applied, mut absent) = (0, 0);
    for mine in world.iter() {
        for t in mine {
            let Some(got) = on_server.get(&t.sid) else {
                assert!(
                    maybe_deleted.contains(&t.sid),
                    "the acknowledged session {} is gone after the restart",
                    t.sid
                );
                continue;
            };
            assert_eq!(
                got["created_at"],
                t.created_at.as_str(),
                "created_at of {}",
                t.sid
            );
            let at = unix(got["expires_at"].as_str().expect("expires_at"));
            assert!(
                (t.low..=t.high).contains(&at),
                "session {}: expires_at {} after the restart; the client's requests put it in \
                 {}..={}",
                t.sid,
                got["expires_at"],
                t.low,
                t.high
            );
        }
    }
    // Changes in flight: before or after, wholly.
    let mut adopted: HashSet<String> = HashSet::new();
    for (owner, p) in pending {
        match (&p.sid, &p.change) {
            (None, Change::Create(body)) => {
                let mirror = r.post("/sessions", body).await.expect(201);
                let rid = mirror["id"].as_str().unwrap().to_owned();
                let want = export(r, &rid).await;
                let unknown: Vec<String> = on_server
                    .keys()
                    .filter(|id| {
                        !adopted.contains(*id) && !world.iter().flatten().any(|t| &t.sid == *id)
                    })
                    .cloned()
                    .collect();
                let mut found = None;
                for id in unknown {
                    if summary(&on_server[&id]) == summary(&mirror) && export(s, &id).await == want
                    {
                        found = Some(id);
                        break;
                    }
                }
                match found {
                    Some(sid) => {
                        let v = &on_server[&sid];
                        let mut t = Tracked {
                            sid: sid.clone(),
                            rid,
                            layers: serde_json::from_value(body["layers"].clone()).unwrap(),
                            bias: body["bias"] == true,
                            created_at: v["created_at"].as_str().unwrap().into(),
                            low: 0,
                            high: 0,
                        };
                        t.seen(v);
                        adopted.insert(sid);
                        world[owner].push(t);
                        applied += 1;
                    }
                    None => {
                        r.delete(&format!("/sessions/{rid}")).await.expect(204);
                        absent += 1;
                    }
                }
            }
            (Some(sid), change) => {
                let k = world[owner]
                    .iter()
                    .position(|t| &t.sid == sid)
                    .expect("a pending change on a tracked session");
                let rid = world[owner][k].rid.clone();
                let before = export(r, &rid).await;
                if !on_server.contains_key(sid) {
                    assert!(
                        matches!(change, Change::Delete),
                        "session {sid} is gone, but the change in flight was {change:?}"
                    );
                    world[owner].remove(k);
                    r.delete(&format!("/sessions/{rid}")).await.expect(204);
                    applied += 1;
                    continue;
                }
                let now = export(s, sid).await;
                if now == before {
                    absent += 1;
                    continue;
                }
                applied += 1;
                let after = mirror_after(r, &rid, change).await;
                assert_eq!(
                    Some(&now),
                    after.as_ref(),
                    "session {sid} after the restart is neither as it was before {change:?} \
                     nor as that change leaves it"
                );
                let (method, path, body) = change.request(&rid);
                r.call(method, &path, body.as_ref()).await;
            }
            (None, other) => panic!("a pending {other:?} without a session"),
        }
    }
    // Every tracked session: the same bytes as its mirror.
    for t in world.iter().flatten() {
        let (got, want) = (export(s, &t.sid).await, export(r, &t.rid).await);
        assert_eq!(
            got, want,
            "session {} differs from its mirror after the restart",
            t.sid
        );
        let now = s.get(&format!("/sessions/{}", t.sid)).await.expect(200);
        let mirror = r.get(&format!("/sessions/{}", t.rid)).await.expect(200);
        assert_eq!(summary(&now), summary(&mirror), "session {}", t.sid);
        on_server.remove(&t.sid);
        checked += 1;
    }
    assert!(
        on_server.is_empty(),
        "sessions nobody acknowledged appeared after the restart: {:?}",
        on_server.keys().collect::<Vec<_>>()
    );
    // The checks touched every session: their clocks are what the list now says.
    let after = listed(s).await;
    for t in world.iter_mut().flatten() {
        t.seen(&after[&t.sid]);
    }
    eprintln!(
        "verified {checked} sessions after the restart; of the changes in flight at the \
         kill, {applied} were there whole and {absent} wholly absent"
    );
}

fn sqlite_config(path: &Path) -> Config {
    Config {
        workers: 2,
        session_ttl_secs: TTL as u64,
        database: Location::Sqlite(path.to_path_buf()),
        ..Config::default()
    }
}

async fn start(config: Config) -> ServerProcess {
    tokio::task::spawn_blocking(move || ServerProcess::start(&config))
        .await
        .expect("starting the server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_kill_9_at_random_moments() {
    let seed = std::env::var("DURABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (now_ms() as u64) | 1);
    eprintln!("durability seed {seed} (DURABILITY_SEED={seed} replays the draws)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("a directory for the database");
    let db = dir.path().join("backprop.db");
    let reference = start(Config {
        workers: 2,
        session_ttl_secs: 0,
        database: Location::Memory,
        ..Config::default()
    })
    .await;
    let r = Client::new(&reference.base);
    let mut world: Vec<Vec<Tracked>> = vec![Vec::new(); CLIENTS];
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    for round in 0..=ROUNDS {
        let mut server = start(sqlite_config(&db)).await;
        let s = Client::new(&server.base);
        verify(&s, &r, &mut world, std::mem::take(&mut pending)).await;
        if round == ROUNDS {
            break;
        }
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let (s, r, mine) = (s.clone(), r.clone(), std::mem::take(&mut world[k]));
                tokio::spawn(client(s, r, mine, Rng(rng.next() | 1)))
            })
            .collect();
        let kill_after = Duration::from_millis(150 + rng.below(1200));
        tokio::time::sleep(kill_after).await;
        server.kill9();
        for (k, t) in tasks.into_iter().enumerate() {
            let (mine, p) = t.await.expect("a client");
            world[k] = mine;
            pending.extend(p.map(|p| (k, p)));
        }
        let live: usize = world.iter().map(Vec::len).sum();
        eprintln!(
            "round {round}: killed after {kill_after:?}; {live} sessions acknowledged, {} changes in flight",
            pending.len()
        );
    }
}

/// `kill -9` right after an answer: that answer's `expires_at` comes back exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_clock_comes_back_exactly_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clock.db");
    let mut server = start(sqlite_config(&db)).await;
    let s = Client::new(&server.base);
    let id = s.create(&json!({"layers": [4, 3]})).await;
    // Into the next second, so this read moves the clock (and writes it) before answering.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seen = s.get(&format!("/sessions/{id}")).await.expect(200);
    server.kill9();
    let server = start(sqlite_config(&db)).await;
    let s = Client::new(&server.base);
    let back = &listed(&s).await[&id];
    assert_eq!(back["expires_at"], seen["expires_at"], "{back}");
    assert_eq!(back["created_at"], seen["created_at"], "{back}");
}

/// Runs the binary on `database` and expects it to refuse to start: its exit status and
/// what it printed.
fn refused(database: &str, dir: &Path) -> String {
    let mut child = Command::new(server::binary())
        .args(["--addr=127.0.0.1:0", &format!("--database={database}")])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the binary");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the server did not refuse --database={database}: it is still running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let words = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !status.success(),
        "--database={database}: exit {status}, said {words}"
    );
    words
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_it_must_not_touch_is_refused_at_start_with_what_to_do() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    // A database a newer version wrote: a migration this binary does not know.
    let newer = path("newer.db");
    {
        let mut server = start(sqlite_config(&newer)).await;
        let s = Client::new(&server.base);
        s.create(&json!({"layers": [4, 3]})).await;
        server.kill9();
        let url = format!("sqlite:{}", newer.display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, \
             checksum, execution_time) VALUES (99990101000000, 'from the future', \
             '2099-01-01', 1, x'00', 1)",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    }
    let before = std::fs::read(&newer).unwrap();
    let d = dir.path().to_path_buf();
    let words = tokio::task::spawn_blocking(move || {
        refused(&format!("sqlite:{}", d.join("newer.db").display()), &d)
    })
    .await
    .unwrap();
    assert!(
        words.contains("newer") && words.contains("newer.db") && words.contains("99990101000000"),
        "a database from a newer version: {words}"
    );
    assert_eq!(
        std::fs::read(&newer).unwrap(),
        before,
        "the refused database was changed"
    );

    // A file that is not SQLite at all.
    std::fs::write(path("notes.txt"), "grades, not a database\n").unwrap();
    // A SQLite database of some other program.
    {
        let url = format!("sqlite:{}?mode=rwc", path("other.db").display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE grades (student TEXT, score REAL)")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }
    for (file, want) in [
        ("notes.txt", "not a SQLite database"),
        ("other.db", "not backprop-server's"),
    ] {
        let before = std::fs::read(path(file)).unwrap();
        let d = dir.path().to_path_buf();
        let words = tokio::task::spawn_blocking(move || refused(&format!("sqlite:{file}"), &d))
            .await
            .unwrap();
        assert!(
            words.contains(want) && words.contains(file),
            "{file}: {words}"
        );
        assert_eq!(
            std::fs::read(path(file)).unwrap(),
            before,
            "{file} was changed"
        );
    }

    // A file another server holds.
    let held = path("held.db");
    let _holder = start(sqlite_config(&held)).await;
    let d = dir.path().to_path_buf();
    let words = tokio::task::spawn_blocking(move || refused("sqlite:held.db", &d))
        .await
        .unwrap();
    assert!(
        words.contains("in use by another backprop-server"),
        "{words}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_when_the_store_answers_and_needs_no_token() {
    let dir = tempfile::tempdir().unwrap();
    for database in [
        Location::Sqlite(dir.path().join("ready.db")),
        Location::Memory,
    ] {
        let server = start(Config {
            token: Some("s3cret".into()),
            database: database.clone(),
            ..Config::default()
        })
        .await;
        let s = Client::new(&server.base);
        let a: Answer = s.get("/readyz").await;
        assert_eq!(a.expect(200), json!({"status": "ready"}), "{database}");
        s.get("/sessions").await.expect_problem(401, "unauthorized");
    }
}
