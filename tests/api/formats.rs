//! `PUT /sessions/{id}/dataset` with CSV (`text/csv`) and NPZ (`application/x-npz`): the same
//! data as JSON trains to the same numbers, bit for bit; faults get JSON's codes, and a CSV's
//! name the line. The NPZ files are made by real NumPy (`python3` with `numpy`; a machine
//! without them fails these tests, saying what to install).

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Auth, Resp, TestApp, assert_problem, config, detail, same_bits, spawn_app};

const CSV: Option<&str> = Some("text/csv");
const NPZ: &str = "application/x-npz";

/// The notebook's six samples and their classes, as rows of a CSV.
const NOTEBOOK_ROWS: [([i32; 4], &str); 6] = [
    ([56, 231, 24, 1], "cat"),
    ([120, 30, 24, 0], "dog"),
    ([20, 31, 240, 100], "ship"),
    ([56, 201, 22, -10], "cat"),
    ([140, 27, 30, 10], "dog"),
    ([25, 30, 230, 110], "ship"),
];

fn class_index(name: &str) -> usize {
    ["cat", "dog", "ship"]
        .iter()
        .position(|n| *n == name)
        .unwrap()
}

/// A fresh `[4, 3]` session with the notebook's seed.
async fn session(app: &TestApp) -> String {
    app.create_session(&json!({"layers": [4, 3], "init": {"seed": 0}}))
        .await
        .0
}

async fn put_csv(app: &TestApp, id: &str, csv: &str) -> Resp {
    app.send(
        Method::PUT,
        &format!("/sessions/{id}/dataset"),
        CSV,
        Some(csv),
    )
    .await
}

async fn put_npz(app: &TestApp, id: &str, file: &Path) -> Resp {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    app.send_bytes_as(
        Auth::Default,
        Method::PUT,
        &format!("/sessions/{id}/dataset"),
        Some(NPZ),
        Some(bytes),
        &file.display().to_string(),
    )
    .await
}

/// Trains 100 epochs and returns the history, weights and dataset as the server holds them.
async fn trained(app: &TestApp, id: &str) -> Value {
    let run = app
        .post(
            &format!("/sessions/{id}/train"),
            &json!({"epochs": 100, "return_loss": true}),
        )
        .await
        .expect_json(200);
    let export = app
        .get(&format!("/sessions/{id}/export"))
        .await
        .expect_json(200);
    // An array, which `same_bits` walks (loss, weights, then the data).
    json!([
        run["loss"],
        export["weights"],
        export["dataset"]["x"],
        export["dataset"]["y"]
    ])
}

