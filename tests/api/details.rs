//! Every problem's `detail` speaks the API's words (contract rev. 4): it names the bad value
//! and where it is, says what would be right, and never shows the implementation (a Rust type
//! like `InitWire`, serde's "invalid type: ... expected struct", "sequence", "f64"). And the
//! finer points of the JSON forms: JSON Schema integers, `null` for an optional field, words
//! that are not strings, objects written as arrays.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{JSON, assert_problem, config, detail, spawn_app};

/// Words that belong to serde, serde_json or Rust, never to this API's details.
const RUSTISMS: &[&str] = &[
    "struct ",
    "Wire",
    "enum ",
    "sequence",
    "unit value",
    "Option",
    "i64",
    "u64",
    "u32",
    "i128",
    "usize",
    "f64",
    "floating point",
    "invalid type",
    "invalid value:",
    "invalid length",
    "expected `",
    "serde",
    "Vec<",
    "String",
    "&str",
    "a map",
    "field `",
    "variant `",
    " at line 1 column ",
];

/// One bad request: where (`{id}` a trained [4, 4, 3] bias session on cat-dog-ship,
/// `{fresh}` a [4, 2] session without data, as in errors.rs), what, the answer, and words its detail must hold.
struct Case {
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Option<String>,
    status: u16,
    code: &'static str,
    says: &'static [&'static str],
}

fn case(
    method: Method,
    path: &'static str,
    body: &str,
    status: u16,
    code: &'static str,
    says: &'static [&'static str],
) -> Case {
    Case {
        method,
        path,
        content_type: JSON,
        body: Some(body.to_string()),
        status,
        code,
        says,
    }
}

fn get(path: &'static str, status: u16, code: &'static str, says: &'static [&'static str]) -> Case {
    Case {
        method: Method::GET,
        path,
        content_type: None,
        body: None,
        status,
        code,
        says,
    }
}

