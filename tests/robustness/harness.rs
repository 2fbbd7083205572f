//! The server binary, a client for it, and what every answer must be.

use std::time::{Duration, Instant};

use backprop_server::Config;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::server::ServerProcess;

pub use crate::timing::{config, exclusive, shared};

/// A running server process: a client for it, and the means to stop it.
pub struct Server {
    pub app: App,
    pub process: ServerProcess,
}

impl Server {
    /// Starts the real binary with `config` on 127.0.0.1:0.
    pub async fn start(config: Config) -> Self {
        let process = tokio::task::spawn_blocking(move || ServerProcess::start(&config))
            .await
            .expect("starting the server");
        Self {
            app: App::new(process.base.clone()),
            process,
        }
    }

    /// SIGTERM: the graceful shutdown a supervisor asks for.
    pub fn shut_down(&mut self) {
        self.process.terminate();
    }

    /// Starts a new peak of the server's resident set at what it holds now; returns that,
    /// in KiB.
    pub fn reset_rss_peak(&self) -> u64 {
        self.process.reset_rss_peak()
    }

    /// The most the server's resident set held since [`Server::reset_rss_peak`], in KiB.
    pub fn rss_peak_kib(&self) -> u64 {
        self.process.rss_peak_kib()
    }

    /// The server's resident set now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.process.rss_kib()
    }
}

#[derive(Clone)]
pub struct App {
    pub base: String,
    pub client: reqwest::Client,
}

/// One answer, read whole, with a description of the request it answered.
#[derive(Debug)]
pub struct Resp {
    pub request: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub fn clip(s: &str) -> String {
    const MAX: usize = 400;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// The contract's `code`s.
const CODES: &[&str] = &[
    "invalid_json",
    "invalid_request",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "no_dataset",
    "body_too_large",
    "unsupported_media_type",
    "invalid_value",
    "shape_mismatch",
    "invalid_labels",
    "too_large",
    "non_finite_result",
    "too_many_sessions",
    "rate_limited",
    "request_timeout",
    "overloaded",
];

impl Resp {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: the body is not JSON ({e}): {}",
                self.request,
                clip(&self.body)
            )
        })
    }

    /// Every way this answer breaks what the contract promises of all answers: no 5xx; a
    /// success with a body is `application/json`; an error is a problem document whose
    /// `status` is the HTTP status and whose `code` is one of the contract's.
    pub fn faults(&self) -> Vec<String> {
        let mut faults = Vec::new();
        let status = self.status.as_u16();
        if status >= 500 {
            faults.push(format!("server error {status}"));
        }
        let ct = self.content_type().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim().to_string();
        if status == 204 {
            if !self.body.is_empty() {
                faults.push("a 204 with a body".into());
            }
            return with_body(faults, self);
        }
        let want = if status >= 400 {
            "application/problem+json"
        } else {
            "application/json"
        };
        if essence != want && !(status < 400 && self.body.is_empty()) {
            faults.push(format!("content type {ct:?} (want {want})"));
        }
        let Ok(v) = serde_json::from_str::<Value>(&self.body) else {
            faults.push("the body does not parse as JSON".into());
            return with_body(faults, self);
        };
        if status >= 400 {
            if v["status"] != status {
                faults.push(format!("problem status {} (HTTP {status})", v["status"]));
            }
            if !v["code"].as_str().is_some_and(|c| CODES.contains(&c)) {
                faults.push(format!("problem code {} is not the contract's", v["code"]));
            }
            if v["type"] != "about:blank" {
                faults.push(format!("problem type {}", v["type"]));
            }
            if v["detail"].as_str().is_none_or(|d| d.trim().is_empty()) {
                faults.push("problem without a detail".into());
            }
        }
        with_body(faults, self)
    }

    /// Panics unless the status is `want`.
    pub fn expect(&self, want: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            want,
            "{}: expected {want}, got {}: {}",
            self.request,
            self.status,
            clip(&self.body)
        );
        self
    }

    pub fn expect_json(&self, want: u16) -> Value {
        self.expect(want);
        self.json()
    }

    /// Panics unless this is a problem with `status` and `code`.
    pub fn expect_problem(&self, status: u16, code: &str) -> Value {
        let v = self.expect_json(status);
        assert_eq!(v["code"], code, "{}: {}", self.request, clip(&self.body));
        v
    }
}

fn with_body(mut faults: Vec<String>, r: &Resp) -> Vec<String> {
    if !faults.is_empty() {
        faults.push(format!("body: {}", clip(&r.body)));
    }
    faults
}

