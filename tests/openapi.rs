//! `openapi.yaml` is the server, exactly: its paths are the server's routes (a method the spec
//! lists is routed, any other is 405 with the spec's methods in `Allow`), and every answer the
//! real server gives has a status the spec lists for that operation, that status's content
//! type and headers, and a body that validates against the spec's schema (JSON Schema 2020-12,
//! with formats checked). Requests the server accepts validate against the spec's request
//! schemas; requests it refuses as `invalid_request` do not.
//!
//! Conformance faults are collected over a whole scenario and reported together, so one run
//! shows every disagreement between the spec and the server.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backprop_server::Config;
use jsonschema::{Draft, Validator};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use serde_json::{Value, json};

#[path = "support/server.rs"]
mod server;
use server::ServerProcess;

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");

/// The methods probed on every path (HEAD follows GET in axum, and OPTIONS is not served).
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

/// The contract's error codes, from its table of errors.
const CONTRACT_CODES: [&str; 19] = [
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
    "request_timeout",
    "overloaded",
    "conflict",
    "unavailable",
    "internal_error",
];

/// A session id no server ever hands out (the store only makes random v4 ids).
const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000000";

// ---------------------------------------------------------------------------------------------
// The spec

struct Spec {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<Validator>>>,
}

/// One JSON-pointer segment (RFC 6901).
fn esc(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl Spec {
    fn load() -> Spec {
        let text = std::fs::read_to_string(SPEC_PATH)
            .unwrap_or_else(|e| panic!("reading {SPEC_PATH}: {e}"));
        let doc: Value = serde_yaml_ng::from_str(&text)
            .unwrap_or_else(|e| panic!("{SPEC_PATH} is not YAML: {e}"));
        Spec {
            doc,
            validators: Mutex::new(HashMap::new()),
        }
    }

    fn at(&self, pointer: &str) -> &Value {
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("openapi.yaml has nothing at #{pointer}"))
    }

    /// Follows `$ref`s (responses, parameters, headers): the object and where it lives.
    fn resolve(&self, pointer: &str) -> (String, &Value) {
        let mut ptr = pointer.to_string();
        for _ in 0..16 {
            let v = self.at(&ptr);
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    ptr = r
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("#{ptr}: $ref {r} is not local"))
                        .to_string()
                }
                None => return (ptr, v),
            }
        }
        panic!("#{pointer}: $ref chain too long")
    }

    /// The schema at `pointer` as a standalone 2020-12 schema; its `#/components/...`
    /// references resolve because the spec's components ride along.
    fn validator(&self, pointer: &str) -> Result<Arc<Validator>, String> {
        if let Some(v) = self.validators.lock().unwrap().get(pointer) {
            return Ok(v.clone());
        }
        let mut root = self.at(pointer).clone();
        let Some(obj) = root.as_object_mut() else {
            return Err(format!("#{pointer} is not a schema object"));
        };
        obj.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        obj.insert("components".into(), self.doc["components"].clone());
        let v = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("the schema at #{pointer} does not compile: {e}"))?;
        let v = Arc::new(v);
        self.validators
            .lock()
            .unwrap()
            .insert(pointer.to_string(), v.clone());
        Ok(v)
    }

    /// Every way `instance` fails the schema at `pointer`; empty when it validates.
    fn schema_faults(&self, pointer: &str, instance: &Value) -> Vec<String> {
        match self.validator(pointer) {
            Err(e) => vec![e],
            Ok(v) => v
                .iter_errors(instance)
                .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
                .collect(),
        }
    }

    fn templates(&self) -> Vec<String> {
        self.doc["paths"]
            .as_object()
            .expect("openapi.yaml: paths is an object")
            .keys()
            .cloned()
            .collect()
    }

    /// The methods a path lists, upper case.
    fn methods(&self, template: &str) -> BTreeSet<String> {
        self.doc["paths"][template]
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| {
                        matches!(
                            k.as_str(),
                            "get"
                                | "put"
                                | "post"
                                | "delete"
                                | "options"
                                | "head"
                                | "patch"
                                | "trace"
                        )
                    })
                    .map(|k| k.to_ascii_uppercase())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The template a concrete path falls under; literal segments beat `{parameters}`.
    fn template_of(&self, path: &str) -> Option<String> {
        let segs: Vec<&str> = path.split('/').collect();
        self.templates()
            .into_iter()
            .filter(|t| {
                let ts: Vec<&str> = t.split('/').collect();
                ts.len() == segs.len()
                    && ts.iter().zip(&segs).all(|(t, s)| {
                        (t.starts_with('{') && t.ends_with('}') && !s.is_empty()) || t == s
                    })
            })
            .max_by_key(|t| t.split('/').filter(|s| !s.starts_with('{')).count())
    }

    fn op_pointer(template: &str, method: &str) -> String {
        format!("/paths/{}/{}", esc(template), method.to_ascii_lowercase())
    }

    /// Query parameters of an operation (path-level and its own): name -> schema pointer.
    fn query_params(&self, template: &str, method: &str) -> HashMap<String, String> {
        let mut out = HashMap::new();
        let path_ptr = format!("/paths/{}", esc(template));
        for base in [path_ptr, Self::op_pointer(template, method)] {
            let Some(list) = self.doc.pointer(&format!("{base}/parameters")) else {
                continue;
            };
            for i in 0..list.as_array().map_or(0, Vec::len) {
                let (ptr, p) = self.resolve(&format!("{base}/parameters/{i}"));
                if p["in"] == "query" {
                    let name = p["name"].as_str().unwrap_or("").to_string();
                    out.insert(name, format!("{ptr}/schema"));
                }
            }
        }
        out
    }
}

/// A query value as its schema sees it: a number if it reads as one, else a string.
fn query_value(raw: &str, schema: &Value) -> Value {
    let numeric = matches!(schema["type"].as_str(), Some("integer" | "number"));
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ Value::Number(_)) if numeric => v,
        _ => Value::String(raw.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// The server and one exchange with it

struct Resp {
    request: String,
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.request, self.body))
    }

    /// Panics unless the status is `want` (the scenario cannot go on otherwise).
    fn expect(&self, want: u16) -> Value {
        assert_eq!(
            self.status, want,
            "{}: expected {want}, got {} {}",
            self.request, self.status, self.body
        );
        let json = self
            .header("content-type")
            .is_some_and(|c| essence(c).ends_with("json"));
        if json { self.json() } else { Value::Null }
    }

    fn code(&self) -> Option<String> {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_string))
    }
}

/// One request.
#[derive(Default, Clone)]
struct Call {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Option<String>,
    auth: Option<String>,
    no_auth: bool,
}

impl Call {
    fn new(method: &'static str, path: impl Into<String>) -> Self {
        Call {
            method,
            path: path.into(),
            ..Default::default()
        }
    }

    fn json(mut self, body: &Value) -> Self {
        self.content_type = Some("application/json");
        self.body = Some(body.to_string());
        self
    }

    fn raw(mut self, content_type: Option<&'static str>, body: &str) -> Self {
        self.content_type = content_type;
        self.body = Some(body.to_string());
        self
    }
}

struct App {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
    spec: Spec,
    faults: Mutex<Vec<String>>,
    exchanges: AtomicUsize,
    /// The real binary; killed when the app goes.
    _process: ServerProcess,
}

async fn spawn(config: Config) -> App {
    let token = config.token.clone();
    let server = tokio::task::spawn_blocking(move || ServerProcess::start(&config))
        .await
        .expect("starting the server");
    App {
        base: server.base.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("building the HTTP client"),
        token,
        spec: Spec::load(),
        faults: Mutex::new(Vec::new()),
        exchanges: AtomicUsize::new(0),
        _process: server,
    }
}

/// Two workers (the machine has two cores); sessions never expire unless a test says so.
fn config() -> Config {
    Config {
        workers: 2,
        session_ttl_secs: 0,
        ..Config::default()
    }
}

