//! A small HTTP client for the suites that start, kill and restart servers themselves
//! (durability, replicas) and for the flow benchmark: every answer read whole, a transport
//! failure either a `Result` (when a test expects servers to die) or a panic naming the call.
//!
//! Included with `#[path = "support/client.rs"] mod client;`.
#![allow(dead_code)] // each test binary uses a different part of it

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::Client,
}

/// One answer, read whole, with the call it answered (for failure messages).
#[derive(Debug, Clone)]
pub struct Answer {
    pub call: String,
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: the body is not JSON ({e}): {}", self.call, self.body))
    }

    /// Panics unless the status is `want`; the body as JSON.
    pub fn expect(&self, want: u16) -> Value {
        assert_eq!(
            self.status, want,
            "{}: expected {want}, got {}: {}",
            self.call, self.status, self.body
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Panics unless this is the problem `status`/`code`.
    pub fn expect_problem(&self, status: u16, code: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(body["code"], code, "{}: {}", self.call, self.body);
        body
    }
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            // Far above anything a test waits for on purpose: a hang fails instead of blocking.
            .timeout(Duration::from_secs(60))
            .build()
            .expect("building the HTTP client");
        Self {
            base: base.to_owned(),
            http,
        }
    }

    /// The call, or the transport error (a server that died, a refused connection).
    pub async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, reqwest::Error> {
        let call = format!("{method} {}{path}", self.base);
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.text().await?;
        Ok(Answer {
            call,
            status,
            retry_after,
            body,
        })
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let what = format!("{method} {}{path}", self.base);
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// POST /sessions; the new id.
    pub async fn create(&self, body: &Value) -> String {
        let s = self.post("/sessions", body).await.expect(201);
        s["id"].as_str().expect("a string id").to_owned()
    }

    /// A session whose epochs take milliseconds in a debug build (a [32, 64, 64, 10] net on
    /// 256 samples), so a run can be caught in progress.
    pub async fn slow_session(&self) -> String {
        let id = self
            .create(&serde_json::json!({"layers": [32, 64, 64, 10],
                "init": {"method": "xavier", "seed": 5},
                "grad_reduction": "mean", "learning_rate": 0.01}))
            .await;
        let mut s = 11u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let x: Vec<Vec<f64>> = (0..256)
            .map(|_| {
                (0..32)
                    .map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64)
                    .collect()
            })
            .collect();
        let y: Vec<u64> = (0..256).map(|_| next() % 10).collect();
        self.put(
            &format!("/sessions/{id}/dataset"),
            &serde_json::json!({"x": x, "y": y}),
        )
        .await
        .expect(200);
        id
    }
}
