//! The built-in datasets: `GET /datasets`, `GET /datasets/{name}`.

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use ndarray::ArrayView2;
use serde_json::{Value, json};

use super::AppState;
use super::wire::Rows;
use crate::datasets::{Builtin, builtin, builtins};
use crate::error::{ApiError, ApiResult};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/datasets", get(list))
        .route("/datasets/{name}", get(one))
}

async fn list() -> Json<Value> {
    let datasets: Vec<Value> = builtins()
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "samples": b.samples(),
                "features": b.features(),
                "classes": b.classes(),
                "class_names": b.class_names,
                "description": b.description,
            })
        })
        .collect();
    Json(json!({ "datasets": datasets }))
}

pub fn unknown_builtin(name: &str) -> ApiError {
    let names: Vec<&str> = builtins().iter().map(|b| b.name).collect();
    ApiError::NotFound(format!(
        "no built-in dataset {name:?}; the built-in datasets are {names:?}"
    ))
}

async fn one(Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let b: &Builtin = builtin(&name).ok_or_else(|| unknown_builtin(&name))?;
    // Samples as stored: cat-dog-ship's as 2x2 images, iris's as flat rows.
    let x: Value = match *b.sample_shape {
        [rows, cols] => {
            b.x.chunks(rows * cols)
                .map(|s| {
                    let view = ArrayView2::from_shape((rows, cols), s)
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                    serde_json::to_value(Rows(view)).map_err(|e| ApiError::Internal(e.to_string()))
                })
                .collect::<ApiResult<Vec<Value>>>()?
                .into()
        }
        _ => json!(b.x.chunks(b.features()).collect::<Vec<_>>()),
    };
    Ok(Json(json!({
        "name": b.name,
        "x": x,
        "y": b.y,
        "class_names": b.class_names,
    })))
}
