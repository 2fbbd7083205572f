//! Integration tests of the HTTP contract (`/work/shared/api-contract.md`, mirrored by
//! `openapi.yaml`): each test starts the real server on 127.0.0.1:0 and speaks HTTP to it.
//! One binary, one module per part of the contract.

#[path = "support/server.rs"]
mod server;

#[path = "api/helpers.rs"]
mod helpers;

#[path = "api/auth.rs"]
mod auth;
#[path = "api/charts.rs"]
mod charts;
#[path = "api/concurrency.rs"]
mod concurrency;
#[path = "api/details.rs"]
mod details;
#[path = "api/divergence.rs"]
mod divergence;
#[path = "api/errors.rs"]
mod errors;
#[path = "api/formats.rs"]
mod formats;
#[path = "api/json_exact.rs"]
mod json_exact;
#[path = "api/keys.rs"]
mod keys;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/metrics.rs"]
mod metrics;
#[path = "api/notebook.rs"]
mod notebook;
#[path = "api/sessions.rs"]
mod sessions;
#[path = "api/threads.rs"]
mod threads;
#[path = "api/walkthrough.rs"]
mod walkthrough;
