//! The WebSocket opening handshake (RFC 6455 §4.2), done here rather than through axum's
//! `WebSocketUpgrade`, so the connection task is ours from the first poll: it is spawned on the
//! gateway's `TaskTracker` (shutdown waits for it even mid-upgrade), and no extractor wrapper
//! state stays in every connection's task for its whole life.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::error::ApiError;

/// A checked handshake: what the 101 response needs and the pending upgraded connection.
#[derive(Debug)]
pub struct Handshake {
    accept: HeaderValue,
    pub on_upgrade: OnUpgrade,
}

/// True when a comma-separated header (all its values) lists `token`, case-insensitively.
fn lists_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the client's handshake and takes the upgrade from the request.
///
/// # Errors
/// 426 `websocket_upgrade_required` when the request is not a WebSocket version 13 handshake
/// over HTTP/1.1.
pub fn check(req: &mut Request) -> Result<Handshake, ApiError> {
    let refuse = |why: &str| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_upgrade_required",
            format!("not a WebSocket handshake: {why}"),
        )
    };
    let headers = req.headers();
    if !lists_token(headers, header::CONNECTION, "upgrade") {
        return Err(refuse("Connection header must include \"upgrade\""));
    }
    if !lists_token(headers, header::UPGRADE, "websocket") {
        return Err(refuse("Upgrade header must be \"websocket\""));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(refuse("Sec-WebSocket-Version must be 13"));
    }
    // The key is base64 of 16 random bytes: 24 characters.
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .ok_or_else(|| refuse("Sec-WebSocket-Key must be 24 characters of base64"))?;
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| refuse("bad Sec-WebSocket-Key"))?;
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| refuse("the connection cannot be upgraded (HTTP/1.1 required)"))?;
    Ok(Handshake { accept, on_upgrade })
}

impl Handshake {
    /// The `101 Switching Protocols` answer.
    pub fn response(&self) -> Response {
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept.clone());
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&str, &str)]) -> Request {
        let mut b = axum::http::Request::builder().uri("/ws");
        for (k, v) in pairs {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn refuses_incomplete_handshakes() {
        for skip in 0..GOOD.len() {
            let pairs: Vec<_> =
                GOOD.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, p)| *p).collect();
            let err = check(&mut request(&pairs)).unwrap_err();
            assert_eq!((err.status, err.code), (StatusCode::UPGRADE_REQUIRED, "websocket_upgrade_required"));
        }
        let mut old = GOOD;
        old[2] = ("sec-websocket-version", "8");
        assert!(check(&mut request(&old)).is_err());
    }

    #[test]
    fn a_complete_handshake_still_needs_a_real_connection() {
        // Headers are fine, but a request built in memory has no connection to upgrade.
        let err = check(&mut request(&GOOD)).unwrap_err();
        assert!(err.message.contains("HTTP/1.1"), "{}", err.message);
        // RFC 6455's worked example.
        assert_eq!(derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
