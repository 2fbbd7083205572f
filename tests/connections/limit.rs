//! `--max-connections`: past it, connections that wait for a request are closed to let new
//! ones in (those that never made a request first); busy ones never are. When every
//! connection is busy, a newcomer gets `/healthz` and 503 `overloaded` for anything else.
//! Out of descriptors all the same, the server closes a waiting connection and accepts.
//! SIGTERM closes waiting connections at once. And a held connection's headers are capped.

use std::time::{Duration, Instant};

use backprop_server::Config;

use crate::client::{Raw, config, health_on_a_new_connection, open_files, shared, start};

const ANSWER: Duration = Duration::from_secs(10);

/// A connection busy with a request whose body is still coming: the head of `POST
/// /sessions`, announcing more body than it sends.
async fn busy(addr: std::net::SocketAddr) -> Raw {
    let mut raw = Raw::connect(addr).await.unwrap();
    raw.send(
        b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    raw
}

/// Whether the server has closed `raw` (what it sent before closing is dropped).
async fn is_closed(raw: &mut Raw) -> bool {
    raw.closed(Duration::from_millis(300)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_limit_waiting_connections_go_first_and_busy_ones_are_never_cut() {
    let _timing = shared().await;
    let server = start(
        Config {
            max_connections: Some(3),
            body_timeout_secs: 30.0,
            ..config()
        },
        None,
    )
    .await;
    let addr = server.addr;

    // a: served once, now idle between requests. b, c: busy with bodies still coming.
    let mut a = Raw::connect(addr).await.unwrap();
    assert_eq!(a.get("/healthz", ANSWER).await.unwrap().status, 200);
    let mut b = busy(addr).await;
    let mut c = busy(addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A fourth: a, the only one waiting, is closed to let it in.
    let mut d = Raw::connect(addr).await.unwrap();
    assert_eq!(d.get("/datasets", ANSWER).await.unwrap().status, 200);
    assert!(is_closed(&mut a).await, "the idle connection was kept");
    // (An answer reaches the client a moment before its connection begins to wait again.)
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A fifth, a half-open one: d (idle, it made a request) goes, since no connection that
    // never made one waits.
    let mut e = Raw::connect(addr).await.unwrap();
    e.send(b"GET /datasets HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(is_closed(&mut d).await, "the idle connection d was kept");
    // A sixth: e (half-open, never made a request) goes before anyone busy.
    let mut f = busy(addr).await;
    assert!(
        is_closed(&mut e).await,
        "the half-open connection e was kept"
    );

    // Now b, c and f are busy: nothing to close. A newcomer is served /healthz, and told to
    // come back for anything else; neither keeps its connection.
    health_on_a_new_connection(addr, ANSWER)
        .await
        .expect("/healthz when every connection is busy");
    let mut g = Raw::connect(addr).await.unwrap();
    let refused = g.get("/datasets", ANSWER).await.unwrap();
    let v = refused.expect_problem(503, "overloaded");
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");
    assert_eq!(refused.header("connection"), Some("close"), "{refused:?}");
    assert!(
        v["detail"].as_str().unwrap().contains("--max-connections"),
        "{v}"
    );
    assert!(is_closed(&mut g).await);

    // The busy ones were never cut: each still gets its answer when its body is done.
    for (name, raw) in [("b", &mut b), ("c", &mut c), ("f", &mut f)] {
        let mut rest = br#""layers": [4, 3]}"#.to_vec();
        rest.resize(99, b' ');
        raw.send(&rest).await.unwrap();
        let answer = raw
            .answer(ANSWER)
            .await
            .unwrap_or_else(|e| panic!("busy connection {name}: {e}"));
        assert_eq!(answer.status, 201, "busy connection {name}: {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_closes_a_waiting_connection_and_lets_a_new_one_in() {
    let _timing = shared().await;
    crate::client::raise_own_open_file_limit();
    // A limit far above what 128 open files allow: accept itself runs out of descriptors.
    let open_file_limit = 128;
    let server = start(
        Config {
            max_connections: Some(10_000),
            header_timeout_secs: 30.0,
            ..config()
        },
        Some(open_file_limit),
    )
    .await;
    let addr = server.addr;
    let mut held = Vec::new();
    for _ in 0..300 {
        let mut raw = Raw::connect(addr).await.unwrap();
        raw.send(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(raw);
        if held.len() % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let t = Instant::now();
    health_on_a_new_connection(addr, ANSWER)
        .await
        .expect("/healthz with every descriptor taken by half-open connections");
    let took = t.elapsed();
    let files = open_files(&server);
    eprintln!("out of descriptors: /healthz answered in {took:?}; the server holds {files}");
    assert!(
        took < Duration::from_secs(1),
        "/healthz took {took:?} with the server out of descriptors"
    );
    assert!(
        files <= open_file_limit as usize,
        "{files} open files; log: {}",
        server.log()
    );
    let log = server.log();
    assert!(
        !log.contains("every connection is busy"),
        "the server found no connection to close: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_waiting_connections_at_once() {
    let _timing = shared().await;
    let mut server = start(
        Config {
            header_timeout_secs: 30.0,
            idle_timeout_secs: 30.0,
            ..config()
        },
        None,
    )
    .await;
    let addr = server.addr;
    let mut waiting = Vec::new();
    for _ in 0..50 {
        let mut raw = Raw::connect(addr).await.unwrap();
        raw.send(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        waiting.push(raw);
    }
    let mut idle = Raw::connect(addr).await.unwrap();
    assert_eq!(idle.get("/healthz", ANSWER).await.unwrap().status, 200);
    waiting.push(idle);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let t = Instant::now();
    server.terminate();
    let exited = tokio::task::block_in_place(|| server.wait_exit(Duration::from_secs(10)))
        .expect("the server did not exit within 10 s of SIGTERM");
    let took = t.elapsed();
    assert!(exited.success(), "exit status {exited}");
    eprintln!("SIGTERM with 51 waiting connections: exited after {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "the server took {took:?} to exit: waiting connections held it up"
    );
    for raw in &mut waiting {
        assert!(raw.closed(Duration::from_secs(1)).await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_64_kib_are_refused_before_more_is_buffered() {
    let _timing = shared().await;
    let server = start(config(), None).await;
    let mut raw = Raw::connect(server.addr).await.unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
    head.resize(70 * 1024, b'a');
    raw.send(&head).await.unwrap();
    let answer = raw
        .answer(ANSWER)
        .await
        .expect("an answer to the long head");
    assert_eq!(answer.status, 431, "{answer:?}");
    assert!(is_closed(&mut raw).await);
    // Just under the cap is fine.
    let mut raw = Raw::connect(server.addr).await.unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
    head.resize(60 * 1024, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    raw.send(&head).await.unwrap();
    assert_eq!(raw.answer(ANSWER).await.unwrap().status, 200);
}
