//! `GET /metrics` in Prometheus' text format: requests by route template (never by id) and
//! status, latency histograms, epochs trained, trainings running and queued, sessions held,
//! and the series other parts feed; behind the token when there is one; and the request log,
//! one line per request at `info`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backprop_server::Config;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Auth, TestApp, assert_problem, config, slow_session, spawn_app};

/// A scrape: each series (`name{labels}`, labels as the server wrote them) and its value.
struct Scrape(BTreeMap<String, f64>);

async fn scrape(app: &TestApp) -> Scrape {
    let resp = app.get("/metrics").await;
    resp.expect(200);
    assert!(
        resp.content_type().starts_with("text/plain; version=0.0.4"),
        "{:?}",
        resp.content_type()
    );
    let mut series = BTreeMap::new();
    for line in resp.body.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        series.insert(key.to_string(), value);
    }
    Scrape(series)
}

impl Scrape {
    fn get(&self, key: &str) -> f64 {
        *self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("no series {key}; the series are {:#?}", self.0.keys()))
    }

    fn requests(&self, method: &str, route: &str, status: u16) -> f64 {
        self.0
            .get(&format!(
                "backprop_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
    }

    /// A latency histogram's buckets (upper bound, cumulative count) and its count.
    fn latency(&self, method: &str, route: &str) -> (Vec<(f64, f64)>, f64) {
        let labels = format!("method=\"{method}\",route=\"{route}\"");
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix("backprop_http_request_duration_seconds_bucket{")?;
                let le = rest.strip_prefix(&format!("{labels},le=\""))?;
                let le = le.strip_suffix("\"}")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = self.get(&format!(
            "backprop_http_request_duration_seconds_count{{{labels}}}"
        ));
        (buckets, count)
    }
}

#[tokio::test]
async fn requests_are_counted_and_timed_by_route_template_and_status() {
    let app = spawn_app(config()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (id, _) = app
            .create_session(&json!({"layers": [4, 3], "init": {"seed": 0}}))
            .await;
        app.put_builtin(&id, "cat-dog-ship").await;
        app.train(&id, 25).await;
        app.post(
            &format!("/sessions/{id}/predict"),
            &json!({"x": [[1, 2, 3, 4]]}),
        )
        .await
        .expect(200);
        ids.push(id);
    }
    app.post(
        &format!("/sessions/{}/train", ids[0]),
        &json!({"epochs": 0}),
    )
    .await
    .expect(422);
    app.get("/no/such/route").await.expect(404);
    app.send(Method::PATCH, &format!("/sessions/{}", ids[1]), None, None)
        .await
        .expect(405);
    app.delete(&format!("/sessions/{}", ids[2]))
        .await
        .expect(204);

    let m = scrape(&app).await;
    for (method, route, status, n) in [
        ("POST", "/sessions", 201, 3.0),
        ("PUT", "/sessions/{id}/dataset", 200, 3.0),
        ("POST", "/sessions/{id}/train", 200, 3.0),
        ("POST", "/sessions/{id}/train", 422, 1.0),
        ("POST", "/sessions/{id}/predict", 200, 3.0),
        ("GET", "unmatched", 404, 1.0),
        ("PATCH", "/sessions/{id}", 405, 1.0),
        ("DELETE", "/sessions/{id}", 204, 1.0),
    ] {
        assert_eq!(
            m.requests(method, route, status),
            n,
            "{method} {route} {status}"
        );
    }
    // Ids never become labels: the set of series does not grow with the sessions.
    for key in m.0.keys() {
        for id in &ids {
            assert!(!key.contains(id.as_str()), "a session id in {key}");
        }
    }
    // The latency histogram: cumulative buckets ending at +Inf with every request.
    let (buckets, count) = m.latency("POST", "/sessions/{id}/predict");
    assert_eq!(count, 3.0);
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 3.0)));
    assert!(
        buckets[0].0 <= 0.001,
        "no bucket for sub-millisecond answers"
    );

    // Training and the store.
    assert_eq!(m.get("backprop_epochs_trained_total"), 75.0);
    assert_eq!(m.get("backprop_sessions"), 2.0);
    assert_eq!(m.get("backprop_trainings_running"), 0.0);
    assert_eq!(m.get("backprop_trainings_queued"), 0.0);
    // Registered now, fed later by the memory admission and the durable store.
    assert_eq!(m.get("backprop_memory_budget_used_bytes"), 0.0);
    assert_eq!(m.get("backprop_database_query_duration_seconds_count"), 0.0);
    // The scrape counted itself, in the next scrape.
    let again = scrape(&app).await;
    assert_eq!(again.requests("GET", "/metrics", 200), 1.0);
}