impl App {
    async fn call(&self, c: Call) -> Resp {
        let request = format!(
            "{} {} [{}] {}",
            c.method,
            c.path,
            c.content_type.unwrap_or("no content type"),
            c.body.as_deref().map_or("<no body>".to_string(), clip)
        );
        let method = Method::from_bytes(c.method.as_bytes()).expect("a method name");
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, c.path));
        if let Some(a) = &c.auth {
            req = req.header(AUTHORIZATION, a);
        } else if let (Some(t), false) = (&self.token, c.no_auth) {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = c.content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(b) = &c.body {
            req = req.body(b.clone());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{request}: no answer: {e}"));
        let status = resp.status().as_u16();
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
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        let faults = self.conformance(&c, &resp);
        if !faults.is_empty() {
            self.faults.lock().unwrap().push(format!(
                "{} -> {} {}\n    {}",
                resp.request,
                resp.status,
                clip(&resp.body),
                faults.join("\n    ")
            ));
        }
        resp
    }

    async fn get(&self, path: impl Into<String>) -> Resp {
        self.call(Call::new("GET", path)).await
    }

    async fn post(&self, path: impl Into<String>, body: &Value) -> Resp {
        self.call(Call::new("POST", path).json(body)).await
    }

    async fn put(&self, path: impl Into<String>, body: &Value) -> Resp {
        self.call(Call::new("PUT", path).json(body)).await
    }

    async fn create(&self, body: &Value) -> String {
        let s = self.post("/sessions", body).await.expect(201);
        s["id"].as_str().expect("the session's id").to_string()
    }

    /// A fault that is not about the spec's schemas (a wrong status in a table of cases).
    fn fault(&self, text: String) {
        self.faults.lock().unwrap().push(text);
    }

    /// Panics with every fault collected so far.
    fn assert_conforms(&self) {
        let faults = self.faults.lock().unwrap();
        // Shown with --nocapture: how much of the server this run held to the spec.
        eprintln!(
            "{} exchanges checked against openapi.yaml",
            self.exchanges.load(Ordering::Relaxed)
        );
        assert!(
            faults.is_empty(),
            "{} exchange(s) disagree with openapi.yaml:\n{}",
            faults.len(),
            faults.join("\n")
        );
    }

    /// Every way `resp` is not what the spec says `c` gets.
    fn conformance(&self, c: &Call, resp: &Resp) -> Vec<String> {
        let spec = &self.spec;
        let (path, query) = c.path.split_once('?').unwrap_or((&c.path, ""));
        let template = spec.template_of(path);
        let listed = template
            .as_deref()
            .map(|t| spec.methods(t))
            .unwrap_or_default();
        if resp.status == 401 && !listed.contains(c.method) {
            // The token is checked before the route, so any path may get it.
            return self.response_faults("/components/responses/Unauthorized", resp);
        }
        let Some(template) = template else {
            // No such path in the spec: the server must not have it either.
            let mut f = self.response_faults("/components/responses/NotFound", resp);
            if resp.status != 404 {
                f.insert(
                    0,
                    format!(
                        "{path} is no path of the spec, yet answered {}",
                        resp.status
                    ),
                );
            }
            return f;
        };
        if !listed.contains(c.method) {
            let mut f = self.response_faults("/components/responses/MethodNotAllowed", resp);
            if resp.status != 405 {
                f.insert(
                    0,
                    format!(
                        "the spec lists {listed:?} for {template}, not {}, yet it answered {}",
                        c.method, resp.status
                    ),
                );
            }
            let mut want = listed.clone();
            if want.contains("GET") {
                want.insert("HEAD".into());
            }
            let allow: BTreeSet<String> = resp
                .header("allow")
                .unwrap_or("")
                .split(',')
                .map(|m| m.trim().to_ascii_uppercase())
                .filter(|m| !m.is_empty())
                .collect();
            if allow != want {
                f.push(format!(
                    "Allow is {allow:?}; the spec's methods for {template} make {want:?}"
                ));
            }
            return f;
        }
        let op = Spec::op_pointer(&template, c.method);
        let status_ptr = format!("{op}/responses/{}", resp.status);
        if spec.doc.pointer(&status_ptr).is_none() {
            return vec![format!(
                "status {} is not among the responses the spec lists for {} {template}",
                resp.status, c.method
            )];
        }
        let mut f = self.response_faults(&status_ptr, resp);
        f.extend(self.request_faults(c, &op, &template, query, resp));
        f
    }

    /// Headers, content type and body against the response object at `pointer`.
    fn response_faults(&self, pointer: &str, resp: &Resp) -> Vec<String> {
        let spec = &self.spec;
        let (ptr, r) = spec.resolve(pointer);
        let mut f = Vec::new();
        if let Some(headers) = r.get("headers").and_then(Value::as_object) {
            for name in headers.keys() {
                let (hptr, h) = spec.resolve(&format!("{ptr}/headers/{}", esc(name)));
                match resp.header(name) {
                    None if h["required"] == true => {
                        f.push(format!("the required header {name} is missing"))
                    }
                    None => {}
                    Some(v) => f.extend(
                        spec.schema_faults(&format!("{hptr}/schema"), &json!(v))
                            .into_iter()
                            .map(|e| format!("header {name}: {v:?}: {e}")),
                    ),
                }
            }
        }
        let Some(content) = r.get("content").and_then(Value::as_object) else {
            if !resp.body.is_empty() {
                f.push("the spec gives this response no body, yet it has one".into());
            }
            return f;
        };
        let ct = essence(resp.header("content-type").unwrap_or(""));
        if !content.contains_key(&ct) {
            f.push(format!(
                "content type {ct:?} is not among the spec's {:?}",
                content.keys().collect::<Vec<_>>()
            ));
            return f;
        }
        if ct == "text/event-stream" {
            // OpenAPI 3.1 has an event stream's schema describe each event (as schemathesis
            // reads it): `{"event", "data"}` per event, comment lines aside.
            let schema = format!("{ptr}/content/{}/schema", esc(&ct));
            let events = sse_events(&resp.body);
            if events.is_empty() {
                f.push(format!("an event stream with no event: {:?}", resp.body));
            }
            for e in &events {
                f.extend(spec.schema_faults(&schema, e));
            }
            return f;
        }
        let instance = if ct.ends_with("json") {
            match serde_json::from_str(&resp.body) {
                Ok(v) => v,
                Err(e) => {
                    f.push(format!("the {ct} body is not JSON: {e}"));
                    return f;
                }
            }
        } else {
            Value::String(resp.body.clone())
        };
        let schema = format!("{ptr}/content/{}/schema", esc(&ct));
        f.extend(spec.schema_faults(&schema, &instance));
        f
    }

    /// What a response says about its request: a 2xx request fits the spec's request
    /// schema and query parameters; an `invalid_request` body or an out-of-range query does not.
    fn request_faults(
        &self,
        c: &Call,
        op: &str,
        template: &str,
        query: &str,
        resp: &Resp,
    ) -> Vec<String> {
        let spec = &self.spec;
        let mut f = Vec::new();
        let ok = (200..300).contains(&resp.status);
        let code = resp.code();
        let body_json = c
            .body
            .as_deref()
            .filter(|b| !b.trim().is_empty())
            .and_then(|b| serde_json::from_str::<Value>(b).ok());
        let schema = format!("{op}/requestBody/content/application~1json/schema");
        match (&body_json, spec.doc.pointer(&schema).is_some()) {
            (Some(_), false) if ok => {
                f.push("the server took a body the spec does not describe".into())
            }
            (Some(body), true) => {
                let errors = spec.schema_faults(&schema, body);
                if ok && !errors.is_empty() {
                    f.push(format!(
                        "the server accepted a body the spec's request schema refuses: {}",
                        errors.join("; ")
                    ));
                }
                let refused = resp.status == 400 && code.as_deref() == Some("invalid_request");
                if refused && errors.is_empty() {
                    f.push(
                        "the server refused the body as invalid_request, yet the spec's \
                         request schema accepts it"
                            .into(),
                    );
                }
            }
            _ => {}
        }
        let params = spec.query_params(template, c.method);
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let mut bad = Vec::new();
        for (name, raw) in &pairs {
            if let Some(ptr) = params.get(name) {
                let v = query_value(raw, spec.at(ptr));
                if !spec.schema_faults(ptr, &v).is_empty() {
                    bad.push(format!("{name}={raw}"));
                }
            }
        }
        if ok && !bad.is_empty() {
            f.push(format!(
                "the server accepted {bad:?}, which the spec's parameters refuse"
            ));
        }
        let query_refused = c.body.is_none()
            && ((resp.status == 400 && code.as_deref() == Some("invalid_request"))
                || (resp.status == 422 && code.as_deref() == Some("invalid_value")));
        if query_refused && bad.is_empty() {
            f.push(format!(
                "the server refused the query {query:?}, yet the spec's parameters accept it"
            ));
        }
        f
    }

    /// The scenario's error table: each call must get its status and code.
    async fn expect_problem(&self, c: Call, status: u16, code: &str) {
        let resp = self.call(c).await;
        if resp.status != status || resp.code().as_deref() != Some(code) {
            self.fault(format!(
                "{}: expected {status} {code}, got {} {}",
                resp.request,
                resp.status,
                clip(&resp.body)
            ));
        }
    }
}

