//! The harness: start the real server binary on port 0, speak HTTP to it, and check on every response
//! what the contract promises of all of them (no 5xx, JSON that parses, no NaN or infinity).

use std::sync::Arc;
use std::time::Duration;

use backprop_server::Config;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::ServerProcess;

/// Defaults for tests: two workers (the machine has two cores) and no idle expiry, so
/// `expires_at` is null and a session's bytes change only when the session does.
pub fn config() -> Config {
    Config {
        workers: 2,
        session_ttl_secs: 0,
        ..Config::default()
    }
}

#[derive(Clone)]
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    token: Option<String>,
    /// The server process; it is killed when the last clone of this goes.
    _process: Arc<ServerProcess>,
}

/// Starts the real binary with `config` on 127.0.0.1:0; it runs until the test drops the app.
pub async fn spawn_app(config: Config) -> TestApp {
    let token = config.token.clone();
    let server = tokio::task::spawn_blocking(move || ServerProcess::start(&config))
        .await
        .expect("starting the server");
    let client = reqwest::Client::builder()
        // Far above anything a test waits for on purpose: a hang fails instead of blocking.
        .timeout(Duration::from_secs(60))
        .build()
        .expect("building the HTTP client");
    TestApp {
        base: server.base.clone(),
        client,
        token,
        _process: Arc::new(server),
    }
}

/// One answer, read whole, with the request it answered (for failure messages).
#[derive(Debug)]
pub struct Resp {
    pub request: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}): {}",
                self.request,
                clip(&self.body)
            )
        })
    }

    /// Panics unless the status is `want`, showing the request and the body.
    pub fn expect(&self, want: u16) -> &Self {
        assert_eq!(
            self.status.as_u16(),
            want,
            "{}: expected {want}, got {} with body {}",
            self.request,
            self.status,
            clip(&self.body)
        );
        self
    }

    /// The status, then the body as JSON.
    pub fn expect_json(&self, want: u16) -> Value {
        self.expect(want);
        self.json()
    }
}

pub fn clip(s: &str) -> String {
    if s.len() <= 600 {
        s.to_string()
    } else {
        let mut end = 600;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}... ({} bytes)", &s[..end], s.len())
    }
}

/// What an `Authorization` header should carry.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// The configured token, if any (the normal client).
    Default,
    /// No header at all.
    Missing,
    /// This exact header value.
    Raw(&'a str),
}

pub const JSON: Option<&str> = Some("application/json");

impl TestApp {
    /// The same server through a client that opens a new connection for every request.
    pub fn without_pool(&self) -> TestApp {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(0)
            .build()
            .expect("building the HTTP client");
        TestApp {
            client,
            ..self.clone()
        }
    }

    /// The last part of what the server printed (its log).
    pub fn log(&self) -> String {
        self._process.log()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The most general request: any method, content type and body text, any auth.
    pub async fn send_as(
        &self,
        auth: Auth<'_>,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        let shown = clip(body.unwrap_or("<none>"));
        let body = body.map(|b| b.as_bytes().to_vec());
        self.send_bytes_as(auth, method, path, content_type, body, &shown)
            .await
    }

    /// A request with a body of any bytes (an NPZ file); `shown` stands for it in messages.
    pub async fn send_bytes_as(
        &self,
        auth: Auth<'_>,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        shown: &str,
    ) -> Resp {
        let request = format!("{method} {path} [content-type {content_type:?}] body {shown}");
        let mut req = self.client.request(method, self.url(path));
        match auth {
            Auth::Default => {
                if let Some(t) = &self.token {
                    req = req.header(AUTHORIZATION, format!("Bearer {t}"));
                }
            }
            Auth::Missing => {}
            Auth::Raw(v) => req = req.header(AUTHORIZATION, v),
        }
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{request}: no answer: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{request}: reading the body: {e}"));
        let resp = Resp {
            request,
            status,
            headers,
            body,
        };
        check_every_response(&resp);
        resp
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        self.send_as(Auth::Default, method, path, content_type, body)
            .await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.send(Method::DELETE, path, None, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, JSON, Some(&body.to_string()))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, JSON, Some(&body.to_string()))
            .await
    }

