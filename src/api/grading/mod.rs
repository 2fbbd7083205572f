//! Grading support: what a course server needs to grade a student's backprop automatically.
//!
//! `check` compares submitted numbers with the reference, `gradcheck` compares the
//! reference's own gradients with finite differences, `trace` shows every intermediate of one
//! pass, export/import/fork move whole sessions, and `GET /version` states the numeric
//! conventions a grader pins.

mod check;
mod probe;
mod transfer;

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::AppState;
use crate::nn::gradcheck;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/{id}/check", post(check::check))
        .route("/sessions/{id}/gradcheck", post(probe::gradcheck))
        .route("/sessions/{id}/trace", post(probe::trace))
        .route("/sessions/{id}/export", get(transfer::export))
        .route("/sessions/import", post(transfer::import))
        .route("/sessions/{id}/fork", post(transfer::fork))
        .route("/version", get(version))
}

/// Everything here is a constant of the build: a grader compares it with what it expects.
async fn version() -> Json<Value> {
    Json(json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "export_format": transfer::FORMAT,
        "conventions": {
            "float": "f64",
            "float_detail": "IEEE 754 binary64 throughout; every JSON number in and out \
                             survives the round trip bit for bit",
            "weights_shape": "(out, in)",
            "layer": "z = W x (+ b) per sample, as np.matmul(W, x.flatten())",
            "init": {
                "default_method": "numpy_rand",
                "numpy_rand": "np.random.seed(S); np.random.rand(out, in) per layer, layer 1 \
                               first, one stream: MT19937 seeded by init_genrand(S), each double \
                               ((a >> 5) * 67108864.0 + (b >> 6)) / 9007199254740992.0, \
                               row-major",
                "xavier": "np.random.seed(S); np.random.uniform(-a, a, (out, in)) per layer, \
                           that is -a + 2a * u, a = sqrt(6 / (in + out))",
                "he": "np.random.seed(S); np.random.uniform(-a, a, (out, in)) per layer, that \
                       is -a + 2a * u, a = sqrt(6 / in)",
                "biases": "zeros unless given explicitly",
            },
            "output": "softmax",
            "loss": "mean_cross_entropy",
            "loss_detail": "L = (1/M) sum_j sum_i -y_ij log p_ij over the M samples, \
                            computed as log-softmax",
            "grad_reduction_default": "sum",
            "grad_reduction": {
                "sum": "(P - Y)^T X summed over the samples: the notebook's Backward, \
                        M times the gradient of L",
                "mean": "the sum divided by M: the gradient of L",
            },
            "update": "W <- W - learning_rate * dW, full batch, once per epoch",
            "learning_rate_default": 0.0001,
            "history": "entry k (1-based) is the mean loss after the k-th update; \
                        initial_loss is the loss before the first update",
            "rel_error": "max over elements of |a - b| / max(1e-8, |a| + |b|)",
            "allclose": "every element has |a - b| <= atol + rtol * |b|, b the reference \
                         (numpy.allclose(a, b, rtol, atol))",
            "rtol_default": check::DEFAULT_RTOL,
            "atol_default": check::DEFAULT_ATOL,
            "gradcheck": {
                "h_default": gradcheck::DEFAULT_H,
                "numerical": "(L(w + h) - L(w - h)) / 2h of the mean loss L, times M for \
                              grad_reduction sum",
                "rel_error": "per layer, the max over its weights and biases",
                "near_kink": "ReLU pre-activations z over the dataset with |z| <= h",
                "max_work": gradcheck::MAX_WORK as u64,
            },
            "trace_max_samples": probe::TRACE_MAX_SAMPLES,
        },
    }))
}