fn cases() -> Vec<Case> {
    use Method as M;
    let bad = |path, body, says| case(M::POST, path, body, 400, "invalid_request", says);
    let create = |body, says| bad("/sessions", body, says);
    let doc = |extra: &str| {
        format!(
            r#"{{"format": "backprop-server/session-v1", "layers": [4, 3],
                 "weights": [[[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]]{extra}}}"#
        )
    };
    vec![
        // Not JSON: where, and no remark about numbers unless a number is the fault.
        case(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"seed": 1}"#,
            400,
            "invalid_json",
            &["not valid JSON", "line 1, column"],
        ),
        case(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3],}"#,
            400,
            "invalid_json",
            &["not valid JSON", "line 1, column 19"],
        ),
        case(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "learning_rate": 1e400}"#,
            400,
            "invalid_json",
            &["too large", "1.8e308"],
        ),
        case(
            M::POST,
            "/sessions/{id}/train",
            "",
            400,
            "invalid_json",
            &["empty", "--json"],
        ),
        // The wrong form: the path, what was found, what goes there.
        create(
            r#"{"layers": [4, 3], "init": ["numpy_rand", 0]}"#,
            &["init is a list", "object"],
        ),
        create(
            r#"{"layers": [4, 3], "init": ["numpy_rand", 0, null, null]}"#,
            &["init is a list", "object"],
        ),
        create(
            r#"{"layers": [4, 3], "init": 5}"#,
            &["init is the number 5", "object"],
        ),
        create(
            r#"{"layers": [4, 3], "activation": 5}"#,
            &["activation is the number 5", r#""relu", "sigmoid", "tanh""#],
        ),
        create(
            r#"{"layers": [4, 3], "activation": "softmax"}"#,
            &[r#"the string "softmax""#, r#""tanh""#],
        ),
        create(
            r#"{"layers": [4, 3], "grad_reduction": true}"#,
            &["grad_reduction is true", r#""sum", "mean""#],
        ),
        create(
            r#"{"layers": [4, 3], "init": {"method": 3}}"#,
            &[
                "init.method is the number 3",
                r#""numpy_rand""#,
                r#""explicit""#,
            ],
        ),
        create(
            r#"{"layers": [4, 3.5]}"#,
            &["layers[1] is the number 3.5", "an integer"],
        ),
        create(
            r#"{"layers": "4,3"}"#,
            &[r#"layers is the string "4,3""#, "a list"],
        ),
        create(r#"{"layers": null}"#, &["layers is null", "a list"]),
        create("{}", &["lacks the field \"layers\"", "required"]),
        create(
            r#"{"lyers": [4, 3]}"#,
            &["unknown field \"lyers\"", "did you mean \"layers\"?"],
        ),
        create(
            r#"{"layers": [4, 3], "init": {"method": "numpy_rand", "sed": 1}}"#,
            &["init has an unknown field \"sed\"", "\"seed\""],
        ),
        create(
            r#"{"layers": [4, 3], "bias": "yes"}"#,
            &["bias is the string \"yes\"", "true or false"],
        ),
        create(
            r#"{"layers": [4, 3], "learning_rate": "0.1"}"#,
            &["learning_rate is the string \"0.1\"", "a number"],
        ),
        create(
            r#"{"layers": [4, 3], "layers": [4, 3]}"#,
            &["\"layers\" twice"],
        ),
        create("[4, 3]", &["JSON object"]),
        bad(
            "/sessions/{id}/train",
            r#"{"epochs": "10"}"#,
            &["epochs is the string \"10\"", "an integer"],
        ),
        bad(
            "/sessions/{id}/train",
            r#"{"epochs": 2.5}"#,
            &["epochs is the number 2.5", "an integer"],
        ),
        case(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": "cats", "y": [0]}"#,
            400,
            "invalid_request",
            &["x is the string \"cats\"", "a list of samples"],
        ),
        case(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, "4"]], "y": [0]}"#,
            400,
            "invalid_request",
            &["x[0][3] is the string \"4\"", "a number"],
        ),
        case(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [0.5]}"#,
            400,
            "invalid_request",
            &["y[0] is the number 0.5", "class index"],
        ),
        case(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [[1, "0", 0]]}"#,
            400,
            "invalid_request",
            &["y[0][1] is the string \"0\"", "a number"],
        ),
        case(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"builtin": 5}"#,
            400,
            "invalid_request",
            &["builtin is the number 5", "a string"],
        ),
        case(
            M::PUT,
            "/sessions/{id}/weights",
            r#"{"weights": [[["a"]]]}"#,
            400,
            "invalid_request",
            &["weights[0][0][0] is the string \"a\"", "a number"],
        ),
        bad(
            "/sessions/{id}/check",
            r#"{"gradients": [[[1]]]}"#,
            &["gradients is a list", "object"],
        ),
        bad(
            "/sessions/{id}/check",
            r#"{"gradients": {"biases": []}}"#,
            &["gradients lacks the field \"weights\""],
        ),
        bad(
            "/sessions/{id}/check",
            r#"{"loss": [1], "rtol": "tight"}"#,
            &["rtol is the string \"tight\"", "a number"],
        ),
        bad(
            "/sessions/{id}/check",
            r#"{"loss": [1], "losses": [1]}"#,
            &["unknown field \"losses\"", "did you mean \"loss\"?"],
        ),
        bad(
            "/sessions/{id}/gradcheck",
            r#"{"h": "small"}"#,
            &["h is the string \"small\"", "a number"],
        ),
        bad(
            "/sessions/{id}/trace",
            r#"{"x": 5, "y": [0]}"#,
            &["x is the number 5", "a list of samples"],
        ),
        bad(
            "/sessions/import",
            r#"{"format": 5, "layers": [4, 3], "weights": []}"#,
            &["format is the number 5", "\"backprop-server/session-v1\""],
        ),
        bad(
            "/sessions/import",
            &doc(r#", "init": ["numpy_rand", 1]"#),
            &["init is a list", "object"],
        ),
        bad(
            "/sessions/import",
            &doc(r#", "dataset": [null, [4], [[1, 2, 3, 4]], [0]]"#),
            &["dataset is a list", "object"],
        ),
        bad(
            "/sessions/import",
            &doc(r#", "loss": [0.5, "low"]"#),
            &["loss[1] is the string \"low\"", "a number"],
        ),
        // Values the core judges: its words too.
        case(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[56, 231], [24, 1]], "y": [0]}"#,
            422,
            "shape_mismatch",
            &["x is a list of samples", r#"{"x": [[[56, 231], [24, 1]]]}"#],
        ),
        case(
            M::POST,
            "/sessions/{id}/predict",
            r#"{"x": [[56, 231], [24, 1]]}"#,
            422,
            "shape_mismatch",
            &["x is a list of samples", r#"{"x": [[[56, 231], [24, 1]]]}"#],
        ),
        case(
            M::POST,
            "/sessions/{id}/predict",
            r#"{"x": [56, 231, 24, 1]}"#,
            422,
            "shape_mismatch",
            &[r#"{"x": [[56, 231, 24, 1]]}"#],
        ),
        case(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4, 5]], "y": [0]}"#,
            422,
            "shape_mismatch",
            &["5 values", "takes 4"],
        ),
        case(
            M::PUT,
            "/sessions/{id}/dataset",
            r#"{"x": [[1, 2, 3, 4]], "y": [7]}"#,
            422,
            "invalid_labels",
            &["7"],
        ),
        case(
            M::POST,
            "/sessions",
            r#"{"layers": [4, 3], "init": {"seed": 1e12}}"#,
            422,
            "invalid_value",
            &["1000000000000", "4294967295"],
        ),
        case(
            M::POST,
            "/sessions/{id}/train",
            r#"{"epochs": 0.0}"#,
            422,
            "invalid_value",
            &["epochs is 0"],
        ),
        case(
            M::POST,
            "/sessions/{fresh}/gradients",
            "{}",
            409,
            "no_dataset",
            &["PUT /sessions/"],
        ),
        get(
            "/sessions/{id}/loss?format=xml",
            400,
            "invalid_request",
            &["format=text"],
        ),
        get(
            "/sessions/{id}/loss?offset=1.5",
            400,
            "invalid_request",
            &["offset", "not an integer"],
        ),
        get("/datasets/cats", 404, "not_found", &["cats"]),
        Case {
            method: M::POST,
            path: "/sessions",
            content_type: Some("text/plain"),
            body: Some(r#"{"layers": [4, 3]}"#.into()),
            status: 415,
            code: "unsupported_media_type",
            says: &["Content-Type", "--json"],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_detail_speaks_the_apis_words() {
    let app = spawn_app(config()).await;
    let crate::errors::Victims { id, fresh } = crate::errors::victims(&app).await;
    let before = app.snapshot(&id).await;
    let mut failures = Vec::new();
    for c in cases() {
        let path = c.path.replace("{id}", &id).replace("{fresh}", &fresh);
        let resp = app
            .send(c.method.clone(), &path, c.content_type, c.body.as_deref())
            .await;
        let faults = crate::helpers::problem_faults(&resp, c.status, c.code);
        if !faults.is_empty() {
            failures.push(format!("{}: {}", resp.request, faults.join("; ")));
            continue;
        }
        let problem = resp.json();
        let d = detail(&problem);
        for want in c.says {
            if !d.contains(want) {
                failures.push(format!("{}: detail {d:?} lacks {want:?}", resp.request));
            }
        }
        for word in RUSTISMS {
            if d.contains(word) {
                failures.push(format!(
                    "{}: detail {d:?} shows the implementation ({word:?})",
                    resp.request
                ));
            }
        }
    }
    let changes = app.snapshot(&id).await.changes_since(&before);
    assert!(
        changes.is_empty(),
        "refused requests changed the session: {changes:?}"
    );
    assert!(
        failures.is_empty(),
        "{} faults:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// JSON Schema integers: any number whose value is whole is an integer, wherever one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_numbers_are_integers_everywhere() {
    let app = spawn_app(config()).await;
    let s = app
        .send(
            Method::POST,
            "/sessions",
            JSON,
            Some(r#"{"layers": [4.0, 4e0, 3.00], "init": {"method": "numpy_rand", "seed": 0.0}}"#),
        )
        .await
        .expect_json(201);
    assert_eq!(s["layers"], json!([4, 4, 3]), "{s}");
    assert_eq!(s["init"], json!({"method": "numpy_rand", "seed": 0}), "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    let (twin, _) = app
        .create_session(&json!({"layers": [4, 4, 3], "init": {"method": "numpy_rand", "seed": 0}}))
        .await;
    let x = r#"[[[56, 231], [24, 1]], [[120, 30], [24, 0]], [[20, 31], [240, 100]]]"#;
    for (sid, y) in [(&id, "[0.0, 1e0, 2.0]"), (&twin, "[0, 1, 2]")] {
        let body = format!(r#"{{"x": {x}, "y": {y}}}"#);
        app.send(
            Method::PUT,
            &format!("/sessions/{sid}/dataset"),
            JSON,
            Some(&body),
        )
        .await
        .expect(200);
    }
    let a = app
        .send(
            Method::POST,
            &format!("/sessions/{id}/train"),
            JSON,
            Some(r#"{"epochs": 5e0}"#),
        )
        .await
        .expect_json(200);
    let b = app.train(&twin, 5).await;
    assert_eq!(
        a["loss"], b["loss"],
        "epochs 5e0 and y [0.0, 1e0, 2.0] train as 5 and [0, 1, 2]"
    );
    let page = app
        .get(&format!("/sessions/{id}/loss?offset=2.0&limit=2e0"))
        .await
        .expect_json(200);
    assert_eq!(
        page["loss"],
        json!(a["loss"].as_array().unwrap()[2..4]),
        "{page}"
    );
}

/// `null` for an optional field means the field is absent, in every request that has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_is_an_absent_optional_field() {
    let app = spawn_app(config()).await;
    let (s, created) = app
        .create_session(
            &json!({"layers": [4, 3], "activation": null, "learning_rate": null,
            "grad_reduction": null, "bias": null, "init": {"method": null, "seed": 0}}),
        )
        .await;
    for (key, want) in [
        ("activation", json!("relu")),
        ("learning_rate", json!(0.0001)),
        ("grad_reduction", json!("sum")),
        ("bias", json!(false)),
        ("init", json!({"method": "numpy_rand", "seed": 0})),
    ] {
        assert_eq!(created[key], want, "{key}: null is the default: {created}");
    }
    let (unseeded, u) = app
        .create_session(&json!({"layers": [4, 3], "init": null}))
        .await;
    assert_eq!(u["init"]["method"], "numpy_rand", "init null: {u}");
    let ok = |r: crate::helpers::Resp, what: &str| {
        assert!(r.status.is_success(), "{what}: {} {}", r.status, r.body);
        r.json()
    };
    ok(
        app.put(
            &format!("/sessions/{s}/dataset"),
            &json!({"builtin": "cat-dog-ship", "x": null, "y": null}),
        )
        .await,
        "PUT dataset with x and y null",
    );
    let run = ok(
        app.post(
            &format!("/sessions/{s}/train"),
            &json!({"epochs": 2, "return_loss": null}),
        )
        .await,
        "train with return_loss null",
    );
    assert_eq!(run["loss"].as_array().map(Vec::len), Some(2), "{run}");
    let g = ok(
        app.post(
            &format!("/sessions/{s}/gradients"),
            &json!({"x": null, "y": null}),
        )
        .await,
        "gradients with x and y null",
    );
    let p = ok(
        app.post(
            &format!("/sessions/{s}/predict"),
            &json!({"x": [[1, 2, 3, 4]], "y": null}),
        )
        .await,
        "predict with y null",
    );
    assert!(
        p.get("loss").is_none(),
        "predict with y null has no loss: {p}"
    );
    let c = ok(
        app.post(
            &format!("/sessions/{s}/check"),
            &json!({"loss": run["loss"], "weights": null, "gradients": null,
                "probabilities": null, "rtol": null, "atol": null}),
        )
        .await,
        "check with nulls",
    );
    assert_eq!(c["pass"], true, "{c}");
    assert_eq!(c["rtol"], 1e-7, "rtol null is the default: {c}");
    let gc = ok(
        app.post(
            &format!("/sessions/{s}/check"),
            &json!({"gradients": {"weights": g["weights"], "biases": null}}),
        )
        .await,
        "check gradients with biases null",
    );
    assert_eq!(gc["pass"], true, "{gc}");
    ok(
        app.post(&format!("/sessions/{s}/gradcheck"), &json!({"h": null}))
            .await,
        "gradcheck with h null",
    );
    ok(
        app.post(
            &format!("/sessions/{s}/trace"),
            &json!({"x": null, "y": null}),
        )
        .await,
        "trace with x and y null",
    );
    let w = app
        .get(&format!("/sessions/{s}/weights"))
        .await
        .expect_json(200);
    ok(
        app.put(
            &format!("/sessions/{unseeded}/weights"),
            &json!({"weights": w["weights"], "biases": null}),
        )
        .await,
        "PUT weights with biases null",
    );
    let mut doc = app
        .get(&format!("/sessions/{s}/export"))
        .await
        .expect_json(200);
    for key in [
        "activation",
        "learning_rate",
        "grad_reduction",
        "bias",
        "init",
        "biases",
    ] {
        doc[key] = Value::Null;
    }
    ok(
        app.post("/sessions/import", &doc).await,
        "import with nulls",
    );
}

/// A submitted answer is graded whatever it holds: a string, a boolean, a null or an object
/// among the numbers fails its item with a detail (200), never the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_grades_any_answer() {
    let app = spawn_app(config()).await;
    let (s, _) = app
        .create_session(&json!({"layers": [4, 3], "init": {"method": "numpy_rand", "seed": 0}}))
        .await;
    app.put_builtin(&s, "cat-dog-ship").await;
    app.train(&s, 2).await;
    let odd = [
        (json!("0.5"), "a string"),
        (json!(true), "a boolean"),
        (Value::Null, "null"),
        (json!({"v": 1}), "an object"),
    ];
    for (value, kind) in odd {
        for (item, body) in [
            ("loss", json!({"loss": [1.0, value.clone()]})),
            (
                "weights",
                json!({"weights": [[[1, 2, 3, value.clone()], [0, 0, 0, 0], [0, 0, 0, 0]]]}),
            ),
            (
                "probabilities",
                json!({"probabilities": [[value.clone(), 0, 0], [0, 0, 0], [0, 0, 0],
                    [0, 0, 0], [0, 0, 0], [0, 0, 0]]}),
            ),
            (
                "gradients",
                json!({"gradients": {"weights": value.clone()}}),
            ),
        ] {
            let r = app.post(&format!("/sessions/{s}/check"), &body).await;
            let v = r.expect_json(200);
            let it = &v["items"][item];
            assert_eq!(
                (&v["pass"], &it["pass"]),
                (&json!(false), &json!(false)),
                "{body}: {v}"
            );
            assert!(it["rel_error"].is_null(), "{body}: {v}");
            let d = it["detail"].as_str().unwrap_or("");
            assert!(d.contains(kind), "{body}: detail {d:?} should say {kind}");
        }
    }
    // An answer that is not a list at all still gets its item's verdict.
    let v = app
        .post(&format!("/sessions/{s}/check"), &json!({"weights": "W"}))
        .await
        .expect_json(200);
    assert_eq!(v["items"]["weights"]["pass"], false, "{v}");
    assert_problem(
        &app.post(&format!("/sessions/{s}/check"), &json!({"weights": null}))
            .await,
        400,
        "invalid_request",
    );
}