    /// POST /sessions; returns the id and the session resource.
    pub async fn create_session(&self, body: &Value) -> (String, Value) {
        let resp = self.post("/sessions", body).await;
        let session = resp.expect_json(201);
        let id = session["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no string id in {session}", resp.request))
            .to_string();
        (id, session)
    }

    pub async fn put_builtin(&self, id: &str, name: &str) -> Value {
        self.put(
            &format!("/sessions/{id}/dataset"),
            &json!({ "builtin": name }),
        )
        .await
        .expect_json(200)
    }

    pub async fn train(&self, id: &str, epochs: u64) -> Value {
        self.post(
            &format!("/sessions/{id}/train"),
            &json!({ "epochs": epochs }),
        )
        .await
        .expect_json(200)
    }

    /// Everything a client can read about a session, as the bytes it was sent.
    pub async fn snapshot(&self, id: &str) -> Snapshot {
        let mut parts = Vec::new();
        for path in [
            format!("/sessions/{id}"),
            format!("/sessions/{id}/weights"),
            format!("/sessions/{id}/loss"),
            format!("/sessions/{id}/loss?format=csv"),
        ] {
            let r = self.get(&path).await;
            parts.push((path, r.status.as_u16(), r.body));
        }
        Snapshot(parts)
    }
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
                    "GET {path} changed: before {s0} {}, after {s1} {}",
                    clip(b0),
                    clip(b1)
                )
            })
            .collect()
    }
}

/// The contract's promises about every response: no 5xx, JSON bodies parse (so no bare
/// NaN or Infinity), no non-finite number smuggled in as a string, CSV numbers finite.
fn check_every_response(resp: &Resp) {
    assert!(
        resp.status.as_u16() < 500,
        "{}: server error {}: {}",
        resp.request,
        resp.status,
        clip(&resp.body)
    );
    let ct = resp.content_type().to_ascii_lowercase();
    if ct.contains("json") {
        let v: Value = serde_json::from_str(&resp.body).unwrap_or_else(|e| {
            panic!(
                "{}: {ct} body does not parse as JSON ({e}): {}",
                resp.request,
                clip(&resp.body)
            )
        });
        if let Some(path) = non_finite_string(&v, "$") {
            panic!(
                "{}: a non-finite number written as a string at {path}: {}",
                resp.request,
                clip(&resp.body)
            );
        }
    } else if ct.starts_with("text/csv") {
        for line in resp.body.lines().skip(1) {
            for field in line.split(',') {
                let ok = field.parse::<f64>().is_ok_and(f64::is_finite);
                assert!(
                    ok,
                    "{}: CSV field {field:?} in line {line:?} is not a finite number",
                    resp.request
                );
            }
        }
    }
}

fn non_finite_string(v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) => {
            let l = s.to_ascii_lowercase();
            matches!(
                l.as_str(),
                "nan" | "inf" | "-inf" | "infinity" | "-infinity" | "+infinity"
            )
            .then(|| path.to_string())
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| non_finite_string(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .find_map(|(k, x)| non_finite_string(x, &format!("{path}.{k}"))),
        _ => None,
    }
}

/// Reason phrases the contract accepts for each status (RFC 9110's, or the older form).
fn titles(status: u16) -> &'static [&'static str] {
    match status {
        400 => &["Bad Request"],
        401 => &["Unauthorized"],
        404 => &["Not Found"],
        405 => &["Method Not Allowed"],
        409 => &["Conflict"],
        413 => &[
            "Content Too Large",
            "Payload Too Large",
            "Request Entity Too Large",
        ],
        415 => &["Unsupported Media Type"],
        422 => &["Unprocessable Content", "Unprocessable Entity"],
        429 => &["Too Many Requests"],
        _ => &[],
    }
}