fn clip(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_string();
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// The concrete path for a template: `{id}` a session, `{name}` cat-dog-ship.
fn fill(template: &str, id: &str) -> String {
    template
        .replace("{id}", id)
        .replace("{name}", "cat-dog-ship")
}

// ---------------------------------------------------------------------------------------------
// The spec on its own

#[test]
fn spec_is_openapi_3_1_and_every_reference_and_example_holds() {
    let spec = Spec::load();
    let d = &spec.doc;
    assert!(
        d["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")),
        "openapi is {}, want 3.1.x",
        d["openapi"]
    );
    assert_eq!(d["info"]["version"], "0.1.0");
    assert_eq!(d["servers"], json!([{"url": "http://127.0.0.1:8080"}]));
    assert_eq!(
        d["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );

    let codes: Vec<&str> = d["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .expect("Problem.code has an enum")
        .iter()
        .map(|c| c.as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        codes.iter().copied().collect::<BTreeSet<_>>(),
        CONTRACT_CODES.into_iter().collect::<BTreeSet<_>>(),
        "Problem.code's enum is not the contract's codes"
    );

    let mut faults = Vec::new();
    // Every $ref points at something.
    fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if k == "$ref" {
                        out.push((at.to_string(), x.as_str().unwrap_or("").to_string()));
                    } else {
                        refs(x, &format!("{at}/{}", esc(k)), out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    refs(x, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(d, "", &mut all);
    assert!(
        all.len() > 50,
        "only {} $refs: did the spec load whole?",
        all.len()
    );
    for (at, r) in &all {
        if !r.starts_with("#/") || d.pointer(&r[1..]).is_none() {
            faults.push(format!("#{at}: $ref {r:?} points at nothing"));
        }
    }

    // Every schema compiles, and every example validates against its schema.
    for name in d["components"]["schemas"].as_object().unwrap().keys() {
        let ptr = format!("/components/schemas/{}", esc(name));
        if let Err(e) = spec.validator(&ptr) {
            faults.push(e);
        }
        for (i, ex) in spec.at(&ptr)["examples"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            for e in spec.schema_faults(&ptr, ex) {
                faults.push(format!("{name}'s example {i}: {e}"));
            }
        }
    }
    let mut operation_ids = BTreeSet::new();
    let mut examples = 0;
    for template in spec.templates() {
        let listed = spec.methods(&template);
        assert!(!listed.is_empty(), "{template} lists no method");
        for method in &listed {
            let op = Spec::op_pointer(&template, method);
            let id = spec.at(&op)["operationId"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if id.is_empty() || !operation_ids.insert(id.clone()) {
                faults.push(format!(
                    "{method} {template}: operationId {id:?} missing or repeated"
                ));
            }
            let mut media = Vec::new();
            if let Some(c) = spec.at(&op)["requestBody"]["content"].as_object() {
                media.extend(
                    c.keys()
                        .map(|k| format!("{op}/requestBody/content/{}", esc(k))),
                );
            }
            let responses = spec.at(&op)["responses"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if responses.is_empty() {
                faults.push(format!("{method} {template} lists no response"));
            }
            for status in responses.keys() {
                let (rptr, r) = spec.resolve(&format!("{op}/responses/{status}"));
                if r["description"].as_str().is_none_or(str::is_empty) {
                    faults.push(format!("{method} {template} {status}: no description"));
                }
                if let Some(c) = r["content"].as_object() {
                    media.extend(c.keys().map(|k| format!("{rptr}/content/{}", esc(k))));
                }
            }
            for m in media {
                let schema = format!("{m}/schema");
                if let Err(e) = spec.validator(&schema) {
                    faults.push(e);
                }
                let mut values: Vec<(String, Value)> = Vec::new();
                if let Some(ex) = spec.at(&m).get("example") {
                    values.push(("example".into(), ex.clone()));
                }
                for (name, ex) in spec.at(&m)["examples"].as_object().into_iter().flatten() {
                    values.push((name.clone(), ex["value"].clone()));
                }
                for (name, v) in values {
                    examples += 1;
                    for e in spec.schema_faults(&schema, &v) {
                        faults.push(format!("#{m}: example {name}: {e}"));
                    }
                }
            }
        }
    }
    assert!(examples >= 10, "only {examples} examples in the spec");
    assert!(faults.is_empty(), "openapi.yaml:\n{}", faults.join("\n"));
}

#[test]
fn spec_schemas_are_strict() {
    // A schema that let these through would not catch a server bug.
    let spec = Spec::load();
    let session = "/components/schemas/Session";
    let good = json!({
        "id": "7d1c3a52-5c2e-4a53-9f0e-2b8e6f1d9c40", "layers": [4, 3], "activation": "relu",
        "learning_rate": 0.0001, "grad_reduction": "sum", "bias": false,
        "init": {"method": "numpy_rand", "seed": 0}, "dataset": null, "epochs_trained": 0,
        "initial_loss": null, "last_loss": null, "created_at": "2026-11-27T10:00:00Z",
        "expires_at": null
    });
    assert_eq!(spec.schema_faults(session, &good), Vec::<String>::new());
    // (what, field, new value or None to remove it)
    let mutations = [
        ("an extra field", "extra", Some(json!(1))),
        ("a missing field", "last_loss", None),
        ("a null layer list", "layers", Some(Value::Null)),
        ("a negative loss", "last_loss", Some(json!(-0.5))),
        (
            "a loss written as a string",
            "initial_loss",
            Some(json!("NaN")),
        ),
        (
            "an upper-case id",
            "id",
            Some(json!("7D1C3A52-5C2E-4A53-9F0E-2B8E6F1D9C40")),
        ),
        (
            "a non-UTC time",
            "created_at",
            Some(json!("2026-11-27T10:00:00+01:00")),
        ),
        (
            "an explicit init with a seed",
            "init",
            Some(json!({"method": "explicit", "seed": 1})),
        ),
        (
            "a seed past 2^32-1",
            "init",
            Some(json!({"method": "he", "seed": 4294967296u64})),
        ),
        (
            "a seeded init without its seed",
            "init",
            Some(json!({"method": "xavier"})),
        ),
        (
            "a fractional epoch count",
            "epochs_trained",
            Some(json!(1.5)),
        ),
        ("an unknown activation", "activation", Some(json!("gelu"))),
        (
            "a dataset without builtin",
            "dataset",
            Some(json!({"samples": 6, "features": 4, "classes": 3})),
        ),
    ];
    for (what, field, value) in mutations {
        let mut bad = good.clone();
        let obj = bad.as_object_mut().unwrap();
        match value {
            Some(v) => obj.insert(field.to_string(), v),
            None => obj.remove(field),
        };
        assert!(
            !spec.schema_faults(session, &bad).is_empty(),
            "Session accepts {what}: {bad}"
        );
    }
    let problem = "/components/schemas/Problem422";
    let p = json!({"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
                   "code": "shape_mismatch", "detail": "sample 3 has 5 values; the input layer takes 4"});
    assert_eq!(spec.schema_faults(problem, &p), Vec::<String>::new());
    for (field, value) in [
        ("status", json!(400)),
        ("code", json!("invalid_json")),
        ("code", json!("oops")),
        ("detail", json!("")),
        ("type", json!("https://example.com/p")),
    ] {
        let mut bad = p.clone();
        bad[field] = value.clone();
        assert!(
            !spec.schema_faults(problem, &bad).is_empty(),
            "Problem422 accepts {field} = {value}"
        );
    }
    let labels = "/components/schemas/Labels";
    for (y, ok) in [
        (json!([0, 2, 1]), true),
        (json!([[1, 0, 0], [0.5, 0.5, 0]]), true),
        (json!([0, [1, 0, 0]]), false),
        (json!([0.5]), false),
        (json!([-1]), false),
    ] {
        assert_eq!(
            spec.schema_faults(labels, &y).is_empty(),
            ok,
            "Labels and {y}"
        );
    }
    let sample = "/components/schemas/Sample";
    for (x, ok) in [
        (json!([[56, 231], [24, 1]]), true),
        (json!(3.5), true),
        (json!([[[[1]]]]), true),
        (json!([[1, "2"]]), false),
        (json!([null]), false),
    ] {
        assert_eq!(
            spec.schema_faults(sample, &x).is_empty(),
            ok,
            "Sample and {x}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The route set

#[tokio::test]
async fn route_set_is_the_spec_paths() {
    let app = spawn(config()).await;
    let templates = app.spec.templates();
    for template in &templates {
        let listed = app.spec.methods(template);
        for method in METHODS {
            // A fresh session each time: DELETE must not take it from the next method.
            let id = if template.contains("{id}") {
                app.create(&json!({"layers": [4, 3], "init": {"seed": 0}}))
                    .await
            } else {
                String::new()
            };
            if template.ends_with("/training") {
                // The job resource exists once a background train was started.
                app.put(
                    format!("/sessions/{id}/dataset"),
                    &json!({"builtin": "cat-dog-ship"}),
                )
                .await
                .expect(200);
                app.post(
                    format!("/sessions/{id}/train"),
                    &json!({"epochs": 1, "wait": false}),
                )
                .await
                .expect(202);
            }
            let resp = app.call(Call::new(method, fill(template, &id))).await;
            if listed.contains(method) {
                assert!(
                    resp.status != 404 && resp.status != 405,
                    "{}: the spec lists {method} {template}, the server answered {} {}",
                    resp.request,
                    resp.status,
                    resp.body
                );
            } else {
                assert_eq!(
                    resp.status, 405,
                    "{}: the spec lists {listed:?} for {template}, so {method} must be 405",
                    resp.request
                );
            }
        }
    }
    // The request metrics label each request with its route, found from the spec's paths:
    // every path probed above is counted under its own template.
    let metrics = app.get("/metrics").await;
    metrics.expect(200);
    for template in &templates {
        let label = format!("route=\"{template}\"");
        assert!(
            metrics.body.contains(&label),
            "/metrics counts no request under {label}"
        );
    }
    // Paths that are not the spec's: the server must not route them either (each `conformance`
    // also checks against the spec path a probe falls under, if any).
    let id = app.create(&json!({"layers": [4, 3]})).await;
    for path in [
        "/index.html".to_string(),
        "/session".to_string(),
        format!("/sessions/{id}/history"),
        format!("/sessions/{id}/checks"),
        "/sessions/export".to_string(),
        format!("/sessions/{id}/"),
        "/sessions/".to_string(),
        "/healthz/".to_string(),
        format!("/sessions/{id}/weights/0"),
        "/datasets/cat-dog-ship/x".to_string(),
    ] {
        for method in METHODS {
            let resp = app.call(Call::new(method, path.clone())).await;
            if app.spec.template_of(&path).is_none() {
                assert_eq!(
                    resp.status, 404,
                    "{}: a route the spec does not have answered {} {}",
                    resp.request, resp.status, resp.body
                );
            }
        }
    }
    app.assert_conforms();
}

// ---------------------------------------------------------------------------------------------
// Real answers against the spec

/// The requestBody example `name` of an operation, as a request body.
fn example(spec: &Spec, template: &str, method: &str, name: &str) -> Value {
    let ptr = format!(
        "{}/requestBody/content/application~1json/examples/{}/value",
        Spec::op_pointer(template, method),
        esc(name)
    );
    spec.at(&ptr).clone()
}

#[tokio::test]
async fn a_notebook_session_answers_as_the_spec_says() {
    let app = spawn(config()).await;
    let spec = &app.spec;

    // The service and the datasets.
    assert_eq!(
        app.get("/healthz").await.expect(200),
        json!({"status": "ok"})
    );
    assert_eq!(
        app.get("/readyz").await.expect(200),
        json!({"status": "ready"})
    );
    let served = app.get("/openapi.yaml").await;
    served.expect(200);
    let file = std::fs::read_to_string(SPEC_PATH).unwrap();
    if let Some((n, (a, b))) = served
        .body
        .lines()
        .zip(file.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
    {
        panic!(
            "GET /openapi.yaml differs from openapi.yaml at line {}: {a:?} vs {b:?}",
            n + 1
        );
    }
    assert_eq!(
        served.body.len(),
        file.len(),
        "GET /openapi.yaml is not the openapi.yaml file"
    );
    let metrics = app.get("/metrics").await;
    metrics.expect(200);
    assert!(
        metrics.body.contains("backprop_http_requests_total"),
        "{}",
        metrics.body
    );
    let list = app.get("/datasets").await.expect(200);
    assert_eq!(list["datasets"].as_array().map(Vec::len), Some(2), "{list}");
    app.get("/datasets/cat-dog-ship").await.expect(200);
    app.get("/datasets/iris").await.expect(200);
    app.expect_problem(Call::new("GET", "/datasets/mnist"), 404, "not_found")
        .await;

    // Sessions from the spec's own examples, and the other init methods.
    let create = |name| example(spec, "/sessions", "post", name);
    let one = app.post("/sessions", &create("notebook-one-layer")).await;
    let s1 = one.expect(201);
    let s1_id = s1["id"].as_str().unwrap().to_string();
    assert_eq!(
        one.header("location"),
        Some(format!("/sessions/{s1_id}").as_str()),
        "Location names the new session"
    );
    assert_eq!(s1["init"], json!({"method": "numpy_rand", "seed": 0}));
    let s2 = app.create(&create("notebook-two-layer")).await;
    let explicit = app.create(&create("explicit")).await;
    let unseeded = app.create(&json!({"layers": [4, 3]})).await;
    let xavier = app
        .create(
            &json!({"layers": [4, 8, 3], "activation": "tanh", "grad_reduction": "mean",
                        "bias": true, "init": {"method": "xavier", "seed": 7}}),
        )
        .await;
    let he = app
        .create(&json!({"layers": [4, 3], "activation": "sigmoid", "init": {"method": "he"}}))
        .await;
    let plus_json = app
        .call(Call::new("POST", "/sessions").raw(
            Some("application/vnd.course+json; charset=utf-8"),
            r#"{"layers": [4, 3]}"#,
        ))
        .await;
    plus_json.expect(201);
    app.get(format!("/sessions/{unseeded}")).await.expect(200);

    // Data: built in, inline with one-hot rows, inline with class indices.
    let dataset = |name| example(spec, "/sessions/{id}/dataset", "put", name);
    let info = app
        .put(
            format!("/sessions/{s1_id}/dataset"),
            &dataset("cat-dog-ship"),
        )
        .await;
    assert_eq!(
        info.expect(200),
        json!({"samples": 6, "features": 4, "classes": 3, "builtin": "cat-dog-ship"})
    );
    app.put(
        format!("/sessions/{s2}/dataset"),
        &dataset("cat-dog-ship-inline"),
    )
    .await
    .expect(200);
    app.put(format!("/sessions/{he}/dataset"), &dataset("class-indices"))
        .await
        .expect(200);
    app.put(
        format!("/sessions/{xavier}/dataset"),
        &json!({"builtin": "iris"}),
    )
    .await
    .expect(200);
    app.put(
        format!("/sessions/{explicit}/dataset"),
        &json!({"x": [[1, 2], [3, 4]], "y": [0, 1]}),
    )
    .await
    .expect(200);
    // The CSV examples, on a [4, 3] session of their own.
    let csv_session = app.create(&json!({"layers": [4, 3]})).await;
    for name in ["cat-dog-ship", "indices"] {
        let ptr = format!(
            "{}/requestBody/content/text~1csv/examples/{name}/value",
            Spec::op_pointer("/sessions/{id}/dataset", "put")
        );
        let csv = spec.at(&ptr).as_str().expect("a CSV example is text");
        app.call(
            Call::new("PUT", format!("/sessions/{csv_session}/dataset")).raw(Some("text/csv"), csv),
        )
        .await
        .expect(200);
    }
    app.call(Call::new("DELETE", format!("/sessions/{csv_session}")))
        .await
        .expect(204);

    // Training.
    let train = |name| example(spec, "/sessions/{id}/train", "post", name);
    let r = app
        .post(format!("/sessions/{s1_id}/train"), &train("notebook"))
        .await
        .expect(200);
    assert_eq!(r["loss"].as_array().map(Vec::len), Some(100), "{r}");
    app.post(format!("/sessions/{s2}/train"), &train("notebook"))
        .await
        .expect(200);
    let quiet = app
        .post(format!("/sessions/{s2}/train"), &train("quiet"))
        .await
        .expect(200);
    assert!(
        quiet.get("loss").is_none(),
        "return_loss false still sent loss: {quiet}"
    );
    app.post(format!("/sessions/{explicit}/train"), &json!({"epochs": 5}))
        .await
        .expect(200);
    app.post(
        format!("/sessions/{xavier}/train"),
        &json!({"epochs": 3, "return_loss": true}),
    )
    .await
    .expect(200);
    let diverging = app
        .create(&json!({"layers": [4, 3], "learning_rate": 1e307, "init": {"seed": 0}}))
        .await;
    app.put(
        format!("/sessions/{diverging}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);
    let d = app
        .post(
            format!("/sessions/{diverging}/train"),
            &json!({"epochs": 5}),
        )
        .await
        .expect(200);
    assert_eq!(d["status"], "diverged", "{d}");
    app.get(format!("/sessions/{diverging}")).await.expect(200);

    // Background training: 202 and the job; one job at a time; followed, streamed, cancelled.
    // On sessions of their own, deleted after (the scenario counts its sessions later).
    let (short, long) = (
        app.create(&create("notebook-one-layer")).await,
        app.create(&create("notebook-two-layer")).await,
    );
    for id in [&short, &long] {
        app.put(format!("/sessions/{id}/dataset"), &dataset("cat-dog-ship"))
            .await
            .expect(200);
    }
    app.expect_problem(
        Call::new("GET", format!("/sessions/{long}/training")),
        404,
        "not_found",
    )
    .await;
    let small = app
        .post(
            format!("/sessions/{short}/train"),
            &json!({"epochs": 20, "wait": false}),
        )
        .await;
    let job = small.expect(202);
    assert_eq!(
        small.header("location"),
        Some(format!("/sessions/{short}/training").as_str()),
        "Location names the job"
    );
    assert_eq!(job["epochs_requested"], 20, "{job}");
    // The stream follows it to its end; then the job is done, with its losses.
    let events = app.get(format!("/sessions/{short}/events")).await;
    events.expect(200);
    assert!(
        events.body.contains("event: done\n"),
        "the stream of a 20-epoch job ends with done: {}",
        events.body
    );
    let done = app
        .get(format!("/sessions/{short}/training"))
        .await
        .expect(200);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["result"]["status"], "completed", "{done}");
    assert_eq!(done["result"]["loss"].as_array().map(Vec::len), Some(20));
    let bg = app
        .post(format!("/sessions/{long}/train"), &train("background"))
        .await;
    assert_eq!(bg.expect(202)["state"], "queued");
    app.expect_problem(
        Call::new("POST", format!("/sessions/{long}/train"))
            .json(&json!({"epochs": 5, "wait": false})),
        409,
        "conflict",
    )
    .await;
    app.get(format!("/sessions/{long}/training"))
        .await
        .expect(200);
    let stopped = app
        .call(Call::new("DELETE", format!("/sessions/{long}/training")))
        .await;
    if stopped.status == 202 {
        stopped.expect(202);
    } else {
        let j = stopped.expect(200);
        assert_eq!(j["result"]["status"], "cancelled", "{j}");
    }
    app.get(format!("/sessions/{long}/events"))
        .await
        .expect(200);
    app.get(format!("/sessions/{unseeded}/events"))
        .await
        .expect(200);
    for id in [&short, &long] {
        app.call(Call::new("DELETE", format!("/sessions/{id}")))
            .await
            .expect(204);
    }
    app.expect_problem(
        Call::new("DELETE", format!("/sessions/{unseeded}/training")),
        404,
        "not_found",
    )
    .await;
    let page = app.get("/").await;
    page.expect(200);
    assert!(page.body.contains("<canvas"), "the dashboard has no chart");
    app.get(format!("/sessions/{diverging}/loss"))
        .await
        .expect(200);

    // The history, as JSON and CSV, whole and in pages.
    for q in [
        "",
        "?offset=10&limit=5",
        "?format=json",
        "?format=csv",
        "?format=csv&offset=95&limit=3",
        "?format=text",
        "?format=text&offset=95&limit=3",
        "?offset=1000",
        "?limit=1000000&unknown=ignored",
    ] {
        app.get(format!("/sessions/{s1_id}/loss{q}"))
            .await
            .expect(200);
    }
    app.get(format!("/sessions/{unseeded}/loss"))
        .await
        .expect(200);
    app.get(format!("/sessions/{unseeded}/loss?format=csv"))
        .await
        .expect(200);
    // The chart, of a history and of none.
    for q in [
        "",
        "?log=true",
        "?log=false&width=1000&height=500",
        "?width=200&height=150",
    ] {
        app.get(format!("/sessions/{s1_id}/loss.svg{q}"))
            .await
            .expect(200);
    }
    app.get(format!("/sessions/{unseeded}/loss.svg?log=true"))
        .await
        .expect(200);

    // Weights: read, put back (a new history), with and without biases.
    let w = app
        .get(format!("/sessions/{s1_id}/weights"))
        .await
        .expect(200);
    assert_eq!(w["biases"], Value::Null);
    app.put(format!("/sessions/{s1_id}/weights"), &w)
        .await
        .expect(200);
    let after = app.get(format!("/sessions/{s1_id}")).await.expect(200);
    assert_eq!(
        after["epochs_trained"], 0,
        "PUT /weights starts a new history: {after}"
    );
    let wb = app
        .get(format!("/sessions/{explicit}/weights"))
        .await
        .expect(200);
    assert!(wb["biases"].is_array(), "a bias session's biases: {wb}");
    app.put(
        format!("/sessions/{explicit}/weights"),
        &json!({"weights": wb["weights"]}),
    )
    .await
    .expect(200);
    let weights = example(spec, "/sessions/{id}/weights", "put", "one-layer");
    app.put(format!("/sessions/{unseeded}/weights"), &weights)
        .await
        .expect(200);
    app.post(format!("/sessions/{s1_id}/train"), &json!({"epochs": 100}))
        .await
        .expect(200);

    // Predictions and gradients.
    let predict = |name| example(spec, "/sessions/{id}/predict", "post", name);
    let p = app
        .post(format!("/sessions/{s1_id}/predict"), &predict("classify"))
        .await
        .expect(200);
    assert!(
        p.get("loss").is_none() && p.get("accuracy").is_none(),
        "no y, yet: {p}"
    );
    let p = app
        .post(format!("/sessions/{s1_id}/predict"), &predict("score"))
        .await
        .expect(200);
    assert!(p["accuracy"].is_number(), "with y, no accuracy: {p}");
    app.post(
        format!("/sessions/{s2}/predict"),
        &json!({"x": [[[56, 231], [24, 1]]], "y": [[0.25, 0.5, 0.25]]}),
    )
    .await
    .expect(200);
    app.post(
        format!("/sessions/{explicit}/predict"),
        &json!({"x": [[1, 2]]}),
    )
    .await
    .expect(200);
    let grad = |name| example(spec, "/sessions/{id}/gradients", "post", name);
    app.call(Call::new("POST", format!("/sessions/{s1_id}/gradients")))
        .await
        .expect(200);
    app.call(Call::new("POST", format!("/sessions/{s1_id}/gradients")).raw(Some("text/plain"), ""))
        .await
        .expect(200);
    app.post(format!("/sessions/{s1_id}/gradients"), &grad("dataset"))
        .await
        .expect(200);
    app.post(format!("/sessions/{unseeded}/gradients"), &grad("batch"))
        .await
        .expect(200);
    let g = app
        .post(format!("/sessions/{explicit}/gradients"), &json!({}))
        .await
        .expect(200);
    assert!(
        g["biases"].is_array(),
        "a bias session's bias gradients: {g}"
    );

    // The list of sessions.
    let all = app.get("/sessions").await.expect(200);
    assert_eq!(all["total"], 8, "{all}");
    app.get("/sessions?offset=1&limit=2").await.expect(200);
    app.get("/sessions?offset=1000").await.expect(200);
    app.get("/sessions?limit=1000").await.expect(200);

    // Deleting.
    let gone = app.create(&json!({"layers": [4, 3]})).await;
    app.call(Call::new("DELETE", format!("/sessions/{gone}")))
        .await
        .expect(204);
    app.expect_problem(
        Call::new("GET", format!("/sessions/{gone}")),
        404,
        "not_found",
    )
    .await;
    app.expect_problem(
        Call::new("DELETE", format!("/sessions/{gone}")),
        404,
        "not_found",
    )
    .await;

    grading(&app, &s1_id, &s2, &explicit, &unseeded, &xavier).await;
    errors(&app, &s1_id, &unseeded).await;
    app.assert_conforms();
}

/// The grading routes. `s1` is [4, 3] on cat-dog-ship, `s2` [4, 4, 3] on it, `explicit` a
/// [2, 2] bias session, `seed0` a [4, 3] session without data holding the notebook's seed-0
/// weights, `iris` a [4, 8, 3] session on iris (150 samples).
async fn grading(app: &App, s1: &str, s2: &str, explicit: &str, seed0: &str, iris: &str) {
    let spec = &app.spec;
    let v = app.get("/version").await.expect(200);
    assert_eq!(
        v["version"], spec.doc["info"]["version"],
        "info.version is the server's"
    );

    app.call(Call::new("POST", format!("/sessions/{s1}/gradcheck")))
        .await
        .expect(200);
    let step = example(spec, "/sessions/{id}/gradcheck", "post", "step");
    let g = app
        .post(format!("/sessions/{s2}/gradcheck"), &step)
        .await
        .expect(200);
    assert_eq!(g["layers"].as_array().map(Vec::len), Some(2), "{g}");
    let trace = |name| example(spec, "/sessions/{id}/trace", "post", name);
    app.post(format!("/sessions/{s1}/trace"), &trace("dataset"))
        .await
        .expect(200);
    app.post(format!("/sessions/{s2}/trace"), &trace("batch"))
        .await
        .expect(200);
    let t = app
        .call(Call::new("POST", format!("/sessions/{explicit}/trace")))
        .await
        .expect(200);
    assert!(t["layers"][0]["bias_gradient"].is_array(), "{t}");

    // check: each item against what the server itself reports passes.
    let check = format!("/sessions/{s1}/check");
    let w = app.get(format!("/sessions/{s1}/weights")).await.expect(200);
    let grads = app
        .post(format!("/sessions/{s1}/gradients"), &json!({}))
        .await
        .expect(200);
    let loss = app.get(format!("/sessions/{s1}/loss")).await.expect(200);
    let x = app.get("/datasets/cat-dog-ship").await.expect(200)["x"].clone();
    let probs = app
        .post(format!("/sessions/{s1}/predict"), &json!({"x": x}))
        .await
        .expect(200);
    for body in [
        json!({"weights": w["weights"]}),
        json!({"gradients": {"weights": grads["weights"]}, "rtol": 1e-12}),
        json!({"loss": loss["loss"], "atol": 0}),
        json!({"probabilities": probs["probabilities"], "weights": w["weights"]}),
    ] {
        let r = app.post(&check, &body).await.expect(200);
        assert_eq!(r["pass"], true, "{body} against itself: {r}");
    }
    let r = app
        .post(&check, &json!({"weights": [[[1, 2]]], "loss": [1.0]}))
        .await
        .expect(200);
    assert_eq!(
        r["items"]["weights"]["rel_error"],
        Value::Null,
        "a shape mismatch: {r}"
    );
    let ex = |name| example(spec, "/sessions/{id}/check", "post", name);
    let r = app
        .post(format!("/sessions/{seed0}/check"), &ex("weights"))
        .await
        .expect(200);
    assert_eq!(
        r["pass"], true,
        "the example's weights are np.random.seed(0)'s: {r}"
    );
    app.post(&check, &ex("loss")).await.expect(200);
    app.post(format!("/sessions/{seed0}/check"), &json!({"loss": []}))
        .await
        .expect(200);
    let gb = app
        .post(format!("/sessions/{explicit}/gradients"), &json!({}))
        .await
        .expect(200);
    let r = app
        .post(
            format!("/sessions/{explicit}/check"),
            &json!({"gradients": {"weights": gb["weights"], "biases": gb["biases"]}}),
        )
        .await
        .expect(200);
    assert_eq!(r["pass"], true, "{r}");

    // export -> import gives the same document; fork copies.
    for id in [s1, s2, explicit, seed0, iris] {
        let doc = app.get(format!("/sessions/{id}/export")).await.expect(200);
        let copy = app.post("/sessions/import", &doc).await.expect(201);
        let again = app
            .get(format!("/sessions/{}/export", copy["id"].as_str().unwrap()))
            .await;
        assert!(
            again.expect(200) == doc,
            "export -> import -> export changed session {id}"
        );
    }
    let import = |name| example(spec, "/sessions/import", "post", name);
    app.post("/sessions/import", &import("minimal"))
        .await
        .expect(201);
    app.post("/sessions/import", &import("trained"))
        .await
        .expect(201);
    app.call(Call::new("POST", format!("/sessions/{s1}/fork")))
        .await
        .expect(201);
}

/// A dozen ways (and more) to be refused; `s1` is a [4, 3] session on cat-dog-ship, `bare` a
/// [4, 3] session that must stay without a dataset.
async fn errors(app: &App, s1: &str, bare: &str) {
    let post = |p: &str, b: &str| Call::new("POST", p).raw(Some("application/json"), b);
    let put = |p: &str, b: &str| Call::new("PUT", p).raw(Some("application/json"), b);
    let sessions = "/sessions";
    let ds = format!("/sessions/{bare}/dataset");
    let train = format!("/sessions/{s1}/train");
    let predict = format!("/sessions/{s1}/predict");
    let grads = format!("/sessions/{s1}/gradients");
    let weights = format!("/sessions/{s1}/weights");
    let w43 = r#"[[[1,2,3,4],[1,2,3,4],[1,2,3,4]]]"#;
    let mut cases: Vec<(Call, u16, &str)> = vec![
        // Not JSON, or not a JSON body at all.
        (
            Call::new("POST", sessions).raw(Some("text/plain"), r#"{"layers":[4,3]}"#),
            415,
            "unsupported_media_type",
        ),
        (
            Call::new("POST", sessions).raw(None, r#"{"layers":[4,3]}"#),
            415,
            "unsupported_media_type",
        ),
        (post(sessions, r#"{"layers": [4, 3]"#), 400, "invalid_json"),
        (
            post(sessions, r#"{"layers": [4, 3], "learning_rate": 1e400}"#),
            400,
            "invalid_json",
        ),
        (post(sessions, ""), 400, "invalid_json"),
        (Call::new("POST", sessions), 400, "invalid_json"),
        // JSON of the wrong form.
        (
            post(sessions, r#"{"layers": [4, 3], "activaton": "relu"}"#),
            400,
            "invalid_request",
        ),
        (
            post(sessions, r#"{"layers": "4,3"}"#),
            400,
            "invalid_request",
        ),
        (post(sessions, r#"{}"#), 400, "invalid_request"),
        (post(sessions, r#"[4, 3]"#), 400, "invalid_request"),
        (
            post(sessions, r#"{"layers": [4, 3], "activation": "softplus"}"#),
            400,
            "invalid_request",
        ),
        (
            post(sessions, r#"{"layers": [4, 3], "bias": 1}"#),
            400,
            "invalid_request",
        ),
        (
            post(
                sessions,
                r#"{"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 1, "sed": 2}}"#,
            ),
            400,
            "invalid_request",
        ),
        (
            post(
                sessions,
                &format!(
                    r#"{{"layers": [4, 3], "init": {{"method": "explicit", "seed": 1, "weights": {w43}}}}}"#
                ),
            ),
            400,
            "invalid_request",
        ),
        (
            post(
                sessions,
                &format!(
                    r#"{{"layers": [4, 3], "init": {{"method": "xavier", "weights": {w43}}}}}"#
                ),
            ),
            400,
            "invalid_request",
        ),
        (
            post(
                sessions,
                r#"{"layers": [4, 3], "init": {"method": "explicit"}}"#,
            ),
            400,
            "invalid_request",
        ),
        // Numbers out of range, shapes that do not fit, too much.
        (post(sessions, r#"{"layers": [4]}"#), 422, "invalid_value"),
        (
            post(sessions, r#"{"layers": [4, 3, 3, 3, 3, 3, 3, 3, 3, 3]}"#),
            422,
            "invalid_value",
        ),
        (
            post(sessions, r#"{"layers": [4, 0]}"#),
            422,
            "invalid_value",
        ),
        (
            post(sessions, r#"{"layers": [4, -3]}"#),
            422,
            "invalid_value",
        ),
        (
            post(sessions, r#"{"layers": [4, 3], "learning_rate": 0}"#),
            422,
            "invalid_value",
        ),
        (
            post(sessions, r#"{"layers": [4, 3], "init": {"seed": -1}}"#),
            422,
            "invalid_value",
        ),
        (
            post(
                sessions,
                r#"{"layers": [4, 3], "init": {"seed": 4294967296}}"#,
            ),
            422,
            "invalid_value",
        ),
        (
            post(sessions, r#"{"layers": [100000, 100000, 100000]}"#),
            422,
            "too_large",
        ),
        (
            post(
                sessions,
                r#"{"layers": [4, 3], "init": {"method": "explicit", "weights": [[[1, 2], [3, 4]]]}}"#,
            ),
            422,
            "shape_mismatch",
        ),
        (
            post(
                sessions,
                &format!(
                    r#"{{"layers": [4, 3], "init": {{"method": "explicit", "weights": {w43}, "biases": [[0, 0, 0]]}}}}"#
                ),
            ),
            422,
            "shape_mismatch",
        ),
        // Unknown sessions, datasets and routes.
        (
            Call::new("GET", format!("/sessions/{UNKNOWN_ID}")),
            404,
            "not_found",
        ),
        (Call::new("GET", "/sessions/not-a-uuid"), 404, "not_found"),
        (
            Call::new("GET", format!("/sessions/{UNKNOWN_ID}/loss")),
            404,
            "not_found",
        ),
        (
            Call::new("GET", format!("/sessions/{UNKNOWN_ID}/weights")),
            404,
            "not_found",
        ),
        (
            post(&format!("/sessions/{UNKNOWN_ID}/train"), r#"{"epochs": 1}"#),
            404,
            "not_found",
        ),
        (
            post(
                &format!("/sessions/{UNKNOWN_ID}/predict"),
                r#"{"x": [[1, 2, 3, 4]]}"#,
            ),
            404,
            "not_found",
        ),
        (
            Call::new("POST", format!("/sessions/{UNKNOWN_ID}/gradients")),
            404,
            "not_found",
        ),
        (
            put(
                &format!("/sessions/{UNKNOWN_ID}/dataset"),
                r#"{"builtin": "iris"}"#,
            ),
            404,
            "not_found",
        ),
        (
            put(
                &format!("/sessions/{UNKNOWN_ID}/weights"),
                &format!(r#"{{"weights": {w43}}}"#),
            ),
            404,
            "not_found",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/")),
            404,
            "not_found",
        ),
        (Call::new("PATCH", sessions), 405, "method_not_allowed"),
        (Call::new("POST", "/healthz"), 405, "method_not_allowed"),
        // The dataset.
        (
            put(&ds, r#"{"x": [[1, 2, 3, 4, 5]], "y": [0]}"#),
            422,
            "shape_mismatch",
        ),
        (
            put(&ds, r#"{"x": [[1, 2, 3, 4], [1, 2, 3]], "y": [0, 1]}"#),
            422,
            "shape_mismatch",
        ),
        (
            put(
                &ds,
                r#"{"x": [[[1, 2], [3, 4]], [1, 2, 3, 4]], "y": [0, 1]}"#,
            ),
            422,
            "shape_mismatch",
        ),
        (
            put(&ds, r#"{"x": [[[[[[[[[[1, 2, 3, 4]]]]]]]]]], "y": [0]}"#),
            422,
            "shape_mismatch",
        ),
        (put(&ds, r#"{"x": [], "y": []}"#), 422, "shape_mismatch"),
        (
            put(&ds, r#"{"x": [[1, 2, 3, 4]], "y": [0, 1]}"#),
            422,
            "shape_mismatch",
        ),
        (
            put(&ds, r#"{"x": [[1, 2, 3, 4]], "y": [[1, 0]]}"#),
            422,
            "shape_mismatch",
        ),
        (
            put(&ds, r#"{"x": [[1, 2, 3, 4]], "y": [3]}"#),
            422,
            "invalid_labels",
        ),
        (
            put(
                &ds,
                r#"{"x": [[1, 2, 3, 4], [1, 2, 3, 4]], "y": [0, [1, 0, 0]]}"#,
            ),
            422,
            "invalid_labels",
        ),
        (
            put(&ds, r#"{"x": [[1, 2, 3, 4]], "y": [[0.5, 0.2, 0.2]]}"#),
            422,
            "invalid_labels",
        ),
        (put(&ds, r#"{"builtin": "mnist"}"#), 404, "not_found"),
        (
            put(&ds, r#"{"builtin": "cat-dog-ship", "x": [[1, 2, 3, 4]]}"#),
            400,
            "invalid_request",
        ),
        (put(&ds, r#"{"x": [[1, 2, 3, 4]]}"#), 400, "invalid_request"),
        (put(&ds, r#"{"y": [0]}"#), 400, "invalid_request"),
        (put(&ds, r#"{}"#), 400, "invalid_request"),
        (
            put(&ds, r#"{"x": [[1, 2, 3, "4"]], "y": [0]}"#),
            400,
            "invalid_request",
        ),
        (
            put(&ds, r#"{"x": [[1, 2, 3, 4]], "y": [0], "z": 1}"#),
            400,
            "invalid_request",
        ),
        // Training.
        (
            post(&format!("/sessions/{bare}/train"), r#"{"epochs": 1}"#),
            409,
            "no_dataset",
        ),
        (
            Call::new("POST", format!("/sessions/{bare}/gradients")),
            409,
            "no_dataset",
        ),
        (post(&train, r#"{"epochs": 0}"#), 422, "invalid_value"),
        (post(&train, r#"{"epochs": -5}"#), 422, "invalid_value"),
        (post(&train, r#"{"epochs": 1000001}"#), 422, "invalid_value"),
        (post(&train, r#"{"epochs": "10"}"#), 400, "invalid_request"),
        (
            post(&train, r#"{"epochs": 10, "return_loss": "no"}"#),
            400,
            "invalid_request",
        ),
        (post(&train, r#"{"epoch": 10}"#), 400, "invalid_request"),
        (
            Call::new("POST", &train).raw(Some("text/plain"), ""),
            400,
            "invalid_json",
        ),
        // Predictions and gradients.
        (post(&predict, r#"{"x": []}"#), 422, "shape_mismatch"),
        (
            post(&predict, r#"{"x": [[1, 2, 3]]}"#),
            422,
            "shape_mismatch",
        ),
        (
            post(&predict, r#"{"x": [[1, 2, 3, 4]], "y": [7]}"#),
            422,
            "invalid_labels",
        ),
        (
            post(&predict, r#"{"x": [[1e308, 1e308, 1e308, 1e308]]}"#),
            422,
            "non_finite_result",
        ),
        (post(&predict, r#"{"y": [0]}"#), 400, "invalid_request"),
        (post(&predict, r#"{}"#), 400, "invalid_request"),
        (
            post(&grads, r#"{"x": [[1, 2, 3, 4]]}"#),
            400,
            "invalid_request",
        ),
        (post(&grads, r#"{"y": [0]}"#), 400, "invalid_request"),
        (
            post(&grads, r#"{"x": [[1, 2, 3, 4]], "y": [0], "z": 1}"#),
            400,
            "invalid_request",
        ),
        (
            post(&grads, r#"{"x": [[1e308, 1e308, 1e308, 1e308]], "y": [0]}"#),
            422,
            "non_finite_result",
        ),
        (
            post(&grads, r#"{"x": [[1, 2, 3, 4]], "y": [0, 1]}"#),
            422,
            "shape_mismatch",
        ),
        (
            Call::new("POST", &grads).raw(Some("text/plain"), "{}"),
            415,
            "unsupported_media_type",
        ),
        // Weights.
        (
            put(&weights, r#"{"weights": [[[1, 2], [3, 4]]]}"#),
            422,
            "shape_mismatch",
        ),
        (
            put(
                &weights,
                &format!(r#"{{"weights": {w43}, "biases": [[0, 0, 0]]}}"#),
            ),
            422,
            "shape_mismatch",
        ),
        (put(&weights, r#"{"biases": null}"#), 400, "invalid_request"),
        (
            put(&weights, &format!(r#"{{"weights": {w43}, "extra": 1}}"#)),
            400,
            "invalid_request",
        ),
        (
            put(&weights, r#"{"weights": [[[1, 2, 3, "4"]]]}"#),
            400,
            "invalid_request",
        ),
        // Query parameters.
        (
            Call::new("GET", format!("/sessions/{s1}/loss?format=xml")),
            400,
            "invalid_request",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss?limit=abc")),
            400,
            "invalid_request",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss?limit=1.5")),
            400,
            "invalid_request",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss?limit=0")),
            422,
            "invalid_value",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss?offset=-1")),
            422,
            "invalid_value",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss?limit=1000001")),
            422,
            "invalid_value",
        ),
        (
            Call::new("GET", "/sessions?limit=5000"),
            422,
            "invalid_value",
        ),
        // Files: CSV and NPZ faults, and a content type no dataset has.
        (
            Call::new("PUT", &ds).raw(Some("text/csv"), "1,2,3,4,0\n1,x,3,4,1\n"),
            400,
            "invalid_request",
        ),
        (
            Call::new("PUT", &ds).raw(Some("text/csv; charset=utf-8"), "1,2,3,0\n"),
            422,
            "shape_mismatch",
        ),
        (
            Call::new("PUT", &ds).raw(Some("text/csv"), "1,2,3,4,7\n"),
            422,
            "invalid_labels",
        ),
        (
            Call::new("PUT", &ds).raw(Some("application/x-npz"), "not a zip"),
            400,
            "invalid_request",
        ),
        (
            Call::new("PUT", &ds).raw(Some("text/plain"), "1,2,3,4,0\n"),
            415,
            "unsupported_media_type",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss.svg?log=yes")),
            400,
            "invalid_request",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss.svg?width=wide")),
            400,
            "invalid_request",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss.svg?width=199")),
            422,
            "invalid_value",
        ),
        (
            Call::new("GET", format!("/sessions/{s1}/loss.svg?height=4001")),
            422,
            "invalid_value",
        ),
        (
            Call::new("GET", format!("/sessions/{UNKNOWN_ID}/loss.svg")),
            404,
            "not_found",
        ),
        (Call::new("GET", "/sessions?limit=0"), 422, "invalid_value"),
        (
            Call::new("GET", "/sessions?offset=x"),
            400,
            "invalid_request",
        ),
    ];
    // Grading.
    let big = app.create(&json!({"layers": [4, 500, 3]})).await;
    app.put(
        format!("/sessions/{big}/dataset"),
        &json!({"builtin": "iris"}),
    )
    .await
    .expect(200);
    let iris = app.create(&json!({"layers": [4, 3]})).await;
    app.put(
        format!("/sessions/{iris}/dataset"),
        &json!({"builtin": "iris"}),
    )
    .await
    .expect(200);
    let check = format!("/sessions/{s1}/check");
    let many = json!({"x": vec![[1, 2, 3, 4]; 65], "y": vec![0; 65]}).to_string();
    let import = "/sessions/import";
    let doc = |extra: &str| {
        format!(
            r#"{{"format": "backprop-server/session-v1", "layers": [4, 3], "weights": {w43}{extra}}}"#
        )
    };
    cases.extend([
        (post(&check, "{}"), 400, "invalid_request"),
        (post(&check, r#"{"weights": null}"#), 400, "invalid_request"),
        (
            post(&check, r#"{"weigths": [[[1]]]}"#),
            400,
            "invalid_request",
        ),
        (
            post(&check, r#"{"weights": [[[1]]], "rtol": "1e-7"}"#),
            400,
            "invalid_request",
        ),
        (
            post(&check, r#"{"gradients": {"weights": [[[1]]], "extra": 1}}"#),
            400,
            "invalid_request",
        ),
        (
            post(&check, r#"{"weights": [[[1]]], "rtol": -1}"#),
            422,
            "invalid_value",
        ),
        (
            post(&check, r#"{"weights": [[[1]]], "atol": -0.5}"#),
            422,
            "invalid_value",
        ),
        (
            post(
                &format!("/sessions/{bare}/check"),
                r#"{"gradients": {"weights": [[[1]]]}}"#,
            ),
            409,
            "no_dataset",
        ),
        (
            post(
                &format!("/sessions/{bare}/check"),
                r#"{"probabilities": [[1]]}"#,
            ),
            409,
            "no_dataset",
        ),
        (
            Call::new("POST", &check).raw(Some("text/plain"), r#"{"loss": []}"#),
            415,
            "unsupported_media_type",
        ),
        (
            post(&format!("/sessions/{s1}/gradcheck"), r#"{"h": 0}"#),
            422,
            "invalid_value",
        ),
        (
            post(&format!("/sessions/{s1}/gradcheck"), r#"{"h": 2}"#),
            422,
            "invalid_value",
        ),
        (
            post(&format!("/sessions/{s1}/gradcheck"), r#"{"h": "1e-5"}"#),
            400,
            "invalid_request",
        ),
        (
            post(&format!("/sessions/{s1}/gradcheck"), r#"{"step": 1e-5}"#),
            400,
            "invalid_request",
        ),
        (
            post(&format!("/sessions/{s1}/gradcheck"), r#"{"h": "#),
            400,
            "invalid_json",
        ),
        (
            Call::new("POST", format!("/sessions/{bare}/gradcheck")),
            409,
            "no_dataset",
        ),
        (
            Call::new("POST", format!("/sessions/{big}/gradcheck")),
            422,
            "too_large",
        ),
        (
            Call::new("POST", format!("/sessions/{UNKNOWN_ID}/gradcheck")),
            404,
            "not_found",
        ),
        (
            Call::new("POST", format!("/sessions/{bare}/trace")),
            409,
            "no_dataset",
        ),
        (
            Call::new("POST", format!("/sessions/{iris}/trace")),
            422,
            "too_large",
        ),
        (
            post(&format!("/sessions/{s1}/trace"), &many),
            422,
            "too_large",
        ),
        (
            post(
                &format!("/sessions/{s1}/trace"),
                r#"{"x": [[1, 2, 3]], "y": [0]}"#,
            ),
            422,
            "shape_mismatch",
        ),
        (
            post(&format!("/sessions/{s1}/trace"), r#"{"x": [[1, 2, 3, 4]]}"#),
            400,
            "invalid_request",
        ),
        (
            Call::new("POST", format!("/sessions/{s1}/trace")).raw(Some("text/plain"), "{}"),
            415,
            "unsupported_media_type",
        ),
        (
            Call::new("GET", format!("/sessions/{UNKNOWN_ID}/export")),
            404,
            "not_found",
        ),
        (post(import, "{}"), 400, "invalid_request"),
        (
            post(import, &doc("").replace("session-v1", "session-v0")),
            400,
            "invalid_request",
        ),
        (
            post(
                import,
                r#"{"format": "backprop-server/session-v1", "layers": [4, 3]}"#,
            ),
            400,
            "invalid_request",
        ),
        (
            post(import, &doc(r#", "init": {"method": "xavier"}"#)),
            400,
            "invalid_request",
        ),
        (
            post(
                import,
                &doc(r#", "init": {"method": "explicit", "seed": 3}"#),
            ),
            400,
            "invalid_request",
        ),
        (
            post(import, &doc(r#", "dataset": {"x": [[1, 2, 3, 4]]}"#)),
            400,
            "invalid_request",
        ),
        (
            post(
                import,
                &doc(r#", "dataset": {"builtin": "iris", "y": [0]}"#),
            ),
            400,
            "invalid_request",
        ),
        (
            post(import, &doc(r#", "history": []"#)),
            400,
            "invalid_request",
        ),
        (
            post(import, &doc(r#", "dataset": {"builtin": "mnist"}"#)),
            404,
            "not_found",
        ),
        (
            post(import, &doc(r#", "loss": [1.0]"#)),
            422,
            "invalid_value",
        ),
        (
            post(import, &doc(r#", "loss": [-1.0], "initial_loss": 1.0"#)),
            422,
            "invalid_value",
        ),
        (
            post(
                import,
                &doc(r#", "dataset": {"x": [[1, 2, 3, 4]], "y": [5]}"#),
            ),
            422,
            "invalid_labels",
        ),
        (
            post(
                import,
                &doc(r#", "dataset": {"builtin": "cat-dog-ship", "x": [[1, 2, 3, 4]], "y": [0]}"#),
            ),
            422,
            "invalid_value",
        ),
        (
            post(
                import,
                &doc(r#", "dataset": {"sample_shape": [3], "x": [[1, 2, 3, 4]], "y": [0]}"#),
            ),
            422,
            "shape_mismatch",
        ),
        (
            post(import, &doc("").replace("[4, 3]", "[4, 2]")),
            422,
            "shape_mismatch",
        ),
        (
            post(import, &doc("").replace("[4, 3]", "[4]")),
            422,
            "invalid_value",
        ),
        (
            Call::new("POST", import).raw(Some("text/plain"), &doc("")),
            415,
            "unsupported_media_type",
        ),
        (
            Call::new("POST", format!("/sessions/{s1}/fork")).raw(Some("application/json"), "{}"),
            400,
            "invalid_request",
        ),
        (
            Call::new("POST", format!("/sessions/{UNKNOWN_ID}/fork")),
            404,
            "not_found",
        ),
        (Call::new("POST", "/version"), 405, "method_not_allowed"),
        (Call::new("GET", import), 405, "method_not_allowed"),
    ]);
    // JSON Schema's integers, which the server takes as the spec says: `4.0`, `1e3` and
    // `2e0` are integers; `4.5` is not (400), `1e12` is one out of range (422).
    cases.push((
        post(sessions, r#"{"layers": [4.5, 3]}"#),
        400,
        "invalid_request",
    ));
    cases.push((
        post(sessions, r#"{"layers": [4, 3], "init": {"seed": 1e12}}"#),
        422,
        "invalid_value",
    ));
    cases.push((post(&train, r#"{"epochs": 2.5}"#), 400, "invalid_request"));
    cases.push((
        put(&ds, r#"{"x": [[1, 2, 3, 4]], "y": [0.5]}"#),
        400,
        "invalid_request",
    ));
    let whole = app
        .call(post(
            sessions,
            r#"{"layers": [4.0, 3e0], "init": {"method": "numpy_rand", "seed": 1e3}}"#,
        ))
        .await
        .expect(201);
    assert_eq!(whole["layers"], json!([4, 3]), "layers [4.0, 3e0]: {whole}");
    assert_eq!(whole["init"]["seed"], 1000, "seed 1e3: {whole}");
    let w = whole["id"].as_str().unwrap();
    let put_ds = app
        .call(put(
            &format!("/sessions/{w}/dataset"),
            r#"{"x": [[1, 2, 3, 4], [4, 3, 2, 1]], "y": [1.0, 2e0]}"#,
        ))
        .await
        .expect(200);
    assert_eq!(
        put_ds["samples"], 2,
        "y [1.0, 2e0] as class indices: {put_ds}"
    );
    let run = app
        .call(post(&format!("/sessions/{w}/train"), r#"{"epochs": 3.0}"#))
        .await
        .expect(200);
    assert_eq!(run["epochs_run"], 3, "epochs 3.0: {run}");
    let page = app
        .get(format!("/sessions/{w}/loss?offset=1.0&limit=1e0"))
        .await
        .expect(200);
    assert_eq!(
        (&page["offset"], page["loss"].as_array().map(Vec::len)),
        (&json!(1), Some(1)),
        "offset=1.0&limit=1e0: {page}"
    );
    // `null` for an optional field is the field absent; the spec says so (nullable), and
    // every body here must fit its request schema.
    let nulls = [
        (
            "POST",
            sessions.to_string(),
            r#"{"layers": [4, 3], "activation": null, "learning_rate": null,
                "grad_reduction": null, "bias": null, "init": {"method": null, "seed": null}}"#,
            201,
        ),
        (
            "POST",
            sessions.to_string(),
            r#"{"layers": [4, 3], "init": null}"#,
            201,
        ),
        (
            "PUT",
            format!("/sessions/{w}/dataset"),
            r#"{"x": [[1, 2, 3, 4]], "y": [1], "builtin": null}"#,
            200,
        ),
        (
            "POST",
            format!("/sessions/{w}/train"),
            r#"{"epochs": 1, "return_loss": null}"#,
            200,
        ),
        (
            "POST",
            format!("/sessions/{w}/predict"),
            r#"{"x": [[1, 2, 3, 4]], "y": null}"#,
            200,
        ),
        (
            "POST",
            format!("/sessions/{w}/gradients"),
            r#"{"x": null, "y": null}"#,
            200,
        ),
        (
            "POST",
            format!("/sessions/{w}/check"),
            r#"{"loss": [1.0], "weights": null, "rtol": null, "atol": null,
                "gradients": {"weights": null, "biases": null}}"#,
            200,
        ),
        (
            "POST",
            format!("/sessions/{w}/gradcheck"),
            r#"{"h": null}"#,
            200,
        ),
        (
            "POST",
            format!("/sessions/{w}/trace"),
            r#"{"x": null, "y": null}"#,
            200,
        ),
    ];
    for (method, path, body, status) in nulls {
        app.call(Call::new(method, path).raw(Some("application/json"), body))
            .await
            .expect(status);
    }
    for (call, status, code) in cases {
        app.expect_problem(call, status, code).await;
    }
    // Nothing above may have given `bare` a dataset or `s1` another history.
    let bare_now = app.get(format!("/sessions/{bare}")).await.expect(200);
    assert_eq!(
        bare_now["dataset"],
        Value::Null,
        "a refused PUT /dataset changed {bare}"
    );
}

// ---------------------------------------------------------------------------------------------
// Token, limits and the time limit

#[tokio::test]
async fn a_server_with_a_token_and_small_limits_answers_as_the_spec_says() {
    let app = spawn(Config {
        token: Some("s3cret".into()),
        max_body_bytes: 4096,
        max_sessions: 2,
        max_history: 10,
        max_epochs: 50,
        train_time_limit_secs: 1e-6,
        // Sessions expire: `expires_at` is a time, not null.
        session_ttl_secs: 3600,
        workers: 2,
        ..Config::default()
    })
    .await;
    let spec = &app.spec;

    // Without the token, every operation but the two open ones is 401 (checked before the
    // route, so the session need not exist); with it, routing goes on.
    for template in spec.templates() {
        for method in spec.methods(&template) {
            let op = Spec::op_pointer(&template, &method);
            let open = spec.at(&op).get("security") == Some(&json!([]));
            let path = fill(&template, UNKNOWN_ID);
            for auth in [None, Some("Bearer wrong"), Some("Basic czNjcmV0")] {
                let method_name: &'static str = METHODS
                    .into_iter()
                    .find(|m| *m == method)
                    .expect("a probed method");
                let resp = app
                    .call(Call {
                        auth: auth.map(str::to_string),
                        no_auth: true,
                        ..Call::new(method_name, path.clone())
                    })
                    .await;
                if open {
                    assert_eq!(
                        resp.status, 200,
                        "{}: an open route wants a token",
                        resp.request
                    );
                } else {
                    assert_eq!(
                        resp.status, 401,
                        "{}: no token, yet {}",
                        resp.request, resp.status
                    );
                    assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
                }
            }
        }
    }
    app.expect_problem(
        Call {
            no_auth: true,
            ..Call::new("GET", "/no/such/route")
        },
        401,
        "unauthorized",
    )
    .await;

    let s = app
        .create(&json!({"layers": [4, 3], "init": {"seed": 1}}))
        .await;
    let with_ttl = app.get(format!("/sessions/{s}")).await.expect(200);
    assert!(with_ttl["expires_at"].is_string(), "{with_ttl}");
    app.put(
        format!("/sessions/{s}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);
    // A microsecond of training time: the run stops at the first epoch boundary.
    let t = app
        .post(format!("/sessions/{s}/train"), &json!({"epochs": 5}))
        .await
        .expect(200);
    assert_eq!(t["status"], "time_limit", "{t}");
    app.get(format!("/sessions/{s}/loss?format=csv"))
        .await
        .expect(200);

    let big = json!({"x": vec![[1.5, 2.5, 3.5, 4.5]; 400], "y": vec![0; 400]}).to_string();
    assert!(big.len() > 4096);
    let ds = format!("/sessions/{s}/dataset");
    let cases: Vec<(Call, u16, &str)> = vec![
        (
            Call::new("PUT", &ds).raw(Some("application/json"), &big),
            413,
            "body_too_large",
        ),
        (
            Call::new("POST", "/sessions").raw(Some("application/json"), &big),
            413,
            "body_too_large",
        ),
        (
            Call::new("POST", format!("/sessions/{s}/train")).json(&json!({"epochs": 11})),
            422,
            "too_large",
        ),
        (
            Call::new("POST", format!("/sessions/{s}/train")).json(&json!({"epochs": 51})),
            422,
            "invalid_value",
        ),
    ];
    for (call, status, code) in cases {
        app.expect_problem(call, status, code).await;
    }
    app.create(&json!({"layers": [2, 2]})).await;
    app.expect_problem(
        Call::new("POST", "/sessions").json(&json!({"layers": [4, 3]})),
        429,
        "too_many_sessions",
    )
    .await;
    app.get("/sessions").await.expect(200);
    app.assert_conforms();
}

/// The events of a Server-Sent Events body, each as `{"event", "data"}` (and `id`, `retry`
/// when given); comment lines are skipped.
fn sse_events(body: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for block in body.split("\n\n") {
        let mut event = serde_json::Map::new();
        for line in block
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(':'))
        {
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            let v = match (field, event.get(field)) {
                ("data", Some(Value::String(prev))) => format!("{prev}\n{value}"),
                _ => value.to_owned(),
            };
            event.insert(field.to_owned(), Value::String(v));
        }
        if !event.is_empty() {
            out.push(Value::Object(event));
        }
    }
    out
}
