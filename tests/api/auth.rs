//! The bearer token: checked on every route but /healthz and /openapi.yaml, before the route
//! is even looked up, and a refused request changes nothing.

use backprop_server::Config;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Auth, JSON, config, problem_faults, spawn_app};

const TOKEN: &str = "s3cret-Token_42";

fn with_token() -> Config {
    Config {
        token: Some(TOKEN.to_string()),
        ..config()
    }
}

/// Header values that must all be refused: missing is tried separately.
const WRONG: &[&str] = &[
    "Bearer wrong",
    "Bearer s3cret-Token_4",
    "Bearer s3cret-Token_42x",
    "Bearer s3cret-token_42",
    "Bearer ",
    "Bearer",
    "s3cret-Token_42",
    "Token s3cret-Token_42",
    // base64("user:s3cret-Token_42") and base64 of the bare token: Basic is not Bearer.
    "Basic dXNlcjpzM2NyZXQtVG9rZW5fNDI=",
    "Basic czNjcmV0LVRva2VuXzQy",
    "Basic s3cret-Token_42",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_but_health_and_spec_needs_the_token() {
    let app = spawn_app(with_token()).await;
    let (id, _) = app
        .create_session(&json!({"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 0}}))
        .await;
    app.put_builtin(&id, "cat-dog-ship").await;
    app.train(&id, 2).await;
    let before = app.snapshot(&id).await;
    let list_before = app.get("/sessions").await.body;

    let weights = app.get(&format!("/sessions/{id}/weights")).await.body;
    let s = |p: &str| p.replace("{id}", &id);
    // (method, path, body, status with the right token)
    let routes: Vec<(Method, String, Option<String>, u16)> = vec![
        (Method::GET, s("/sessions"), None, 200),
        (
            Method::POST,
            s("/sessions"),
            Some(r#"{"layers": [2, 2]}"#.into()),
            201,
        ),
        (Method::GET, s("/datasets"), None, 200),
        (Method::GET, s("/datasets/iris"), None, 200),
        (Method::GET, s("/sessions/{id}"), None, 200),
        (
            Method::PUT,
            s("/sessions/{id}/dataset"),
            Some(r#"{"builtin": "cat-dog-ship"}"#.into()),
            200,
        ),
        (Method::GET, s("/sessions/{id}/loss"), None, 200),
        (Method::GET, s("/sessions/{id}/loss?format=csv"), None, 200),
        (Method::GET, s("/sessions/{id}/weights"), None, 200),
        (
            Method::POST,
            s("/sessions/{id}/predict"),
            Some(r#"{"x": [[1, 2, 3, 4]]}"#.into()),
            200,
        ),
        (
            Method::POST,
            s("/sessions/{id}/gradients"),
            Some("{}".into()),
            200,
        ),
        // Changes the session when allowed: these come last among the session's routes.
        (
            Method::PUT,
            s("/sessions/{id}/weights"),
            Some(weights.clone()),
            200,
        ),
        (
            Method::POST,
            s("/sessions/{id}/train"),
            Some(r#"{"epochs": 1}"#.into()),
            200,
        ),
        // The token comes before the route: unknown routes, methods and sessions are 401 too.
        (Method::GET, s("/nope"), None, 404),
        (Method::GET, s("/sessions/{id}/"), None, 404),
        (
            Method::GET,
            s("/sessions/00000000-0000-4000-8000-000000000000"),
            None,
            404,
        ),
        (Method::DELETE, s("/sessions"), None, 405),
        (Method::POST, s("/sessions"), Some("{not json".into()), 400),
        (Method::DELETE, s("/sessions/{id}"), None, 204),
    ];

    let mut failures = Vec::new();
    for (method, path, body, _) in &routes {
        let ct = body.as_ref().and(JSON);
        let auths = std::iter::once(Auth::Missing).chain(WRONG.iter().map(|w| Auth::Raw(w)));
        for auth in auths {
            let label = match auth {
                Auth::Raw(v) => format!("Authorization: {v:?}"),
                _ => "no Authorization".to_string(),
            };
            let resp = app
                .send_as(auth, method.clone(), path, ct, body.as_deref())
                .await;
            let mut faults = problem_faults(&resp, 401, "unauthorized");
            let challenge = resp.header("www-authenticate").unwrap_or("");
            if !challenge.starts_with("Bearer") {
                faults.push(format!("WWW-Authenticate {challenge:?} (want Bearer)"));
            }
            if !faults.is_empty() {
                failures.push(format!(
                    "{} with {label}\n    {}",
                    resp.request,
                    faults.join("\n    ")
                ));
            }
        }
    }
    failures.extend(app.snapshot(&id).await.changes_since(&before));
    let list = app.get("/sessions").await.body;
    if list != list_before {
        failures.push(format!("refused requests changed GET /sessions: {list}"));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // With the token, the same requests do their normal work.
    for (method, path, body, status) in &routes {
        let ct = body.as_ref().and(JSON);
        app.send(method.clone(), path, ct, body.as_deref())
            .await
            .expect(*status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_spec_need_no_token() {
    let app = spawn_app(with_token()).await;
    for auth in [Auth::Missing, Auth::Default] {
        let h = app.send_as(auth, Method::GET, "/healthz", None, None).await;
        assert_eq!(h.expect_json(200), json!({"status": "ok"}));
        let spec = app
            .send_as(auth, Method::GET, "/openapi.yaml", None, None)
            .await;
        spec.expect(200);
        assert!(
            spec.content_type().starts_with("application/yaml"),
            "openapi.yaml content type {:?}",
            spec.content_type()
        );
        assert!(
            spec.body
                .lines()
                .any(|l| l.starts_with("openapi:") && l.contains("3.1")),
            "not OpenAPI 3.1: {}",
            crate::helpers::clip(&spec.body)
        );
    }
}
