//! Which web pages may call the edge: the `Origin` check and CORS, the outermost layer of the
//! router (before authentication, so a preflight needs no token).
//!
//! A request without `Origin` comes from a non-browser client and passes. A same-origin request
//! (the board served at `/` calling its own host) passes. Any other origin must be listed in
//! `--allowed-origins`: then REST answers carry CORS headers and preflights are answered here;
//! otherwise REST requests and WebSocket handshakes alike get 403 `origin_not_allowed` (for a
//! WebSocket this is what stops another site from using a visitor's network position).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tickstream_api::ErrorCode;

use crate::auth::Auth;
use crate::error::ApiError;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_S: &str = "600";

/// The origins allowed cross-origin access (`--allowed-origins`); empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

/// An `--allowed-origins` entry that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an origin (expected scheme://host[:port], e.g. https://app.example.com)")]
pub struct OriginError(pub String);

impl AllowedOrigins {
    /// Parses origins as `--allowed-origins` gives them; a trailing `/` is tolerated and case
    /// is ignored (browsers send them lower-case).
    ///
    /// # Errors
    /// [`OriginError`] for an entry without `http://` or `https://`, with a path, or with
    /// characters a header value cannot hold.
    pub fn parse<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> Result<Self, OriginError> {
        let mut out = Vec::new();
        for entry in entries {
            let raw = entry.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            let origin = raw.trim_end_matches('/').to_ascii_lowercase();
            let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            let valid = host.is_some_and(|h| {
                !h.is_empty() && !h.contains('/') && h.bytes().all(|b| b.is_ascii_graphic())
            });
            if !valid {
                return Err(OriginError(raw.to_owned()));
            }
            out.push(origin);
        }
        Ok(Self(out))
    }

    /// Whether `origin` is listed.
    pub fn allows(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `origin` names the host the request was sent to (the page calling its own server).
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// The middleware; see the module comment.
pub async fn check_origin(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let text = origin.to_str().unwrap_or("");
    if same_origin(text, req.headers()) {
        return next.run(req).await;
    }
    if !auth.origins.allows(text) {
        return ApiError::new(ErrorCode::OriginNotAllowed, "this origin may not call the API")
            .into_response();
    }
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight { preflight_answer() } else { next.run(req).await };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.append(header::VARY, HeaderValue::from_static("origin"));
    // A script may read why it was refused.
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("www-authenticate"));
    resp
}

fn preflight_answer() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE_S));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_checked() {
        let o = AllowedOrigins::parse(["https://App.example.com/", " http://localhost:3000", ""]).unwrap();
        assert!(o.allows("https://app.example.com"));
        assert!(o.allows("http://localhost:3000"));
        assert!(!o.allows("http://app.example.com"), "the scheme is part of the origin");
        assert!(!o.allows("null"));
        for bad in ["app.example.com", "https://", "https://a.com/path", "ftp://a.com"] {
            assert!(AllowedOrigins::parse([bad]).is_err(), "{bad}");
        }
        assert!(AllowedOrigins::default().is_empty());
    }

    #[test]
    fn same_origin_compares_with_the_host_header() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin("http://127.0.0.1:8080", &h));
        assert!(same_origin("https://127.0.0.1:8080", &h));
        assert!(!same_origin("http://127.0.0.1:9999", &h));
        assert!(!same_origin("http://evil.example", &h));
        assert!(!same_origin("null", &h));
        assert!(!same_origin("http://127.0.0.1:8080", &HeaderMap::new()));
    }
}
