//! Resources are bounded before anything large is allocated or read: a network over the
//! parameter limit is refused at once without the server's memory moving, nesting past any
//! sane depth is a 4xx and not a stack overflow (the server runs in this process: an
//! overflow would abort the whole test binary), and a body over the limit is refused
//! without waiting for the rest of it.

use std::time::{Duration, Instant};

use backprop_server::Config;
use reqwest::Method;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;

use crate::harness::{
    Server, body_routes, config, exclusive, nested_array, nested_object, session_total, shared,
};

/// Bodies that each describe a network far beyond `--max-parameters` (10 million): building
/// any of them would take gigabytes and seconds.
fn huge_networks() -> Vec<(&'static str, String)> {
    let import = |layers: &str| {
        format!(
            r#"{{"format": "backprop-server/session-v1", "layers": {layers}, "weights": [[[1.0]]]}}"#
        )
    };
    vec![
        ("/sessions", r#"{"layers": [100000, 100000]}"#.to_string()),
        (
            "/sessions",
            r#"{"layers": [4, 100000, 100000, 3], "bias": true}"#.to_string(),
        ),
        (
            "/sessions",
            r#"{"layers": [100000, 100000], "init": {"method": "xavier", "seed": 1}}"#.to_string(),
        ),
        (
            "/sessions",
            r#"{"layers": [100000, 100000], "init": {"method": "explicit", "weights": [[[1.0]]]}}"#
                .to_string(),
        ),
        (
            "/sessions",
            r#"{"layers": [18446744073709551615, 18446744073709551615]}"#.to_string(),
        ),
        ("/sessions/import", import("[100000, 100000]")),
        ("/sessions/import", import("[4, 100000, 100000, 3]")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_networks_are_refused_in_milliseconds_and_memory_does_not_move() {
    let _timing = exclusive().await;
    let server = Server::start(config()).await;
    let app = &server.app;
    let bodies = huge_networks();
    // Warm up: the client's connection, the server's threads and buffers.
    for (path, body) in &bodies {
        app.request(
            Method::POST,
            path,
            Some("application/json"),
            Some(body.clone()),
        )
        .await
        .expect("an answer");
    }
    let rss_before = server.rss_kib();
    let peak_before = server.reset_rss_peak();
    let mut times = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    for round in 0..20 {
        for (path, body) in &bodies {
            let t = Instant::now();
            let r = app
                .request(
                    Method::POST,
                    path,
                    Some("application/json"),
                    Some(body.clone()),
                )
                .await
                .expect("an answer");
            let took = t.elapsed();
            times.push(took);
            assert!(r.faults().is_empty(), "{}: {:?}", r.request, r.faults());
            r.expect_problem(422, "too_large");
            if took > slowest.0 {
                slowest = (took, format!("round {round}: POST {path} {body}"));
            }
        }
    }
    let grew = server.rss_kib().saturating_sub(rss_before);
    let peak_kib = server.rss_peak_kib().saturating_sub(peak_before);
    times.sort_unstable();
    let median = times[times.len() / 2];
    eprintln!(
        "{} refusals: median {median:?}, slowest {:?} ({}); RSS grew {grew} KiB and \
         peaked {peak_kib} KiB above its start",
        times.len(),
        slowest.0,
        slowest.1
    );
    // A debug build answers these in about a millisecond; building even one such network
    // would take seconds (and 80 GB). The bound on the slowest leaves room for a shared
    // machine's scheduling stalls.
    assert!(
        median < Duration::from_millis(10),
        "median refusal {median:?}"
    );
    assert!(
        slowest.0 < Duration::from_millis(250),
        "a refusal took {:?}: {}",
        slowest.0,
        slowest.1
    );
    assert!(
        peak_kib < 1024,
        "the server's RSS peaked {peak_kib} KiB above its start while refusing huge networks"
    );
    assert!(
        grew < 4 * 1024,
        "the process grew by {grew} KiB over {} refused huge networks",
        20 * bodies.len()
    );
    assert_eq!(session_total(app).await, 0, "a refused network was kept");
}

/// The contract: integers follow JSON Schema (any number whose value is whole is one: `4.0`,
/// `1e12`), and a number out of range is a 422. A literal past u64, or a float like `1e30`,
/// is still an integer: as a layer size it is a network over any parameter limit, as a seed
/// or an epoch count a value out of range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integer_literals_past_u64_are_out_of_range_not_the_wrong_form() {
    let _timing = shared().await;
    let server = Server::start(config()).await;
    let app = &server.app;
    let id = app.create(&json!({"layers": [4, 3]})).await;
    app.put(
        &format!("/sessions/{id}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);
    let huge = "100000000000000000000000";
    let cases = [
        (
            "/sessions".to_string(),
            format!(r#"{{"layers": [{huge}, 2]}}"#),
            "too_large",
        ),
        (
            "/sessions".to_string(),
            format!(r#"{{"layers": [4, 3], "init": {{"seed": {huge}}}}}"#),
            "invalid_value",
        ),
        (
            format!("/sessions/{id}/train"),
            format!(r#"{{"epochs": {huge}}}"#),
            "invalid_value",
        ),
        (
            "/sessions".to_string(),
            r#"{"layers": [1e30, 2.0]}"#.to_string(),
            "too_large",
        ),
        (
            "/sessions".to_string(),
            r#"{"layers": [4, 3], "init": {"seed": -1e300}}"#.to_string(),
            "invalid_value",
        ),
        (
            format!("/sessions/{id}/train"),
            r#"{"epochs": 1e12}"#.to_string(),
            "invalid_value",
        ),
    ];
    let mut wrong = Vec::new();
    for (path, body, code) in cases {
        let r = app
            .request(
                Method::POST,
                &path,
                Some("application/json"),
                Some(body.clone()),
            )
            .await
            .expect("an answer");
        assert!(r.faults().is_empty(), "{}: {:?}", r.request, r.faults());
        let got = r.json();
        if r.status != 422 || got["code"] != code {
            wrong.push(format!(
                "POST {path} {body}: want 422 {code}, got {} {}",
                r.status, r.body
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_a_4xx_in_every_slot_of_every_route() {
    let _timing = shared().await;
    let server = Server::start(config()).await;
    let app = &server.app;
    let id = app
        .create(&json!({"layers": [4, 4, 3], "bias": true, "init": {"seed": 7}}))
        .await;
    app.put(
        &format!("/sessions/{id}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);
    app.train(&id, 2).await;
    let before = app.snapshot(&id).await.unwrap();

    // 40 is past the 8 a sample may nest and well inside serde_json's limit of 128, so the
    // server's own checks answer it; 127..=129 straddle serde_json's limit; 10,000 is far
    // past it, where a recursive parser without a limit overflows its stack.
    let depths = [40, 127, 128, 129, 10_000];
    // Where in a body the nesting goes; `@` marks the spot.
    let slots = [
        "@",
        r#"{"layers": @}"#,
        r#"{"layers": [4, @]}"#,
        r#"{"init": {"method": "explicit", "weights": @}, "layers": [4, 3]}"#,
        r#"{"x": @, "y": [0]}"#,
        r#"{"x": [@], "y": [0]}"#,
        r#"{"x": [[1, 2, 3, 4]], "y": @}"#,
        r#"{"x": [[1, 2, 3, 4]], "y": [@]}"#,
        r#"{"weights": @}"#,
        r#"{"weights": [[@]]}"#,
        r#"{"epochs": @}"#,
        r#"{"gradients": {"weights": @}}"#,
        r#"{"loss": @}"#,
        r#"{"probabilities": [@]}"#,
        r#"{"h": @}"#,
        r#"{"format": "backprop-server/session-v1", "layers": [4, 3], "weights": @}"#,
        r#"{"format": "backprop-server/session-v1", "layers": [4, 3], "weights": [[[1,1,1,1],[1,1,1,1],[1,1,1,1]]], "dataset": {"x": @, "y": [0]}}"#,
        r#"{"unknown": @}"#,
    ];
    let mut sent = 0;
    for depth in depths {
        for nested in [nested_array(depth), nested_object(depth)] {
            for slot in slots {
                let body = slot.replace('@', &nested);
                for (method, path) in body_routes(&id) {
                    let r = app
                        .request(
                            method.clone(),
                            &path,
                            Some("application/json"),
                            Some(body.clone()),
                        )
                        .await
                        .unwrap_or_else(|e| panic!("depth {depth}, slot {slot}: {e}"));
                    let faults = r.faults();
                    assert!(
                        faults.is_empty(),
                        "depth {depth}, slot {slot}, {method} {path}: {faults:?}"
                    );
                    // check takes any JSON as a submission: one of the wrong shape fails
                    // its item (200, pass false), as the contract says, instead of a 4xx.
                    let failed_check =
                        path.ends_with("/check") && r.status == 200 && r.json()["pass"] == false;
                    assert!(
                        r.status.is_client_error() || failed_check,
                        "depth {depth}, slot {slot}, {method} {path}: {} {}",
                        r.status,
                        crate::harness::clip(&r.body)
                    );
                    if depth > 128 {
                        // Past the parser's limit nothing is read, whatever the slot.
                        assert_eq!(r.status, 400, "depth {depth}, {method} {path}: {}", r.body);
                    }
                    sent += 1;
                }
            }
        }
    }
    eprintln!("{sent} deeply nested bodies, all 4xx");
    let after = app.snapshot(&id).await.unwrap();
    let changes = after.changes_since(&before);
    assert!(
        changes.is_empty(),
        "nested bodies changed the session: {changes:?}"
    );
    assert_eq!(
        session_total(app).await,
        1,
        "a nested body created a session"
    );
    app.get("/healthz").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enormous_deep_body_is_refused_without_exhausting_stack_or_heap() {
    let _timing = exclusive().await;
    let server = Server::start(config()).await;
    let app = &server.app;
    let id = app.create(&json!({"layers": [4, 3]})).await;
    // 8 MiB of '[': parsed on a worker thread (it is over the inline size), whose stack
    // is far smaller than a recursion this deep would need.
    let depth = 4 << 20;
    let mut peaks = Vec::new();
    for (method, path) in body_routes(&id) {
        let body = format!(r#"{{"x": {}, "y": [0]}}"#, nested_array(depth));
        let t = Instant::now();
        let base = server.reset_rss_peak();
        let r = app
            .request(method.clone(), &path, Some("application/json"), Some(body))
            .await
            .expect("an answer");
        let peak = server.rss_peak_kib().saturating_sub(base) >> 10;
        assert!(r.faults().is_empty(), "{method} {path}: {:?}", r.faults());
        assert_eq!(r.status, 400, "{method} {path}: {}", r.body);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{method} {path}: {:?} for an 8 MiB body",
            t.elapsed()
        );
        // The body is held a few times over (the client's copy, the server's chunks and
        // their concatenation); a tree of millions of nodes would be hundreds of MiB.
        assert!(
            peak < 40,
            "{method} {path}: the server's RSS peaked {peak} MiB above its start for an 8 MiB body"
        );
        peaks.push(peak);
    }
    eprintln!("8 MiB nested bodies on every route: the server's RSS peaked +{peaks:?} MiB");
    app.get("/healthz").await.expect(200);
}

/// How far the server's resident set peaks above what it held while `path` answers `body`,
/// in KiB, and the answer's status and code.
async fn peak_growth(
    server: &Server,
    method: Method,
    path: &str,
    body: String,
) -> (u64, u16, String) {
    let app = &server.app;
    let base = server.reset_rss_peak();
    let r = app
        .request(method, path, Some("application/json"), Some(body))
        .await
        .expect("an answer");
    let peak = server.rss_peak_kib().saturating_sub(base);
    assert!(r.faults().is_empty(), "{}: {:?}", r.request, r.faults());
    let code = r.json()["code"].as_str().unwrap_or("").to_string();
    (peak, r.status.as_u16(), code)
}

/// `n` copies of `item`, comma-separated, in brackets.
fn list_of(item: &str, n: usize) -> String {
    let mut s = String::with_capacity(n * (item.len() + 1) + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(item);
    }
    s.push(']');
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_past_max_samples_or_max_history_is_refused_without_being_stored() {
    let _timing = exclusive().await;
    let server = Server::start(Config {
        max_samples: 1000,
        max_history: 1000,
        ..config()
    })
    .await;
    let app = &server.app;
    let id = app.create(&json!({"layers": [4, 3]})).await;
    // 600,000 samples of 4 zeros: 6 MB of text, 19 MB as f64s. The server may hold 1000
    // samples (32 KB); what it reads past them it should count, not keep. Likewise 3
    // million losses (6 MB of text, 24 MB as f64s) where 1000 are allowed.
    let samples = list_of("[0,0,0,0]", 600_000);
    let zeros = list_of("0", 3_000_000);
    let weights = "[[[0,0,0,0],[0,0,0,0],[0,0,0,0]]]";
    let import = |loss: &str| {
        format!(
            r#"{{"format": "backprop-server/session-v1", "layers": [4, 3], "weights": {weights}, "loss": {loss}, "initial_loss": 1}}"#
        )
    };
    let cases = [
        // Same size, refused at its first member: what reading and checking the text costs.
        (
            "unknown member (baseline)",
            Method::PUT,
            format!("/sessions/{id}/dataset"),
            format!(r#"{{"junk": {samples}, "y": [0]}}"#),
            (400, "invalid_request"),
        ),
        (
            "PUT /dataset",
            Method::PUT,
            format!("/sessions/{id}/dataset"),
            format!(r#"{{"x": {samples}, "y": [0]}}"#),
            (422, "too_large"),
        ),
        (
            "predict",
            Method::POST,
            format!("/sessions/{id}/predict"),
            format!(r#"{{"x": {samples}}}"#),
            (422, "too_large"),
        ),
        (
            "import baseline",
            Method::POST,
            "/sessions/import".to_string(),
            format!(r#"{{"junk": {zeros}}}"#),
            (400, "invalid_request"),
        ),
        (
            "import with a long history",
            Method::POST,
            "/sessions/import".to_string(),
            import(&zeros),
            (422, "too_large"),
        ),
    ];
    let mut grown = Vec::new();
    for (what, method, path, body, (status, code)) in cases {
        let len = body.len();
        let (kib, got, got_code) = peak_growth(&server, method, &path, body).await;
        eprintln!("{what}: {len} bytes, answered {got} {got_code}, RSS peaked +{kib} KiB");
        assert_eq!((got, got_code.as_str()), (status, code), "{what}");
        grown.push((what, kib));
    }
    let base_x = grown[0].1;
    let base_import = grown[3].1;
    // What reading and checking the text costs is the baselines' peak; storing what was
    // refused would cost 19 MB (the samples) or 24 MB (the losses) more. The resident set
    // moves by a few MB with what the allocator happens to reuse, hence the 12 MiB margin.
    const MARGIN_KIB: u64 = 12 * 1024;
    for &(what, kib) in &[grown[1], grown[2]] {
        assert!(
            kib < base_x + MARGIN_KIB,
            "{what}: RSS peaked +{kib} KiB, against +{base_x} KiB for a body of the same size \
             refused unread: the samples past --max-samples were stored"
        );
    }
    assert!(
        grown[4].1 < base_import + MARGIN_KIB,
        "import: RSS peaked +{} KiB, against +{base_import} KiB for a body of the same size \
         refused unread: the history past --max-history was stored",
        grown[4].1
    );
}

const LIMIT: usize = 64 * 1024;

fn small_body_limit() -> Config {
    Config {
        max_body_bytes: LIMIT,
        ..config()
    }
}

/// `{"epochs": 1}` padded with spaces to exactly `len` bytes.
fn padded_train(len: usize) -> String {
    let mut s = String::from(r#"{"epochs": 1}"#);
    s.push_str(&" ".repeat(len - s.len()));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_one_byte_over_the_limit_is_413_on_every_route_and_at_the_limit_is_read() {
    let _timing = shared().await;
    let server = Server::start(small_body_limit()).await;
    let app = &server.app;
    let id = app.create(&json!({"layers": [4, 3]})).await;
    app.put(
        &format!("/sessions/{id}/dataset"),
        &json!({"builtin": "cat-dog-ship"}),
    )
    .await
    .expect(200);
    let at = app
        .request(
            Method::POST,
            &format!("/sessions/{id}/train"),
            Some("application/json"),
            Some(padded_train(LIMIT)),
        )
        .await
        .unwrap();
    assert_eq!(at.status, 200, "a body of exactly the limit: {}", at.body);
    let before = app.snapshot(&id).await.unwrap();
    for (method, path) in body_routes(&id) {
        let r = app
            .request(
                method.clone(),
                &path,
                Some("application/json"),
                Some(padded_train(LIMIT + 1)),
            )
            .await
            .unwrap();
        assert!(r.faults().is_empty(), "{method} {path}: {:?}", r.faults());
        r.expect_problem(413, "body_too_large");
    }
    let changes = app.snapshot(&id).await.unwrap().changes_since(&before);
    assert!(
        changes.is_empty(),
        "a refused body changed the session: {changes:?}"
    );
}

/// Reads one whole response (head and a Content-Length body) from `stream`; returns the
/// head, lowercased.
fn read_response(stream: &mut TcpStream) -> Result<String, String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&got))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.to_string()),
        }
    };
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while got.len() < end + length {
        match stream.read(&mut buf) {
            Ok(0) => return Err("closed in the middle of a body".into()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(head)
}

/// Sends `body` to `path` on a new connection, reads the answer, and, unless it said
/// `Connection: close`, asks for `/healthz` on the same connection. Returns the first
/// answer's head, and the fault if the connection it left open did not work.
fn refuse_then_reuse(addr: &str, path: &str, body: &[u8]) -> (String, Option<String>) {
    let mut s = TcpStream::connect(addr).expect("connecting");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("writing the head");
    // The server may refuse before reading it all; what it does not read is its business.
    let _ = s.write_all(body);
    let first = read_response(&mut s).unwrap_or_else(|e| panic!("POST {path}: {e}"));
    if first.contains("\r\nconnection: close\r\n") {
        return (first, None);
    }
    let again = s
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|()| read_response(&mut s));
    let fault = match again {
        Ok(h) if h.starts_with("http/1.1 200") => None,
        Ok(h) => Some(format!("the next request on it got {:?}", h.lines().next())),
        Err(e) => Some(format!("the next request on it got no answer ({e})")),
    };
    (first, fault)
}

/// Clients keep their connection between requests. A server that answers before reading a
/// whole body must then read the rest, or say `Connection: close`: if it closes the
/// connection unannounced, a client's next request on it fails with no answer (reqwest's
/// pooled connections hit this one time in a few).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_leaves_the_clients_connection_usable() {
    let _timing = shared().await;
    let mut faults = Vec::new();
    for (what, limit, route, body) in [
        // fork takes no body: one of 300 KB (under the body limit) is refused with a 400.
        (
            "POST /fork with a 300 KB body",
            config().max_body_bytes,
            "fork",
            format!("[{}{{}}]", "{},".repeat(100_000)),
        ),
        (
            "POST /fork with a small body",
            config().max_body_bytes,
            "fork",
            "{}".into(),
        ),
        // Over the body limit: refused with a 413, by its Content-Length.
        (
            "POST /predict with a body over the limit",
            LIMIT,
            "predict",
            padded_train(LIMIT + 1),
        ),
    ] {
        let server = Server::start(Config {
            max_body_bytes: limit,
            ..config()
        })
        .await;
        let id = server.app.create(&json!({"layers": [4, 3]})).await;
        let addr = server.app.base.trim_start_matches("http://").to_string();
        let path = format!("/sessions/{id}/{route}");
        let (head, fault) =
            tokio::task::spawn_blocking(move || refuse_then_reuse(&addr, &path, body.as_bytes()))
                .await
                .unwrap();
        let status = head.lines().next().unwrap_or("").to_string();
        assert!(status.starts_with("http/1.1 4"), "{what}: {status}");
        if let Some(f) = fault {
            faults.push(format!(
                "{what}: answered {status:?} without Connection: close; {f}"
            ));
        }
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// Reads one HTTP response head's status line from `stream`, giving up after `within`.
fn read_status(stream: &mut TcpStream, within: Duration) -> Result<String, String> {
    stream
        .set_read_timeout(Some(within))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                return Err(format!(
                    "no answer within {within:?} ({e}; got {:?})",
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&got).to_string();
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Sends a request head and part of a body over a raw connection, never the rest, and
/// returns the status line of the answer (blocking: run it off the runtime).
fn send_part(addr: &str, head: &str, parts: &[Vec<u8>]) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    for p in parts {
        s.write_all(p).map_err(|e| e.to_string())?;
    }
    read_status(&mut s, Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_before_it_has_all_arrived() {
    let _timing = shared().await;
    let server = Server::start(small_body_limit()).await;
    let id = server.app.create(&json!({"layers": [4, 3]})).await;
    let addr = server.app.base.trim_start_matches("http://").to_string();
    let path = format!("/sessions/{id}/predict");

    // A declared length of 100 MiB, of which 1 KiB is sent: a server that read the body
    // before judging it would wait for the rest forever.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        100 << 20
    );
    let to = addr.clone();
    let status = tokio::task::spawn_blocking(move || send_part(&to, &head, &[vec![b' '; 1024]]))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("Content-Length 100 MiB, 1 KiB sent: {e}"));
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "Content-Length 100 MiB, 1 KiB sent: {status:?}"
    );

    // Chunked, with no length to judge by: the server must stop once it has read past the
    // limit, not when the body ends (it never does here). Just past the limit, so that the
    // server has read all that was sent when it answers.
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let chunk = 4096;
    let n = LIMIT / chunk + 1;
    let parts: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            let mut c = format!("{chunk:x}\r\n").into_bytes();
            c.extend(std::iter::repeat_n(b' ', chunk));
            c.extend_from_slice(b"\r\n");
            c
        })
        .collect();
    let to = addr.clone();
    let status = tokio::task::spawn_blocking(move || send_part(&to, &head, &parts))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("chunked, {} bytes sent, no last chunk: {e}", n * chunk));
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "chunked body past the limit: {status:?}"
    );
    server.app.get("/healthz").await.expect(200);
}