#[tokio::test]
async fn csv_trains_exactly_as_the_builtin_dataset_does() {
    let app = spawn_app(config()).await;
    let reference = session(&app).await;
    app.put_builtin(&reference, "cat-dog-ship").await;
    let want = trained(&app, &reference).await;

    let rows = |class: &dyn Fn(&str) -> String, sep: &str, eol: &str| -> String {
        NOTEBOOK_ROWS
            .iter()
            .map(|(x, c)| {
                let values: Vec<String> = x.iter().map(i32::to_string).collect();
                format!("{}{sep}{}{eol}", values.join(sep), class(c))
            })
            .collect()
    };
    let name = |c: &str| c.to_string();
    let index = |c: &str| class_index(c).to_string();
    let savetxt = NOTEBOOK_ROWS
        .iter()
        .map(|(x, c)| {
            let mut v: Vec<String> = x
                .iter()
                .map(|&n| format!("{:.18e}", f64::from(n)))
                .collect();
            v.push(format!("{:.18e}", class_index(c) as f64));
            v.join(",") + "\n"
        })
        .collect::<String>()
        .replace("e", "e+")
        .replace("e+-", "e-");
    let cases = [
        (
            "a header and class names",
            format!("r,g,b,a,class\n{}", rows(&name, ",", "\n")),
        ),
        ("no header, class indices", rows(&index, ",", "\n")),
        (
            "Excel's BOM and CRLF, spaces, quotes and a blank line",
            format!(
                "\u{feff}\"x 1\",x2 , x3,x4,\"label\"\r\n{}\r\n",
                rows(&|c: &str| format!(",\"{c}\""), ", ", "\r\n").replace(", ,", ",")
            ),
        ),
        (
            "pandas' numbered header (DataFrame(array).to_csv(index=False))",
            format!("0,1,2,3,4\n{}", rows(&index, ",", "\n")),
        ),
        ("np.savetxt's format", savetxt),
    ];
    for (what, csv) in cases {
        let id = session(&app).await;
        let body = put_csv(&app, &id, &csv).await.expect_json(200);
        assert_eq!(
            body,
            json!({"samples": 6, "features": 4, "classes": 3, "builtin": null}),
            "{what}"
        );
        let got = trained(&app, &id).await;
        if let Err(e) = same_bits(&got, &want) {
            panic!("{what}: trains otherwise than the built-in dataset: {e}\n{csv}");
        }
    }

    // Class names are numbered in sorted order (as np.unique numbers them), whatever order
    // the rows come in: here the first row is a ship.
    let id = session(&app).await;
    put_csv(&app, &id, "1,2,3,4,ship\n5,6,7,8,cat\n9,10,11,12,dog\n")
        .await
        .expect(200);
    let export = app
        .get(&format!("/sessions/{id}/export"))
        .await
        .expect_json(200);
    assert_eq!(
        export["dataset"]["y"],
        json!([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        "ship, cat, dog are classes 2, 0, 1"
    );
    assert_eq!(export["dataset"]["sample_shape"], json!([4]));
}

#[tokio::test]
async fn csv_faults_name_the_line_and_leave_the_session_as_it_was() {
    let app = spawn_app(config()).await;
    let id = session(&app).await;
    let good = "1,2,3,4,0\n5,6,7,8,1\n";
    let cases: &[(&str, &str, u16, &str, &[&str])] = &[
        (
            "a non-number",
            "1,2,3,4,0\n5,6,7,8,1\n9,ten,11,12,2\n",
            400,
            "invalid_request",
            &["line 3, column 2", "\"ten\"", "not a number"],
        ),
        (
            "a first row of numbers and text",
            "1,2,x,4,0\n5,6,7,8,1\n",
            400,
            "invalid_request",
            &["line 1, column 3", "header row"],
        ),
        (
            "a ragged row",
            "1,2,3,4,0\n5,6,7,8,1\n9,10,11,2\n",
            422,
            "shape_mismatch",
            &["line 3 has 4 fields", "line 1 has 5"],
        ),
        (
            "rows too short for the input layer",
            "1,2,3,0\n",
            422,
            "shape_mismatch",
            &["line 1 holds 3 values", "takes 4", "5 fields"],
        ),
        (
            "a class out of range",
            "1,2,3,4,0\n5,6,7,8,3\n",
            422,
            "invalid_labels",
            &["line 2: class 3 is out of range", "0 to 2"],
        ),
        (
            "a negative class",
            "1,2,3,4,-1\n",
            422,
            "invalid_labels",
            &["line 1: class -1"],
        ),
        (
            "indices and names mixed",
            "1,2,3,4,0\n5,6,7,8,dog\n",
            422,
            "invalid_labels",
            &["line 2", "\"dog\"", "line 1"],
        ),
        (
            "more names than outputs",
            "1,2,3,4,a\n1,2,3,4,b\n1,2,3,4,c\n1,2,3,4,d\n",
            422,
            "invalid_labels",
            &["more than 3 classes", "d"],
        ),
        (
            "an empty class",
            "1,2,3,4,\n",
            422,
            "invalid_labels",
            &["line 1 has an empty class"],
        ),
        (
            "a fractional class",
            "1,2,3,4,0\n5,6,7,8,1.5\n",
            422,
            "invalid_labels",
            &["line 2", "\"1.5\"", "whole"],
        ),
        (
            "a class that is neither",
            "1,2,3,4,2b\n",
            400,
            "invalid_request",
            &["line 1", "\"2b\"", "neither"],
        ),
        (
            "NaN, a missing value",
            "1,2,3,4,0\nnan,6,7,8,1\n",
            400,
            "invalid_request",
            &["line 2, column 1", "\"nan\" is not a number"],
        ),
        (
            "a number beyond f64",
            "1,2,3,1e400,0\n",
            422,
            "invalid_value",
            &["line 1, column 4"],
        ),
        (
            "a header and nothing else",
            "a,b,c,d,class\n",
            422,
            "shape_mismatch",
            &["no samples"],
        ),
        (
            "a file whose newlines curl -d removed",
            "a,b,c,d,class1,2,3,4,05,6,7,8,19,10,11,12,2",
            422,
            "shape_mismatch",
            &["--data-binary"],
        ),
        ("an empty body", "", 400, "invalid_json", &["empty"]),
    ];
    for (what, csv, status, code, words) in cases {
        let resp = put_csv(&app, &id, csv).await;
        let problem = assert_problem(&resp, *status, code);
        for w in *words {
            assert!(
                detail(&problem).contains(w),
                "{what}: the detail does not say {w:?}: {}",
                detail(&problem)
            );
        }
    }
    let after = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(after["dataset"], Value::Null, "a refused CSV set a dataset");

    // Another content type: 415, naming the three a dataset takes.
    let resp = app
        .send(
            Method::PUT,
            &format!("/sessions/{id}/dataset"),
            Some("text/plain"),
            Some(good),
        )
        .await;
    let problem = assert_problem(&resp, 415, "unsupported_media_type");
    for w in [
        "application/json",
        "text/csv",
        "application/x-npz",
        "--data-binary",
    ] {
        assert!(detail(&problem).contains(w), "415 without {w}: {problem}");
    }
    put_csv(&app, &id, good).await.expect(200);
}

#[tokio::test]
async fn csv_and_npz_keep_the_servers_limits() {
    let app = spawn_app(backprop_server::Config {
        max_samples: 3,
        max_body_bytes: 64 * 1024,
        ..config()
    })
    .await;
    let id = session(&app).await;
    let four = "1,2,3,4,0\n".repeat(4);
    let problem = assert_problem(&put_csv(&app, &id, &four).await, 422, "too_large");
    assert!(detail(&problem).contains("--max-samples"), "{problem}");
    let big = "1,2,3,4,0\n".repeat(7000);
    assert_problem(&put_csv(&app, &id, &big).await, 413, "body_too_large");

    let np = Numpy::run(
        r#"
import numpy as np, sys, os
d = sys.argv[1]
np.savez(os.path.join(d, "four.npz"), x=np.ones((4, 4)), y=np.zeros(4, dtype=np.int64))
# 200,000 samples of zeros compress to a few kB, but would decompress to 800,000 numbers.
np.savez_compressed(os.path.join(d, "bomb.npz"), x=np.zeros((200000, 4)), y=np.zeros(200000, dtype=np.int64))
"#,
    );
    let problem = assert_problem(
        &put_npz(&app, &id, &np.file("four.npz")).await,
        422,
        "too_large",
    );
    assert!(detail(&problem).contains("--max-samples"), "{problem}");
    let bomb = np.file("bomb.npz");
    assert!(std::fs::metadata(&bomb).unwrap().len() < 64 * 1024);
    let app2 = spawn_app(backprop_server::Config {
        max_body_bytes: 64 * 1024,
        ..config()
    })
    .await;
    let id2 = session(&app2).await;
    let problem = assert_problem(&put_npz(&app2, &id2, &bomb).await, 422, "too_large");
    assert!(
        detail(&problem).contains("1000000 numbers") && detail(&problem).contains("32768"),
        "{problem}"
    );
}

/// Files written by a NumPy script into a fresh directory (removed afterwards).
struct Numpy {
    dir: PathBuf,
}

impl Numpy {
    /// Runs `script` with `python3`; it gets the directory as `sys.argv[1]`.
    fn run(script: &str) -> Numpy {
        let dir = std::env::temp_dir().join(format!("backprop-npz-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "these tests make NPZ files with real NumPy, and python3 did not start \
                     ({e}): install Python 3 and NumPy (apt-get install python3 python3-pip; \
                     pip install numpy)"
                )
            });
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named 'numpy'") {
            panic!(
                "these tests make NPZ files with real NumPy, which is missing: pip install numpy"
            );
        }
        assert!(out.status.success(), "the NumPy script failed:\n{stderr}");
        Numpy { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn json(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.file(name)).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

impl Drop for Numpy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn npz_from_numpy_trains_exactly_as_the_same_data_in_json() {
    let np = Numpy::run(
        r#"
import json, os, sys
import numpy as np
d = sys.argv[1]
# The notebook's X and Y as the notebook builds them: int64 arrays, samples 2x2.
X = np.array([[[56, 231], [24, 1]], [[120, 30], [24, 0]], [[20, 31], [240, 100]],
              [[56, 201], [22, -10]], [[140, 27], [30, 10]], [[25, 30], [230, 110]]])
Y = np.array([0, 1, 2, 0, 1, 2])
assert X.dtype == np.int64 and Y.dtype == np.int64
np.savez(os.path.join(d, "notebook.npz"), x=X, y=Y)
# Random float64 data with one-hot rows, plain and compressed, and the same as JSON
# (json.dumps writes each float's repr, which reads back to the same double).
rng = np.random.default_rng(7)
R = rng.normal(size=(50, 4))
labels = rng.integers(0, 3, size=50)
H = np.eye(3)[labels]
np.savez(os.path.join(d, "random.npz"), x=R, y=H)
np.savez_compressed(os.path.join(d, "random_compressed.npz"), x=R, y=H)
np.savez(os.path.join(d, "random_fortran.npz"), x=np.asfortranarray(R), y=labels)
with open(os.path.join(d, "random.json"), "w") as f:
    json.dump({"x": R.tolist(), "y": H.tolist()}, f)
# Other dtypes a student's arrays may have; each file's JSON twin holds the same values.
small = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 1, 0, 1]])
for name, x, y in [
    ("float32", small.astype(np.float32) / 8, np.array([0, 1, 2], dtype=np.int32)),
    ("uint8", small.astype(np.uint8), np.array([2, 1, 0], dtype=np.uint8)),
    ("int32", small.astype(np.int32), np.array([0.0, 2.0, 1.0])),
    ("bool", small.astype(bool), np.array([1, 1, 0], dtype=np.int16)),
    ("big_endian", small.astype(">f8"), np.array([0, 1, 2], dtype=">i8")),
]:
    np.savez(os.path.join(d, name + ".npz"), x=x, y=y)
    with open(os.path.join(d, name + ".json"), "w") as f:
        json.dump({"x": x.astype(np.float64).tolist(), "y": y.astype(np.int64).tolist()}, f)
"#,
    );
    let app = spawn_app(config()).await;

    // The notebook's data from NumPy trains as the built-in dataset, and keeps its 2x2 shape.
    let reference = session(&app).await;
    app.put_builtin(&reference, "cat-dog-ship").await;
    let want = trained(&app, &reference).await;
    let id = session(&app).await;
    let body = put_npz(&app, &id, &np.file("notebook.npz"))
        .await
        .expect_json(200);
    assert_eq!(
        body,
        json!({"samples": 6, "features": 4, "classes": 3, "builtin": null})
    );
    let export = app
        .get(&format!("/sessions/{id}/export"))
        .await
        .expect_json(200);
    assert_eq!(export["dataset"]["sample_shape"], json!([2, 2]));
    if let Err(e) = same_bits(&trained(&app, &id).await, &want) {
        panic!("the notebook's NPZ trains otherwise than the built-in dataset: {e}");
    }

    // Random float64 data: NPZ (plain, compressed, Fortran order) and JSON, bit for bit.
    let create = json!({"layers": [4, 5, 3], "learning_rate": 0.01, "grad_reduction": "mean",
                        "init": {"method": "xavier", "seed": 3}});
    let (json_id, _) = app.create_session(&create).await;
    app.put(
        &format!("/sessions/{json_id}/dataset"),
        &np.json("random.json"),
    )
    .await
    .expect(200);
    let want = trained(&app, &json_id).await;
    for file in ["random.npz", "random_compressed.npz", "random_fortran.npz"] {
        let (id, _) = app.create_session(&create).await;
        put_npz(&app, &id, &np.file(file)).await.expect(200);
        if let Err(e) = same_bits(&trained(&app, &id).await, &want) {
            panic!("{file} trains otherwise than the same data as JSON: {e}");
        }
    }

    // Every dtype holds the same dataset as its JSON twin.
    for name in ["float32", "uint8", "int32", "bool", "big_endian"] {
        let (a, _) = app.create_session(&json!({"layers": [4, 3]})).await;
        let (b, _) = app.create_session(&json!({"layers": [4, 3]})).await;
        put_npz(&app, &a, &np.file(&format!("{name}.npz")))
            .await
            .expect(200);
        app.put(
            &format!("/sessions/{b}/dataset"),
            &np.json(&format!("{name}.json")),
        )
        .await
        .expect(200);
        let data = |id: String| {
            let app = app.clone();
            async move {
                app.get(&format!("/sessions/{id}/export"))
                    .await
                    .expect_json(200)["dataset"]
                    .clone()
            }
        };
        let (da, db) = (data(a).await, data(b).await);
        if let Err(e) = same_bits(&da["x"], &db["x"]).and(same_bits(&da["y"], &db["y"])) {
            panic!("{name}: the NPZ's dataset differs from its JSON twin: {e}");
        }
    }
}

