//! Keys (contract rev. 4, "Sharing one server safely"): the admin token makes user keys; a
//! user key sees and touches only the sessions it made (another's is the same 404 as one
//! that does not exist, and is left exactly as it was); the admin sees all. And the fair
//! shares: a key's session cap, its request rate, its share of the workers.

use std::time::{Duration, Instant};

use backprop_server::Config;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Auth, JSON, TestApp, config, problem_faults, spawn_app};

const ADMIN: &str = "admin-Token_9";

fn with_keys(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config {
        token: Some(ADMIN.into()),
        ..config()
    };
    f(&mut c);
    c
}

/// `POST /keys {"name"}` as the admin; the new key's secret.
async fn make_key(app: &TestApp, name: &str) -> String {
    let made = app
        .post("/keys", &json!({ "name": name }))
        .await
        .expect_json(201);
    assert_eq!(made["name"], name, "{made}");
    let key = made["key"].as_str().expect("a key string").to_owned();
    assert!(key.len() >= 32, "a key of {} characters: {key}", key.len());
    key
}

/// A client speaking with one key.
struct As<'a> {
    app: &'a TestApp,
    header: String,
}

impl<'a> As<'a> {
    fn new(app: &'a TestApp, key: &str) -> Self {
        Self {
            app,
            header: format!("Bearer {key}"),
        }
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> crate::helpers::Resp {
        let text = body.map(Value::to_string);
        self.app
            .send_as(
                Auth::Raw(&self.header),
                method,
                path,
                body.and(JSON),
                text.as_deref(),
            )
            .await
    }

    async fn create(&self) -> String {
        let s = self
            .send(
                Method::POST,
                "/sessions",
                Some(&json!({"layers": [4, 3], "init": {"seed": 1}})),
            )
            .await
            .expect_json(201);
        let id = s["id"].as_str().unwrap().to_owned();
        self.send(
            Method::PUT,
            &format!("/sessions/{id}/dataset"),
            Some(&json!({"builtin": "cat-dog-ship"})),
        )
        .await
        .expect(200);
        id
    }

    async fn listed(&self) -> (Vec<String>, u64) {
        let list = self
            .send(Method::GET, "/sessions", None)
            .await
            .expect_json(200);
        let ids = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        (ids, list["total"].as_u64().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sees_and_touches_only_its_own_sessions() {
    let app = spawn_app(with_keys(|_| ())).await;
    let alice_key = make_key(&app, "alice").await;
    let bob_key = make_key(&app, "bob.2_x-y").await;
    let (alice, bob) = (As::new(&app, &alice_key), As::new(&app, &bob_key));

    let a = alice.create().await;
    alice
        .send(
            Method::POST,
            &format!("/sessions/{a}/train"),
            Some(&json!({"epochs": 3})),
        )
        .await
        .expect(200);
    let b = bob.create().await;
    let before = app.snapshot(&a).await;
    let export = alice
        .send(Method::GET, &format!("/sessions/{a}/export"), None)
        .await
        .expect_json(200);
    let weights = alice
        .send(Method::GET, &format!("/sessions/{a}/weights"), None)
        .await
        .expect_json(200);

    // Every route that names a session: bob gets the 404 of a session that does not exist.
    let on = |p: &str| format!("/sessions/{a}{p}");
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, on(""), None),
        (Method::GET, on("/loss"), None),
        (Method::GET, on("/weights"), None),
        (Method::GET, on("/export"), None),
        (Method::GET, on("/loss.svg"), None),
        (Method::POST, on("/train"), Some(json!({"epochs": 1}))),
        (
            Method::POST,
            on("/train"),
            Some(json!({"epochs": 1, "wait": false})),
        ),
        (Method::GET, on("/training"), None),
        (Method::DELETE, on("/training"), None),
        (Method::GET, on("/events"), None),
        (Method::PUT, on("/weights"), Some(weights.clone())),
        (
            Method::PUT,
            on("/dataset"),
            Some(json!({"builtin": "cat-dog-ship"})),
        ),
        (
            Method::POST,
            on("/predict"),
            Some(json!({"x": [[1, 2, 3, 4]]})),
        ),
        (Method::POST, on("/gradients"), Some(json!({}))),
        (
            Method::POST,
            on("/check"),
            Some(json!({"weights": weights["weights"]})),
        ),
        (Method::POST, on("/gradcheck"), Some(json!({}))),
        (Method::POST, on("/trace"), Some(json!({}))),
        (Method::POST, on("/fork"), None),
        (Method::DELETE, on(""), None),
    ];
    let unknown = "00000000-0000-4000-8000-000000000000";
    let mut failures = Vec::new();
    for (method, path, body) in &routes {
        let theirs = bob.send(method.clone(), path, body.as_ref()).await;
        let missing = bob
            .send(method.clone(), &path.replace(&a, unknown), body.as_ref())
            .await;
        let mut faults = problem_faults(&theirs, 404, "not_found");
        // Existence is not leaked: the same answer as for an id nobody has.
        let detail = |r: &crate::helpers::Resp| {
            r.json()["detail"]
                .as_str()
                .unwrap_or("")
                .replace(&a, "ID")
                .replace(unknown, "ID")
        };
        if missing.status != theirs.status || detail(&missing) != detail(&theirs) {
            faults.push(format!(
                "differs from an unknown id's answer: {} {} vs {} {}",
                theirs.status, theirs.body, missing.status, missing.body
            ));
        }
        if !faults.is_empty() {
            failures.push(format!("{}: {}", theirs.request, faults.join("; ")));
        }
    }
    failures.extend(app.snapshot(&a).await.changes_since(&before));
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Lists: each key its own; the admin all.
    assert_eq!(alice.listed().await, (vec![a.clone()], 1));
    assert_eq!(bob.listed().await, (vec![b.clone()], 1));
    let (all, total) = As::new(&app, ADMIN).listed().await;
    assert_eq!(total, 2);
    assert!(all.contains(&a) && all.contains(&b), "{all:?}");

    // Import and fork make sessions their caller owns.
    let imported = bob
        .send(Method::POST, "/sessions/import", Some(&export))
        .await
        .expect_json(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let forked = alice
        .send(Method::POST, &format!("/sessions/{a}/fork"), None)
        .await
        .expect_json(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .send(Method::GET, &format!("/sessions/{imported}"), None)
        .await
        .expect(404);
    bob.send(Method::GET, &format!("/sessions/{forked}"), None)
        .await
        .expect(404);
    bob.send(
        Method::POST,
        &format!("/sessions/{imported}/train"),
        Some(&json!({"epochs": 1})),
    )
    .await
    .expect(200);
    assert_eq!(bob.listed().await.1, 2);
    assert_eq!(alice.listed().await.1, 2);

    // The admin reaches every session, and lists the keys with their session counts.
    app.get(&format!("/sessions/{imported}")).await.expect(200);
    let keys = app.get("/keys").await.expect_json(200);
    let counts: Vec<(String, u64)> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_owned(),
                k["sessions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(counts.contains(&("alice".into(), 2)), "{keys}");
    assert!(counts.contains(&("bob.2_x-y".into(), 2)), "{keys}");
    assert!(
        !keys.to_string().contains(&alice_key),
        "GET /keys shows a secret: {keys}"
    );

    // Deleting: the owner may, another key may not.
    bob.send(Method::DELETE, &format!("/sessions/{forked}"), None)
        .await
        .expect(404);
    alice
        .send(Method::DELETE, &format!("/sessions/{forked}"), None)
        .await
        .expect(204);

    // Revoked: bob's key is refused; his sessions stay (the admin sees them).
    app.delete("/keys/bob.2_x-y").await.expect(204);
    let refused = bob.send(Method::GET, "/sessions", None).await;
    assert!(
        problem_faults(&refused, 401, "unauthorized").is_empty(),
        "{}",
        refused.body
    );
    app.get(&format!("/sessions/{b}")).await.expect(200);
    app.delete("/keys/bob.2_x-y").await.expect(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_the_admins_to_manage() {
    let app = spawn_app(with_keys(|_| ())).await;
    let alice = make_key(&app, "alice").await;
    let taken = app.post("/keys", &json!({"name": "alice"})).await;
    assert!(
        problem_faults(&taken, 409, "conflict").is_empty(),
        "{}",
        taken.body
    );
    for bad in [
        json!({"name": ""}),
        json!({"name": "a b"}),
        json!({"name": "x".repeat(65)}),
    ] {
        let r = app.post("/keys", &bad).await;
        assert!(
            problem_faults(&r, 422, "invalid_value").is_empty(),
            "{bad}: {}",
            r.body
        );
    }
    for bad in [
        json!({}),
        json!({"name": 3}),
        json!({"name": "a", "nme": "b"}),
    ] {
        app.post("/keys", &bad).await.expect(400);
    }
    let header = format!("Bearer {alice}");
    for (method, path, body) in [
        (Method::GET, "/keys", None),
        (Method::POST, "/keys", Some(r#"{"name": "mallory"}"#)),
        (Method::DELETE, "/keys/alice", None),
    ] {
        let r = app
            .send_as(Auth::Raw(&header), method, path, body.and(JSON), body)
            .await;
        assert!(
            problem_faults(&r, 401, "unauthorized").is_empty(),
            "{}: {}",
            r.request,
            r.body
        );
    }
    // A key that was never made, or one letter off, is 401.
    let off = format!("Bearer {}x", &alice[..alice.len() - 1]);
    let r = app
        .send_as(Auth::Raw(&off), Method::GET, "/sessions", None, None)
        .await;
    assert!(
        problem_faults(&r, 401, "unauthorized").is_empty(),
        "{}",
        r.body
    );

    // Without --token there are no keys: 404, saying how to turn them on.
    let open = spawn_app(config()).await;
    let r = open.get("/keys").await;
    assert!(
        problem_faults(&r, 404, "not_found").is_empty(),
        "{}",
        r.body
    );
    assert!(r.body.contains("--token"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_session_cap_and_request_rate() {
    let app = spawn_app(with_keys(|c| {
        c.max_sessions_per_key = 2;
        c.rate_limit_per_key = 3;
    }))
    .await;
    let alice = As::new(&app, &make_key(&app, "alice").await);
    let bob = As::new(&app, &make_key(&app, "bob").await);
    let body = json!({"layers": [2, 2]});
    let mut made = Vec::new();
    for _ in 0..2 {
        let s = alice
            .send(Method::POST, "/sessions", Some(&body))
            .await
            .expect_json(201);
        made.push(s["id"].as_str().unwrap().to_owned());
    }
    let third = alice.send(Method::POST, "/sessions", Some(&body)).await;
    assert!(
        problem_faults(&third, 429, "too_many_sessions").is_empty(),
        "{}",
        third.body
    );
    assert!(
        third.body.contains("--max-sessions-per-key"),
        "{}",
        third.body
    );
    // Another key, and the admin, are not held by alice's cap.
    bob.send(Method::POST, "/sessions", Some(&body))
        .await
        .expect(201);
    app.post("/sessions", &body).await.expect(201);

    // Rate: 3 a second with bursts of 6. Alice has spent 3 already; a quick loop runs out.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut limited = None;
    for _ in 0..12 {
        let r = alice.send(Method::GET, "/sessions", None).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.expect(200);
    }
    let limited = limited.expect("12 quick requests at 3 a second (bursts of 6) were all served");
    assert!(
        problem_faults(&limited, 429, "rate_limited").is_empty(),
        "{}",
        limited.body
    );
    let wait: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {:?}", limited.headers));
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Others are not: bob, the admin and /healthz answer at once.
    bob.send(Method::GET, "/sessions", None).await.expect(200);
    for _ in 0..10 {
        app.get("/sessions").await.expect(200);
        alice.send(Method::GET, "/healthz", None).await.expect(200);
    }
    // And after the wait alice is served again; a refused request changed nothing.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    alice
        .send(Method::DELETE, &format!("/sessions/{}", made[0]), None)
        .await
        .expect(204);
    alice
        .send(Method::POST, "/sessions", Some(&body))
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_queue_does_not_starve_another_key() {
    // Two workers, one per key: alice's two long trains run one after the other, and bob's
    // request takes the other worker at once instead of waiting behind them.
    let app = spawn_app(with_keys(|c| {
        c.workers = 2;
        c.max_workers_per_key = Some(1);
        c.train_time_limit_secs = 1.5;
    }))
    .await;
    let alice_key = make_key(&app, "alice").await;
    let bob_key = make_key(&app, "bob").await;
    let alice = As::new(&app, &alice_key);
    let bob = As::new(&app, &bob_key);
    let (a1, a2, b) = (
        alice.create().await,
        alice.create().await,
        bob.create().await,
    );
    let started = Instant::now();
    let long = |id: String| {
        let app = app.clone();
        let key = alice_key.clone();
        tokio::spawn(async move {
            As::new(&app, &key)
                .send(
                    Method::POST,
                    &format!("/sessions/{id}/train"),
                    Some(&json!({"epochs": 1_000_000, "return_loss": false})),
                )
                .await
                .expect_json(200);
            started.elapsed()
        })
    };
    let first = long(a1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = long(a2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.send(
        Method::POST,
        &format!("/sessions/{b}/train"),
        Some(&json!({"epochs": 5})),
    )
    .await
    .expect(200);
    let bob_done = started.elapsed();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert!(
        bob_done < first,
        "bob's 5 epochs ended at {bob_done:?}, after alice's first train ({first:?}): it waited \
         behind alice's queue"
    );
    assert!(
        second >= first + Duration::from_millis(1000),
        "alice's second train ({second:?}) ran beside her first ({first:?}) past her share of 1"
    );
}
