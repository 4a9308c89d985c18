//! The operators' UI: plain HTML, CSS and JavaScript compiled into the binary (no build
//! step, nothing from elsewhere), served under `/ui/`. The page holds no data: its script
//! reads the JSON API with the operator's bearer token, kept in the tab's sessionStorage
//! and sent as `Authorization` (no cookie, so nothing for another site to ride on), and
//! builds the page from text only. Scripts and styles come from this server alone, and
//! the page is never framed.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::app::App;

/// Only this server's own scripts, styles, images and API; no inline script or style, no
/// plugin, no `<base>`, no framing.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");
const ICON: &str = include_str!("ui/favicon.svg");

/// `GET /` and `GET /ui` lead to the UI; `GET /ui/` and its files.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/ui/favicon.svg",
            get(|| async { file(ICON, "image/svg+xml") }),
        )
}

fn file(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // A new binary's UI is seen at once: the files are small, and a stale script
            // against a newer API is worse than a few kilobytes.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Every answer, the API's too, says its content type is what it is
/// (`X-Content-Type-Options: nosniff`).
pub(crate) async fn nosniff(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Answers carry who may do what and which host runs what, read with a bearer token: no
    // cache keeps them unless the route says otherwise (bundles, the UI's static files).
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
