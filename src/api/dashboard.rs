//! `GET /`: the dashboard, one page for a browser, compiled into the binary from `web/`
//! (plain HTML, CSS and JavaScript: no build step, nothing fetched from elsewhere).
//!
//! The page needs no token to load (it holds no data); the requests it makes carry the key
//! it asks for when the API answers 401. Its event streams are read with `fetch()`, which
//! can send that key as a header, where `EventSource` could not.

use std::sync::LazyLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

const PAGE: &str = include_str!("../../web/index.html");
const STYLE: &str = include_str!("../../web/style.css");
const SCRIPT: &str = include_str!("../../web/app.js");

/// The page with its style and script in place, put together once.
static DASHBOARD: LazyLock<String> = LazyLock::new(|| {
    PAGE.replacen("/*STYLE*/", STYLE, 1)
        .replacen("/*SCRIPT*/", SCRIPT, 1)
});

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(page))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page uses is in it, from this server.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
            ),
        ],
        DASHBOARD.as_str(),
    )
}