impl App {
    /// A client that keeps connections alive between requests, as graders' clients do.
    pub fn new(base: String) -> Self {
        // Far above anything a test waits for on purpose: a hang fails, it does not block.
        Self::with_client(
            base,
            reqwest::Client::builder().timeout(Duration::from_secs(90)),
        )
    }

    /// A client that opens a new connection for every request and gives up after
    /// `timeout`: one case's connection cannot carry over into the next.
    pub fn unpooled(base: String, timeout: Duration) -> Self {
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(0);
        Self::with_client(base, builder)
    }

    fn with_client(base: String, builder: reqwest::ClientBuilder) -> Self {
        let client = builder.build().expect("building the HTTP client");
        Self { base, client }
    }

    /// Sends a request and reads the answer whole; `Err` only when no answer came.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> Result<Resp, String> {
        let request = format!(
            "{method} {path} body {}",
            body.as_deref().map_or("<none>".into(), clip)
        );
        self.send_bytes(
            method,
            path,
            content_type,
            body.map(String::into_bytes),
            request,
        )
        .await
    }

    /// Sends `body` as it is (any bytes); `request` describes it in errors and in the answer.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        request: String,
    ) -> Result<Resp, String> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{request}: no answer: {e:?}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .map_err(|e| format!("{request}: the answer was cut: {e:?}"))?;
        Ok(Resp {
            request,
            status,
            headers,
            body,
        })
    }

    /// Like [`App::request`] with a JSON body, panicking on no answer or a malformed one.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let (ct, text) = match body {
            Some(b) => (Some("application/json"), Some(b.to_string())),
            None => (None, None),
        };
        let r = self
            .request(method, path, ct, text)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let faults = r.faults();
        assert!(
            faults.is_empty(),
            "{}:\n  {}",
            r.request,
            faults.join("\n  ")
        );
        r
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// POST /sessions; returns the new id.
    pub async fn create(&self, body: &Value) -> String {
        let s = self.post("/sessions", body).await.expect_json(201);
        s["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {s}"))
            .to_string()
    }

    pub async fn train(&self, id: &str, epochs: u64) -> Value {
        self.post(
            &format!("/sessions/{id}/train"),
            &json!({ "epochs": epochs }),
        )
        .await
        .expect_json(200)
    }

    pub async fn session(&self, id: &str) -> Value {
        self.get(&format!("/sessions/{id}")).await.expect_json(200)
    }

    /// What a client reads of a session, as bytes: the resource without `expires_at`
    /// (which moves whenever the session is touched), its weights and its history.
    pub async fn snapshot(&self, id: &str) -> Result<Snapshot, String> {
        let mut parts = Vec::new();
        for path in [
            format!("/sessions/{id}"),
            format!("/sessions/{id}/weights"),
            format!("/sessions/{id}/loss"),
        ] {
            let r = self.request(Method::GET, &path, None, None).await?;
            let body = if path.ends_with(id) {
                without_expires_at(&r.body)
            } else {
                r.body
            };
            parts.push((path, r.status.as_u16(), body));
        }
        Ok(Snapshot(parts))
    }

    /// Starts `POST /sessions/{id}/train` in its own task; the handle yields the answer and
    /// how long it took.
    pub fn start_train(&self, id: &str, epochs: u64) -> JoinHandle<(Resp, Duration)> {
        let app = self.clone();
        let path = format!("/sessions/{id}/train");
        tokio::spawn(async move {
            let t = Instant::now();
            let r = app.post(&path, &json!({ "epochs": epochs })).await;
            (r, t.elapsed())
        })
    }
}

/// The session resource's text with its `"expires_at": ...` member cut out.
fn without_expires_at(body: &str) -> String {
    let Some(start) = body.find("\"expires_at\":") else {
        return body.to_string();
    };
    // The value is null or a timestamp string: neither holds a ',' or a '}'.
    let end = start + body[start..].find([',', '}']).unwrap_or(body.len() - start);
    let (mut a, mut b) = (start, end);
    if body[..a].ends_with(',') {
        a -= 1;
    } else if body[b..].starts_with(',') {
        b += 1;
    }
    format!("{}{}", &body[..a], &body[b..])
}

#[derive(Debug, PartialEq, Eq)]
pub struct Snapshot(Vec<(String, u16, String)>);

impl Snapshot {
    /// Which reads differ from `before`, each with both bodies; empty when none does.
    pub fn changes_since(&self, before: &Snapshot) -> Vec<String> {
        before
            .0
            .iter()
            .zip(&self.0)
            .filter(|(a, b)| a != b)
            .map(|((path, s0, b0), (_, s1, b1))| {
                format!(
                    "GET {path}: before {s0} {}, after {s1} {}",
                    clip(b0),
                    clip(b1)
                )
            })
            .collect()
    }
}