#[tokio::test]
async fn npz_faults_get_jsons_codes_and_say_what_numpy_call_would_be_right() {
    let np = Numpy::run(
        r#"
import io, os, sys, zipfile
import numpy as np
d = sys.argv[1]
p = lambda name: os.path.join(d, name)
X = np.arange(24, dtype=np.float64).reshape(6, 4)
Y = np.array([0, 1, 2, 0, 1, 2])
np.savez(p("complex.npz"), x=X.astype(np.complex128), y=Y)
np.savez(p("strings.npz"), x=X, y=np.array(["cat", "dog", "ship"] * 2))
np.savez(p("wide.npz"), x=np.ones((6, 5)), y=Y)
np.savez(p("short_y.npz"), x=X, y=Y[:5])
np.savez(p("narrow_rows.npz"), x=X, y=np.ones((6, 2)) / 2)
np.savez(p("not_distributions.npz"), x=X, y=np.ones((6, 3)))
np.savez(p("class_3.npz"), x=X, y=np.array([0, 1, 2, 3, 1, 2]))
np.savez(p("half.npz"), x=X, y=np.array([0, 0.5, 1, 0, 1, 2]))
np.savez(p("no_y.npz"), x=X)
np.savez(p("extra.npz"), x=X, y=Y, z=Y)
np.savez(p("positional.npz"), X, Y)
np.save(p("x.npy"), X)
np.savez(p("nan.npz"), x=np.where(X == 5, np.nan, X), y=Y)
np.savez(p("scalar.npz"), x=np.float64(3), y=Y)
np.savez(p("empty.npz"), x=np.zeros((0, 4)), y=np.zeros(0, dtype=np.int64))
np.savez(p("deep.npz"), x=np.ones((6,) + (1,) * 8 + (4,)), y=Y)
np.savez(p("matrix_y.npz"), x=X, y=np.zeros((6, 3, 1)))

def forged(name, header, data=b""):
    # A .npy whose header claims what it likes, zipped as np.savez zips it.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", header + data)
        z.writestr("y.npy", open(p("y_ok.npy"), "rb").read())
    open(p(name), "wb").write(buf.getvalue())

np.save(p("y_ok.npy"), Y)
h = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 4), }"
h = h + " " * (63 - (10 + len(h)) % 64) + "\n"
forged("huge_shape.npz", b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode())
# Version 2 headers have a 4-byte length: this one claims 4 GiB.
forged("huge_header.npz", b"\x93NUMPY\x02\x00" + (0xFFFFFFF0).to_bytes(4, "little") + b"{")
# A header of nothing but brackets, nested 5000 deep.
h = "(" * 5000 + "\n"
forged("deep_header.npz", b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h.encode())
# A ZIP64 end record (Python writes one past ZIP_FILECOUNT_LIMIT entries).
zipfile.ZIP_FILECOUNT_LIMIT = 1
np.savez(p("zip64.npz"), x=X, y=Y)
"#,
    );
    let app = spawn_app(config()).await;
    let id = session(&app).await;
    let cases: &[(&str, u16, &str, &[&str])] = &[
        (
            "complex.npz",
            400,
            "invalid_request",
            &["x has dtype complex128", "float64"],
        ),
        (
            "strings.npz",
            400,
            "invalid_request",
            &["y has dtype str ('<U4')", "real numbers"],
        ),
        (
            "wide.npz",
            422,
            "shape_mismatch",
            &["(6, 5)", "samples of 5 values", "takes 4"],
        ),
        (
            "short_y.npz",
            422,
            "shape_mismatch",
            &["6 samples", "5 labels"],
        ),
        (
            "narrow_rows.npz",
            422,
            "shape_mismatch",
            &["(6, 2)", "need 3"],
        ),
        (
            "not_distributions.npz",
            422,
            "invalid_labels",
            &["sums to 3"],
        ),
        ("class_3.npz", 422, "invalid_labels", &["y[3] is class 3"]),
        ("half.npz", 422, "invalid_labels", &["y[1] is 0.5", "whole"]),
        (
            "no_y.npz",
            400,
            "invalid_request",
            &["[\"x\"]", "np.savez(f, x=X, y=Y)"],
        ),
        (
            "extra.npz",
            400,
            "invalid_request",
            &["\"z\"", "exactly two"],
        ),
        (
            "positional.npz",
            400,
            "invalid_request",
            &["arr_0", "np.savez(f, x=X, y=Y)"],
        ),
        (
            "x.npy",
            400,
            "invalid_request",
            &["one .npy array", "np.savez"],
        ),
        ("nan.npz", 422, "invalid_value", &["sample 1", "finite"]),
        ("scalar.npz", 422, "shape_mismatch", &["single number"]),
        ("empty.npz", 422, "shape_mismatch", &["no samples"]),
        (
            "deep.npz",
            422,
            "shape_mismatch",
            &["nested 9 deep", "at most 8"],
        ),
        (
            "matrix_y.npz",
            422,
            "shape_mismatch",
            &["(6, 3, 1)", "class indices"],
        ),
        (
            "huge_shape.npz",
            422,
            "too_large",
            &["1000000000000 samples", "--max-samples"],
        ),
        (
            "huge_header.npz",
            400,
            "invalid_request",
            &["not a valid .npy", "header"],
        ),
        (
            "deep_header.npz",
            400,
            "invalid_request",
            &["nests brackets too deeply"],
        ),
        ("zip64.npz", 400, "invalid_request", &["ZIP64"]),
    ];
    for (file, status, code, words) in cases {
        let resp = put_npz(&app, &id, &np.file(file)).await;
        let problem = assert_problem(&resp, *status, code);
        for w in *words {
            assert!(
                detail(&problem).contains(w),
                "{file}: the detail does not say {w:?}: {}",
                detail(&problem)
            );
        }
    }
    // Not a zip at all.
    let resp = app
        .send(
            Method::PUT,
            &format!("/sessions/{id}/dataset"),
            Some(NPZ),
            Some("x,y\n1,2\n"),
        )
        .await;
    let problem = assert_problem(&resp, 400, "invalid_request");
    assert!(detail(&problem).contains("not an NPZ file"), "{problem}");
    let after = app.get(&format!("/sessions/{id}")).await.expect_json(200);
    assert_eq!(after["dataset"], Value::Null, "a refused NPZ set a dataset");
}