#[tokio::test]
async fn trainings_running_and_queued_follow_the_trains() {
    // Each train stops at its 1.5 s time limit; two on one session run one after the other.
    let app = spawn_app(Config {
        train_time_limit_secs: 1.5,
        ..config()
    })
    .await;
    let id = slow_session(&app).await;
    let trains: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            let id = id.clone();
            tokio::spawn(async move {
                app.post(
                    &format!("/sessions/{id}/train"),
                    &json!({"epochs": 400_000, "return_loss": false}),
                )
                .await
                .expect_json(200)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = (0.0, 0.0);
    while Instant::now() < deadline {
        let m = scrape(&app).await;
        let now = (
            m.get("backprop_trainings_running"),
            m.get("backprop_trainings_queued"),
        );
        // Both may count as queued for an instant: the first has the session's turn and
        // waits for its worker.
        assert!(
            now.0 <= 1.0 && now.0 + now.1 <= 2.0,
            "running, queued = {now:?}"
        );
        if now == (1.0, 1.0) {
            seen = now;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        (1.0, 1.0),
        "never saw one train running and one queued"
    );
    let mut epochs = 0.0;
    for t in trains {
        let run = t.await.unwrap();
        assert_eq!(run["status"], "time_limit", "{run}");
        epochs += run["epochs_run"].as_f64().unwrap();
    }
    let m = scrape(&app).await;
    assert_eq!(m.get("backprop_trainings_running"), 0.0);
    assert_eq!(m.get("backprop_trainings_queued"), 0.0);
    assert_eq!(m.get("backprop_epochs_trained_total"), epochs);
}

#[tokio::test]
async fn metrics_need_the_token_when_there_is_one_and_can_be_off() {
    let app = spawn_app(Config {
        token: Some("s3cret".into()),
        ..config()
    })
    .await;
    let resp = app
        .send_as(Auth::Missing, Method::GET, "/metrics", None, None)
        .await;
    assert_problem(&resp, 401, "unauthorized");
    let resp = app
        .send_as(Auth::Missing, Method::GET, "/no/such/route", None, None)
        .await;
    assert_problem(&resp, 401, "unauthorized");
    let m = scrape(&app).await;
    // Refused before routing, and counted under the route the path has, if any.
    assert_eq!(m.requests("GET", "/metrics", 401), 1.0);
    assert_eq!(m.requests("GET", "unmatched", 401), 1.0);

    let off = spawn_app(Config {
        no_metrics: true,
        ..config()
    })
    .await;
    let resp = off.get("/metrics").await;
    assert_problem(&resp, 404, "not_found");
    off.get("/healthz").await.expect(200);
}

#[tokio::test]
async fn every_request_logs_one_line_at_info_with_method_path_status_and_latency() {
    let app = spawn_app(config()).await;
    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    app.get(&format!("/sessions/{id}")).await.expect(200);
    app.get(&format!("/sessions/{id}/loss?limit=abc"))
        .await
        .expect(400);
    // The log is drained by other threads: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = app.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(id.as_str())).collect();
        if lines.len() >= 2 || Instant::now() > deadline {
            assert_eq!(lines.len(), 2, "one line per request:\n{log}");
            let read = lines
                .iter()
                .find(|l| l.contains(&format!("uri=/sessions/{id} ")))
                .unwrap_or_else(|| panic!("no line for GET /sessions/{id}:\n{log}"));
            for want in ["INFO", "method=GET", "status=200", "latency="] {
                assert!(read.contains(want), "{want:?} missing in {read:?}");
            }
            let bad = lines.iter().find(|l| l.contains("limit=abc")).unwrap();
            assert!(bad.contains("status=400"), "{bad:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
