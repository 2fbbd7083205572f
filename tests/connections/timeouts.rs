//! The three clocks of a connection, each as the contract sets it: headers are due within
//! `--header-timeout-secs` (from the connection's start, or from the first byte of a
//! request on a kept-alive one), a kept-alive connection may wait `--idle-timeout-secs` for
//! its next request, and a body is due whole within `--body-timeout-secs`.
//!
//! Lower bounds are exact (a timer never strikes early); upper bounds allow two seconds
//! for a busy machine.

use std::time::{Duration, Instant};

use backprop_server::Config;

use crate::server::ServerProcess;

use crate::client::{
    Raw, config, eventually, exclusive, health_on_a_new_connection, settled_rss_kib, shared, start,
};

/// What a busy shared machine may add to a deadline.
const SLACK: Duration = Duration::from_secs(2);

const ANSWER: Duration = Duration::from_secs(10);

/// Asserts that `took` is at least `due` and not much more.
fn on_time(what: &str, took: Duration, due: Duration) {
    assert!(
        took >= due && took < due + SLACK,
        "{what}: after {took:?}; due at {due:?}"
    );
}

/// A server with these header and idle timeouts.
async fn with_clocks(header: Duration, idle: Duration) -> ServerProcess {
    let config = Config {
        header_timeout_secs: header.as_secs_f64(),
        idle_timeout_secs: idle.as_secs_f64(),
        ..config()
    };
    start(config, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_due_at_the_header_timeout_counted_from_a_requests_first_byte() {
    let _timing = shared().await;
    let header = Duration::from_millis(500);
    let idle = Duration::from_secs(3);
    let server = with_clocks(header, idle).await;
    let addr = server.addr;

    // A new connection that stops halfway through its headers: a 408 problem, then closed.
    let half_open = async {
        let mut raw = Raw::connect(addr).await.unwrap();
        let t = Instant::now();
        raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let answer = raw.answer(ANSWER).await.expect("a 408");
        let took = t.elapsed();
        answer.expect_problem(408, "request_timeout");
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
        raw.closed(SLACK).await.expect("closed after the 408");
        on_time("the 408 to unfinished headers", took, header);
    };
    // A new connection that sends nothing: closed at the header timeout, with no answer
    // (there is no request to answer).
    let silent = async {
        let mut raw = Raw::connect(addr).await.unwrap();
        let t = Instant::now();
        let got = raw.closed(ANSWER).await.expect("closed");
        assert!(
            got.is_empty(),
            "a silent connection got {:?}",
            String::from_utf8_lossy(&got)
        );
        on_time("closing a silent new connection", t.elapsed(), header);
    };
    // A kept-alive connection waits longer than the header timeout between requests (it
    // is idle, not slow), then starts a request and stops: the header timeout counts from
    // that request's first byte.
    let kept_alive = async {
        let mut raw = Raw::connect(addr).await.unwrap();
        assert_eq!(raw.get("/healthz", ANSWER).await.unwrap().status, 200);
        tokio::time::sleep(2 * header).await;
        let again = raw
            .get("/healthz", ANSWER)
            .await
            .expect("a kept-alive connection idle past the header timeout still answers");
        assert_eq!(again.status, 200);
        tokio::time::sleep(header / 2).await;
        let t = Instant::now();
        raw.send(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let answer = raw.answer(ANSWER).await.expect("a 408");
        answer.expect_problem(408, "request_timeout");
        on_time(
            "the 408 to unfinished headers on a kept-alive connection",
            t.elapsed(),
            header,
        );
    };
    tokio::join!(half_open, silent, kept_alive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_closes_at_the_idle_timeout_and_a_regular_one_stays() {
    let _timing = shared().await;
    let header = Duration::from_millis(300);
    let idle = Duration::from_millis(1500);
    let server = with_clocks(header, idle).await;
    let addr = server.addr;

    // Served once, then silent: closed at the idle timeout, quietly (an idle connection
    // has no request to answer).
    let idle_client = async {
        let mut raw = Raw::connect(addr).await.unwrap();
        assert_eq!(raw.get("/datasets", ANSWER).await.unwrap().status, 200);
        let t = Instant::now();
        let got = raw.closed(idle + SLACK + SLACK).await.expect("closed");
        assert!(
            got.is_empty(),
            "an idle connection got {:?}",
            String::from_utf8_lossy(&got)
        );
        on_time("closing an idle kept-alive connection", t.elapsed(), idle);
    };
    // A client that reuses its connection every 0.8 s (above the header timeout, below the
    // idle timeout) keeps it for as long as it likes: every request answered on it.
    let regular_client = async {
        let mut raw = Raw::connect(addr).await.unwrap();
        for i in 0..5 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
            let answer = raw
                .get("/datasets", ANSWER)
                .await
                .unwrap_or_else(|e| panic!("request {i} on the kept-alive connection: {e}"));
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(answer.header("connection"), None, "{answer:?}");
        }
    };
    tokio::join!(idle_client, regular_client);
}

/// 24 MiB of a body announced as 32 MiB (the default `--max-body-bytes`), the rest never
/// sent in time.
const SENT: usize = 24 << 20;
const ANNOUNCED: usize = 32 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_with_408_at_the_body_timeout_and_its_memory_freed() {
    let _timing = exclusive().await;
    let body_timeout = Duration::from_millis(1500);
    let server = start(
        Config {
            body_timeout_secs: body_timeout.as_secs_f64(),
            ..config()
        },
        None,
    )
    .await;
    let addr = server.addr;
    health_on_a_new_connection(addr, ANSWER).await.unwrap();
    let base = settled_rss_kib(&server).await;

    // Twice: memory that was freed the first time is not just reused the second.
    for round in 0..2 {
        let peak_base = server.reset_rss_peak();
        let mut raw = Raw::connect(addr).await.unwrap();
        let t = Instant::now();
        let head = format!(
            "POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {ANNOUNCED}\r\n\r\n"
        );
        raw.send(head.as_bytes()).await.unwrap();
        let mut body = b"{\"layers\": [".to_vec();
        body.resize(SENT, b' ');
        raw.send(&body).await.unwrap();
        // Then a byte every 100 ms, until the server answers.
        let answer = loop {
            match raw.answer(Duration::from_millis(100)).await {
                Ok(answer) => break answer,
                Err(_) if t.elapsed() < body_timeout + SLACK + SLACK => {
                    raw.send(b" ")
                        .await
                        .expect("the server closed without answering");
                }
                Err(e) => panic!("round {round}: no answer to the trickling body: {e}"),
            }
        };
        let took = t.elapsed();
        answer.expect_problem(408, "request_timeout");
        assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
        raw.closed(SLACK).await.expect("closed after the 408");
        on_time("the 408 to a trickling body", took, body_timeout);

        let peak = server.rss_peak_kib();
        let freed = eventually(Duration::from_secs(3), || {
            server.rss_kib() < base + (4 << 10)
        })
        .await;
        let after = server.rss_kib();
        eprintln!(
            "trickling body, round {round}: 408 after {took:?}; resident {base} KiB before, \
             peak {peak} KiB ({peak_base} KiB at the reset), {after} KiB after"
        );
        assert!(
            peak >= peak_base + (12 << 10),
            "round {round}: the resident set peaked at {peak} KiB from {peak_base} KiB: the \
             24 MiB sent were not held, so this test shows nothing about freeing them"
        );
        assert!(
            freed,
            "round {round}: the resident set is {after} KiB after the 408, {base} KiB before \
             the body: the cut body's memory was not freed"
        );
    }
    // And the server is as it was.
    health_on_a_new_connection(addr, ANSWER).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answer_loses_the_connection_at_the_idle_timeout() {
    let _timing = shared().await;
    let idle = Duration::from_secs(2);
    let server = start(
        Config {
            idle_timeout_secs: idle.as_secs_f64(),
            ..config()
        },
        None,
    )
    .await;
    let addr = server.addr;
    // A million weights: about 20 MB of JSON, far more than the sockets' buffers hold.
    let mut raw = Raw::connect(addr).await.unwrap();
    let body = r#"{"layers": [1000, 1000]}"#;
    let create = format!(
        "POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw.send(create.as_bytes()).await.unwrap();
    let created = raw.answer(ANSWER).await.unwrap();
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let request = format!("GET /sessions/{id}/weights HTTP/1.1\r\nHost: x\r\n\r\n");

    // Reads the head, then nothing.
    let stops_reading = async {
        let mut raw = Raw::connect(addr).await.unwrap();
        raw.send(request.as_bytes()).await.unwrap();
        raw.fill_once(ANSWER).await.expect("the answer begins");
        let t = Instant::now();
        let got = raw.drain(idle + SLACK + SLACK).await;
        let took = t.elapsed();
        assert!(
            got.closed,
            "a client that read nothing for {took:?} still holds its connection"
        );
        // What the kernel had buffered arrives, then the end: the answer is cut short.
        assert!(got.bytes < 20_000_000, "{} bytes read", got.bytes);
        on_time(
            "closing a connection whose client stopped reading",
            took,
            idle,
        );
    };
    // Reads it all, a few MB at a time with pauses shorter than the idle timeout.
    let reads_slowly = async {
        let mut raw = Raw::connect(addr).await.unwrap();
        raw.send(request.as_bytes()).await.unwrap();
        let answer = raw
            .answer_pausing(4 << 20, idle / 4, ANSWER * 3)
            .await
            .expect("a slow but steady reader gets the whole answer");
        assert_eq!(answer.status, 200);
        assert!(
            answer.body.len() > 10_000_000,
            "{} bytes",
            answer.body.len()
        );
    };
    tokio::join!(stops_reading, reads_slowly);
}