/// Mutated and truncated files (a flipped byte, a cut, random bytes) are refused with a 4xx
/// or taken whole, never a 5xx or a dropped connection, and a refused one changes nothing.
#[tokio::test]
async fn mangled_files_are_4xx_never_5xx() {
    let np = Numpy::run(
        r#"
import os, sys
import numpy as np
d = sys.argv[1]
X = np.arange(24, dtype=np.float64).reshape(6, 2, 2)
np.savez(os.path.join(d, "plain.npz"), x=X, y=np.array([0, 1, 2, 0, 1, 2]))
np.savez_compressed(os.path.join(d, "compressed.npz"), x=X, y=np.eye(3)[[0, 1, 2, 0, 1, 2]])
"#,
    );
    let app = spawn_app(config()).await;
    let id = session(&app).await;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let csv = b"a,b,c,d,class\n56,231,24,1,cat\n120,30,24,0,dog\n20,31,240,100,ship\n".to_vec();
    let files = [
        ("text/csv", csv),
        (NPZ, std::fs::read(np.file("plain.npz")).unwrap()),
        (NPZ, std::fs::read(np.file("compressed.npz")).unwrap()),
    ];
    let mut accepted = 0;
    for (content_type, original) in &files {
        for round in 0..120 {
            let mut body = original.clone();
            match round % 4 {
                0 => {
                    let i = next() as usize % body.len();
                    body[i] ^= 1 << (next() % 8);
                }
                1 => body.truncate(next() as usize % body.len()),
                2 => {
                    let i = next() as usize % body.len();
                    body[i] = next() as u8;
                    let j = next() as usize % body.len();
                    body[j] = next() as u8;
                }
                _ => {
                    let n = next() as usize % 256;
                    body = (0..n).map(|_| next() as u8).collect();
                }
            }
            let resp = app
                .send_bytes_as(
                    Auth::Default,
                    Method::PUT,
                    &format!("/sessions/{id}/dataset"),
                    Some(content_type),
                    Some(body),
                    &format!("{content_type} mutation {round}"),
                )
                .await;
            let status = resp.status.as_u16();
            assert!(
                status == 200 || (400..500).contains(&status),
                "{}: {status} {}",
                resp.request,
                resp.body
            );
            if status == 200 {
                accepted += 1;
            } else {
                let problem = resp.json();
                assert!(
                    !detail(&problem).is_empty(),
                    "{}: no detail in {problem}",
                    resp.request
                );
            }
        }
    }
    // Some single flips land in data and still read (a value changes): the mutations reach
    // past the first check.
    assert!(accepted > 0, "every mutation was refused");
    app.get("/healthz").await.expect(200);
}