/// All numbers of a nested JSON array, in order; `None` if anything else is in it (a NaN
/// that serde wrote as null, say).
pub fn numbers(v: &Value) -> Option<Vec<f64>> {
    fn walk(v: &Value, out: &mut Vec<f64>) -> bool {
        match v {
            Value::Array(a) => a.iter().all(|x| walk(x, out)),
            Value::Number(n) => n.as_f64().map(|f| out.push(f)).is_some(),
            _ => false,
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out).then_some(out)
}

/// Checks what holds of any live session, whatever was done to it: the history has
/// `epochs_trained` entries, `last_loss` is its last, every weight is a finite number.
pub async fn assert_consistent(app: &App, id: &str) -> Value {
    let s = app.session(id).await;
    let h = app
        .get(&format!("/sessions/{id}/loss"))
        .await
        .expect_json(200);
    let loss = numbers(&h["loss"]).unwrap_or_else(|| panic!("history with a non-number: {h}"));
    assert_eq!(
        s["epochs_trained"].as_u64(),
        Some(loss.len() as u64),
        "epochs_trained against the history's length: {s}"
    );
    assert_eq!(h["total"].as_u64(), Some(loss.len() as u64), "{h}");
    match loss.last() {
        Some(&l) => assert_eq!(s["last_loss"].as_f64().map(f64::to_bits), Some(l.to_bits())),
        None => assert!(s["last_loss"].is_null(), "{s}"),
    }
    assert!(
        loss.iter().all(|l| l.is_finite() && *l >= 0.0),
        "a loss not finite and >= 0: {h}"
    );
    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect_json(200);
    let ws = numbers(&w["weights"]).unwrap_or_else(|| panic!("weights with a non-number: {w}"));
    assert!(ws.iter().all(|x| x.is_finite()), "{w}");
    if !w["biases"].is_null() {
        let bs = numbers(&w["biases"]).unwrap_or_else(|| panic!("biases: {w}"));
        assert!(bs.iter().all(|x| x.is_finite()), "{w}");
    }
    s
}

/// A reproducible dataset of `m` samples with `n` features in [0, 1) and class indices
/// below `classes`, from a fixed xorshift stream.
pub fn synthetic(m: usize, n: usize, classes: usize, seed: u64) -> Value {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let x: Vec<Vec<f64>> = (0..m)
        .map(|_| {
            (0..n)
                .map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64)
                .collect()
        })
        .collect();
    let y: Vec<u64> = (0..m).map(|_| next() % classes as u64).collect();
    json!({ "x": x, "y": y })
}

/// Epochs for a run that only a time limit, a cancel or a shutdown ends.
pub const LONG: u64 = 100_000;

/// A session whose epochs take tens of milliseconds in a debug build: a [32, 64, 64, 10]
/// net on 256 samples. Xavier init and a mean gradient keep it from diverging, so only a
/// time limit (or a cancel) stops a long run; its weights are few, so reads stay cheap.
pub async fn slow_session(app: &App) -> String {
    let id = app
        .create(&json!({
            "layers": [32, 64, 64, 10],
            "init": {"method": "xavier", "seed": 5},
            "grad_reduction": "mean",
            "learning_rate": 0.01
        }))
        .await;
    app.put(
        &format!("/sessions/{id}/dataset"),
        &synthetic(256, 32, 10, 11),
    )
    .await
    .expect(200);
    id
}

/// Every route that takes a JSON body, for session `id` (import and create name none).
pub fn body_routes(id: &str) -> Vec<(Method, String)> {
    let mut routes = vec![
        (Method::POST, "/sessions".to_string()),
        (Method::POST, "/sessions/import".to_string()),
        (Method::PUT, format!("/sessions/{id}/weights")),
        (Method::PUT, format!("/sessions/{id}/dataset")),
    ];
    for r in [
        "train",
        "predict",
        "gradients",
        "check",
        "gradcheck",
        "trace",
    ] {
        routes.push((Method::POST, format!("/sessions/{id}/{r}")));
    }
    routes
}

/// The number of sessions the server holds.
pub async fn session_total(app: &App) -> u64 {
    app.get("/sessions?limit=1").await.expect_json(200)["total"]
        .as_u64()
        .expect("total is a count")
}

/// `depth` nested arrays around a 1, written directly: a `Value` this deep would overflow
/// the test's own stack when serialized or dropped.
pub fn nested_array(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// `depth` nested objects `{"a": ...}` around a 1.
pub fn nested_object(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}
