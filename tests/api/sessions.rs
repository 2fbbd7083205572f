//! The session resource: creation defaults and echo, `Location`, ids, listing, deletion,
//! and the request content types the contract accepts.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{assert_problem, config, is_uuid_v4, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_fills_the_notebook_defaults_and_points_at_the_session() {
    let app = spawn_app(config()).await;
    let resp = app.post("/sessions", &json!({"layers": [4, 3]})).await;
    let s = resp.expect_json(201);
    let id = s["id"].as_str().expect("id");
    assert!(
        is_uuid_v4(id),
        "id {id:?} is not a lowercase hyphenated UUID v4"
    );
    assert_eq!(
        resp.header("location"),
        Some(format!("/sessions/{id}").as_str()),
        "Location"
    );
    assert_eq!(s["layers"], json!([4, 3]));
    assert_eq!(s["activation"], "relu");
    assert_eq!(
        s["learning_rate"].as_f64().map(f64::to_bits),
        Some(0.0001f64.to_bits())
    );
    assert_eq!(s["grad_reduction"], "sum");
    assert_eq!(s["bias"], false);
    assert_eq!(s["init"]["method"], "numpy_rand");
    let seed = s["init"]["seed"]
        .as_u64()
        .expect("the server reports the seed it picked");
    assert!(seed <= u32::MAX as u64, "seed {seed} outside 0..=2^32-1");
    for key in ["dataset", "initial_loss", "last_loss", "expires_at"] {
        assert!(
            s[key].is_null(),
            "{key} is {} on a new session (ttl 0)",
            s[key]
        );
    }
    assert_eq!(s["epochs_trained"], 0);
    let created = s["created_at"].as_str().expect("created_at");
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "created_at {created:?} is not like 2026-11-27T10:00:00Z"
    );
    let fetched = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(fetched, s, "GET returns what POST returned");

    // The reported seed recreates the same weights.
    let (twin, _) = app
        .create_session(&json!({"layers": [4, 3], "init": {"method": "numpy_rand", "seed": seed}}))
        .await;
    let w1 = app.get(&format!("/sessions/{id}/weights")).await.body;
    let w2 = app.get(&format!("/sessions/{twin}/weights")).await.body;
    assert_eq!(
        w1, w2,
        "seed {seed} does not recreate the session's weights"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_setting_is_echoed() {
    let app = spawn_app(config()).await;
    let body = json!({"layers": [4, 4, 4, 4, 4, 4, 4, 4, 3], "activation": "tanh",
        "learning_rate": 0.25, "grad_reduction": "mean", "bias": true,
        "init": {"method": "he", "seed": 4294967295u64}});
    let (id, s) = app.create_session(&body).await;
    for key in [
        "layers",
        "activation",
        "learning_rate",
        "grad_reduction",
        "bias",
        "init",
    ] {
        assert_eq!(s[key], body[key], "{key} echoed");
    }
    let w = app
        .get(&format!("/sessions/{id}/weights"))
        .await
        .expect_json(200);
    assert_eq!(
        w["weights"].as_array().map(Vec::len),
        Some(8),
        "8 weight layers"
    );
    let biases = w["biases"].as_array().expect("biases on a bias session");
    assert_eq!(biases.len(), 8);
    assert!(
        biases
            .iter()
            .flat_map(|b| b.as_array().unwrap())
            .all(|v| v.as_f64() == Some(0.0)),
        "biases start at zero: {biases:?}"
    );

    let (_, s) = app
        .create_session(&json!({"layers": [2, 2], "init": {"method": "explicit", "weights": [[[1, 2], [3, 4]]]}}))
        .await;
    assert_eq!(
        s["init"],
        json!({"method": "explicit"}),
        "explicit init echo"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_newest_first_and_pages() {
    let app = spawn_app(config()).await;
    let mut ids = Vec::new();
    for seed in 0..3 {
        let (id, _) = app
            .create_session(
                &json!({"layers": [4, 3], "init": {"method": "numpy_rand", "seed": seed}}),
            )
            .await;
        ids.push(id);
    }
    ids.reverse();
    let list = app.get("/sessions").await.expect_json(200);
    let got: Vec<&str> = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids, "newest first");
    assert_eq!(list["total"], 3);
    let one = app
        .get(&format!("/sessions/{}", ids[0]))
        .await
        .expect_json(200);
    assert_eq!(
        list["sessions"][0], one,
        "listed sessions are whole session resources"
    );

    let page = app.get("/sessions?offset=1&limit=1").await.expect_json(200);
    assert_eq!(page["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        page["sessions"][0]["id"],
        ids[1].as_str(),
        "offset 1 limit 1"
    );
    assert_eq!(page["total"], 3);
    let past = app.get("/sessions?offset=10").await.expect_json(200);
    assert_eq!(past["sessions"], json!([]), "offset past the end");
    assert_eq!(past["total"], 3);
    app.get("/sessions?limit=1000").await.expect(200);
    // Unknown parameter names are ignored.
    app.get("/sessions?colour=blue").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_answers_204_and_the_session_is_gone() {
    let app = spawn_app(config()).await;
    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    let resp = app.delete(&format!("/sessions/{id}")).await;
    resp.expect(204);
    assert_eq!(resp.body, "", "204 has an empty body");
    for path in ["", "/weights", "/loss"] {
        let r = app.get(&format!("/sessions/{id}{path}")).await;
        assert_problem(&r, 404, "not_found");
    }
    assert_problem(
        &app.delete(&format!("/sessions/{id}")).await,
        404,
        "not_found",
    );
    let list = app.get("/sessions").await.expect_json(200);
    assert_eq!(list["total"], 0, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_content_types_with_parameters_or_suffixes_are_accepted() {
    let app = spawn_app(config()).await;
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "application/vnd.api+json",
        "application/merge-patch+json",
    ] {
        let r = app
            .send(
                Method::POST,
                "/sessions",
                Some(ct),
                Some(r#"{"layers": [4, 3]}"#),
            )
            .await;
        r.expect(201);
    }
    // An empty gradients body needs no content type at all; `{}` with one works too.
    let (id, _) = app.create_session(&json!({"layers": [4, 3]})).await;
    app.put_builtin(&id, "cat-dog-ship").await;
    for ct in [None, Some("text/plain"), Some("application/json")] {
        app.send(
            Method::POST,
            &format!("/sessions/{id}/gradients"),
            ct,
            Some(""),
        )
        .await
        .expect(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_start_a_history_and_datasets_keep_it() {
    let app = spawn_app(config()).await;
    let (id, _) = app
        .create_session(
            &json!({"layers": [4, 3], "bias": true, "init": {"method": "numpy_rand", "seed": 0}}),
        )
        .await;
    app.put_builtin(&id, "cat-dog-ship").await;
    let first = app.train(&id, 5).await;
    let initial = first["initial_loss"].clone();
    assert!(
        initial.is_number(),
        "the first train sets initial_loss: {first}"
    );

    // A new dataset keeps the weights, the history and its initial_loss.
    let w = app.get(&format!("/sessions/{id}/weights")).await.body;
    app.put(
        &format!("/sessions/{id}/dataset"),
        &json!({"x": [[1, 2, 3, 4], [4, 3, 2, 1]], "y": [0, 2]}),
    )
    .await
    .expect(200);
    assert_eq!(app.get(&format!("/sessions/{id}/weights")).await.body, w);
    let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(
        (&s["epochs_trained"], &s["initial_loss"]),
        (&json!(5), &initial),
        "{s}"
    );
    let more = app.train(&id, 2).await;
    assert_eq!(more["epochs_trained"], 7);
    assert_eq!(
        more["initial_loss"], initial,
        "a new dataset does not reset initial_loss"
    );

    // PUT /weights without biases on a bias session: biases become zeros, history restarts.
    let put = app
        .put(
            &format!("/sessions/{id}/weights"),
            &json!({"weights": [[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]]}),
        )
        .await
        .expect_json(200);
    assert_eq!(
        put["biases"],
        json!([[0.0, 0.0, 0.0]]),
        "omitted biases: {put}"
    );
    let s = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(
        (&s["epochs_trained"], &s["initial_loss"], &s["last_loss"]),
        (&json!(0), &json!(null), &json!(null)),
        "PUT /weights starts a new history: {s}"
    );
    let again = app.train(&id, 1).await;
    assert_eq!(again["epochs_trained"], 1);
    let g = app
        .post(
            &format!("/sessions/{id}/gradients"),
            &json!({"x": [[1, 2, 3, 4], [4, 3, 2, 1]], "y": [0, 2]}),
        )
        .await
        .expect_json(200);
    assert!(
        again["initial_loss"].is_number() && again["initial_loss"] != initial,
        "{again}"
    );
    assert_eq!(
        g["biases"].as_array().map(Vec::len),
        Some(1),
        "bias gradients: {g}"
    );
}
