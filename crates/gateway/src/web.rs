//! The price board at `GET /`: one self-contained page (`web/index.html`), embedded in the
//! binary so every role that serves the API also serves its reference client, offline.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The page, HTML + CSS + JS in one file; edit it as a web file, it is compiled in.
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// Everything the page needs is inline or same-origin: the policy makes that a rule the browser
/// enforces (a stray CDN link fails loudly) instead of a convention.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            // The page changes with the binary: revalidate rather than keep a stale client.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        INDEX_HTML,
    )
        .into_response()
}