/// Every way `resp` falls short of the problem response `status`/`code`; empty when it is one.
pub fn problem_faults(resp: &Resp, status: u16, code: &str) -> Vec<String> {
    let mut faults = Vec::new();
    if resp.status.as_u16() != status {
        faults.push(format!("status {} (want {status})", resp.status.as_u16()));
    }
    let ct = resp.content_type();
    if !ct.starts_with("application/problem+json") {
        faults.push(format!(
            "content type {ct:?} (want application/problem+json)"
        ));
    }
    let Ok(body) = serde_json::from_str::<Value>(&resp.body) else {
        faults.push(format!("body is not JSON: {}", clip(&resp.body)));
        return faults;
    };
    if body["code"] != code {
        faults.push(format!("code {} (want {code:?})", body["code"]));
    }
    if body["status"] != resp.status.as_u16() {
        faults.push(format!(
            "status field {} differs from the HTTP status {}",
            body["status"],
            resp.status.as_u16()
        ));
    }
    if body["type"] != "about:blank" {
        faults.push(format!("type {} (want \"about:blank\")", body["type"]));
    }
    let title = body["title"].as_str().unwrap_or("");
    if !titles(status).contains(&title) {
        faults.push(format!(
            "title {:?} is not the reason phrase of {status} ({:?})",
            body["title"],
            titles(status)
        ));
    }
    if body["detail"].as_str().is_none_or(|d| d.trim().is_empty()) {
        faults.push(format!(
            "detail {} is not a non-empty string",
            body["detail"]
        ));
    }
    if faults.is_empty() {
        return faults;
    }
    faults.push(format!("body: {}", clip(&resp.body)));
    faults
}

/// Panics unless `resp` is the problem response `status`/`code`.
pub fn assert_problem(resp: &Resp, status: u16, code: &str) -> Value {
    let faults = problem_faults(resp, status, code);
    assert!(
        faults.is_empty(),
        "{}:\n  {}",
        resp.request,
        faults.join("\n  ")
    );
    resp.json()
}

pub fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or("")
}

/// All numbers in a nested JSON array, in order (row-major).
pub fn floats(v: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.as_f64().expect("a JSON number is an f64")),
            Value::Null => {}
            other => panic!("expected numbers or arrays, found {other}"),
        }
    }
    walk(v, &mut out);
    out
}

/// `Ok` when `got` and `want` have the same nesting and every number the same bits.
pub fn same_bits(got: &Value, want: &Value) -> Result<(), String> {
    compare(got, want, "$", &|a, b| a.to_bits() == b.to_bits())
}

/// `Ok` when every number agrees to a relative `rtol`.
pub fn close(got: &Value, want: &Value, rtol: f64) -> Result<(), String> {
    compare(got, want, "$", &|a, b| {
        (a - b).abs() <= rtol * a.abs().max(b.abs())
    })
}

/// Like [`close`], except that an entry which is a near-cancellation (tiny next to the
/// largest of its array, like a gradient summed over samples of both signs) may instead
/// differ by `rtol / 1000` times that largest entry: its last bits depend on the summation
/// order, which the contract leaves free.
pub fn close_scaled(got: &Value, want: &Value, rtol: f64) -> Result<(), String> {
    let scale = floats(want).iter().fold(0.0f64, |m, x| m.max(x.abs()));
    compare(got, want, "$", &|a, b| {
        let diff = (a - b).abs();
        diff <= rtol * a.abs().max(b.abs()) || diff <= rtol * 1e-3 * scale
    })
}

fn compare(
    got: &Value,
    want: &Value,
    path: &str,
    eq: &dyn Fn(f64, f64) -> bool,
) -> Result<(), String> {
    match (got, want) {
        (Value::Array(g), Value::Array(w)) => {
            if g.len() != w.len() {
                return Err(format!("{path}: length {} (want {})", g.len(), w.len()));
            }
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                compare(a, b, &format!("{path}[{i}]"), eq)?;
            }
            Ok(())
        }
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            if eq(a, b) {
                Ok(())
            } else {
                Err(format!(
                    "{path}: {a:e} (want {b:e}, bits {:#x} vs {:#x})",
                    a.to_bits(),
                    b.to_bits()
                ))
            }
        }
        (Value::Null, Value::Null) => Ok(()),
        _ => Err(format!(
            "{path}: {} (want {})",
            clip(&got.to_string()),
            clip(&want.to_string())
        )),
    }
}

/// A lowercase hyphenated UUID v4, as the contract promises for ids.
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// A reproducible dataset of `m` samples with `n` features in [0, 1) and class indices
/// below `classes`, from a fixed xorshift stream (no dependency, same data every run).
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

/// A session whose epochs take about 40 ms in a debug build (well under one in release):
/// a [32, 64, 64, 10] net on 256 samples. Its weights are small (6784 numbers), so reads of
/// it stay cheap while it trains. Xavier init and a mean gradient keep it far from
/// diverging, so only a time limit stops it.
pub async fn slow_session(app: &TestApp) -> String {
    let (id, _) = app
        .create_session(&json!({
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
