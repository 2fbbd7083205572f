//! Idle sessions expire (`--session-ttl-secs`), so a grader that forgets to delete cannot
//! fill the server; `expires_at` says when; a TTL of 0 turns expiry off.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backprop_server::Config;
use serde_json::{Value, json};
use time::{Date, Month, PrimitiveDateTime, Time};

use crate::harness::{Server, config, shared};

fn ttl(secs: u64) -> Config {
    Config {
        session_ttl_secs: secs,
        ..config()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}

/// Sleeps until the wall clock's fraction of a second is `frac`.
async fn sleep_until_fraction(frac: f64) {
    let now = unix_now();
    let wait = (frac - now.fract()).rem_euclid(1.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
}

/// Unix seconds of a timestamp as the server writes them, `2026-11-27T10:00:00Z`
/// (the time crate is built without its parser here).
fn parse_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let shape = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text[r].parse::<u16>().ok();
    let month = Month::try_from(num(5..7)? as u8).ok()?;
    let date = Date::from_calendar_date(i32::from(num(0..4)?), month, num(8..10)? as u8).ok()?;
    let time = Time::from_hms(num(11..13)? as u8, num(14..16)? as u8, num(17..19)? as u8).ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

fn expires_at(session: &Value) -> f64 {
    let text = session["expires_at"]
        .as_str()
        .unwrap_or_else(|| panic!("expires_at is not a string: {session}"));
    parse_utc(text).unwrap_or_else(|| {
        panic!("expires_at {text:?} is not an RFC 3339 UTC time like 2026-11-27T10:00:00Z")
    }) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_at_is_when_an_idle_session_goes_and_null_without_a_ttl() {
    let _timing = shared().await;
    let server = Server::start(ttl(1)).await;
    let app = &server.app;
    let created = app
        .post("/sessions", &json!({"layers": [4, 3]}))
        .await
        .expect_json(201);
    let id = created["id"].as_str().unwrap().to_string();
    for (what, s) in [
        ("the created session", created.clone()),
        ("GET /sessions/{id}", app.session(&id).await),
        (
            "GET /sessions",
            app.get("/sessions").await.expect_json(200)["sessions"][0].clone(),
        ),
    ] {
        let at = expires_at(&s);
        let now = unix_now();
        // Seconds precision: one TTL after the last use, give or take the rounding.
        assert!(
            (now - 1.0..=now + 2.0).contains(&at),
            "{what}: expires_at {} is not about 1 s from now ({now}): {s}",
            s["expires_at"]
        );
    }

    let server = Server::start(ttl(0)).await;
    let app = &server.app;
    let created = app
        .post("/sessions", &json!({"layers": [4, 3]}))
        .await
        .expect_json(201);
    let id = created["id"].as_str().unwrap().to_string();
    let listed = app.get("/sessions").await.expect_json(200)["sessions"][0].clone();
    for (what, s) in [
        ("the created session", created),
        ("GET /sessions/{id}", app.session(&id).await),
        ("GET /sessions", listed),
    ] {
        assert!(
            s.get("expires_at").is_some_and(Value::is_null),
            "{what} with TTL 0: expires_at should be null: {s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_idle_for_2_5_ttls_is_gone_while_one_in_use_survives() {
    let _timing = shared().await;
    // The bound is tested at its worst case, so that the test is deterministic: the
    // server's sweeps fall late in each wall-clock second, and the idle session's last use
    // early in one. A store that times idleness in whole seconds and only notices expiry
    // in a sweep keeps such a session for almost 3 TTLs, and serves (and revives) it when
    // asked in the meantime.
    sleep_until_fraction(0.85).await;
    let server = Server::start(ttl(1)).await;
    let app = &server.app;
    sleep_until_fraction(0.05).await;
    let idle = app.create(&json!({"layers": [4, 3]})).await;
    let last_use = Instant::now();
    let busy = app.create(&json!({"layers": [4, 3]})).await;

    // Until the idle session has been idle 2.5 s, watch the list (which touches nothing)
    // for it to leave, and use the busy one every 300 ms.
    let idle_for = Duration::from_millis(2500);
    let mut gone_after = None;
    let mut next_touch = Instant::now();
    while last_use.elapsed() < idle_for {
        if Instant::now() >= next_touch {
            let s = app.session(&busy).await;
            assert_eq!(s["id"], busy.as_str());
            next_touch += Duration::from_millis(300);
        }
        let list = app.get("/sessions").await.expect_json(200);
        let ids: Vec<&str> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert!(
            ids.contains(&busy.as_str()),
            "the session used every 300 ms expired after {:?}: {list}",
            last_use.elapsed()
        );
        if gone_after.is_none() && !ids.contains(&idle.as_str()) {
            gone_after = Some(last_use.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app.get(&format!("/sessions/{idle}")).await;
    let asked_after = last_use.elapsed();
    eprintln!(
        "TTL 1 s: idle session left the list after {gone_after:?}; asked after \
         {asked_after:?}: {}",
        r.status
    );
    assert_eq!(
        r.status,
        404,
        "a session idle for {asked_after:?} with a TTL of 1 s still answers (and is revived \
         by the answer); it had {}: {}",
        gone_after.map_or("not yet left the list".to_string(), |t| format!(
            "left the list after {t:?}"
        )),
        r.body
    );
    r.expect_problem(404, "not_found");
    app.session(&busy).await;
}
