//! `GET /ws`: the WebSocket opening handshake (RFC 6455 §4.2, with the subprotocol choice of
//! `encoding`), the connection permit, and the spawn of the connection task with its socket
//! configuration.
//!
//! The handshake is done here rather than through axum's `WebSocketUpgrade`, so the connection
//! task is ours from the first poll: it is spawned on the gateway's `TaskTracker` (shutdown waits
//! for it even mid-upgrade), and no extractor wrapper state stays in every connection's task for
//! its whole life. What the task then runs is `connection`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use serde::Deserialize;
use tickstream_api::{ErrorCode, MonitoringService, SessionId};
use tickstream_telemetry::GaugeGuard;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::AppState;
use crate::auth::{Caller, StreamAuth};
use crate::close::{CloseCode, Ending};
use crate::connection::Connection;
use crate::direct::SocketIo;
use crate::encoding::Encoding;
use crate::error::ApiError;
use crate::limits::table::Slot;
use crate::limits::{Client, ClientKey, Limits};
use tokio::sync::OwnedSemaphorePermit;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    session_id: Option<String>,
}

/// What a stream (`GET /ws` or Server-Sent Events) holds until its task ends.
pub(crate) struct Admitted {
    pub permit: OwnedSemaphorePermit,
    pub per_client: Slot<ClientKey>,
    pub session: SessionId,
}

/// The admission both stream routes share, in this order: not draining (503), a connection
/// permit (503), the client's share (429, returned as `Ok(Err(response))` with its Retry-After),
/// a well-formed session id the caller owns (404) — the owner is checked before attaching,
/// because attaching replaces the owner's own stream (4409).
pub(crate) async fn admit<S: MonitoringService>(
    st: &AppState<S>,
    client: &ClientKey,
    caller: &Caller,
    raw: &str,
) -> Result<Result<Admitted, Response>, ApiError> {
    if st.shutdown.is_cancelled() {
        return Err(ApiError::new(ErrorCode::ShuttingDown, "server is shutting down"));
    }
    let permit = st
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::new(ErrorCode::TooManyConnections, "connection limit reached"))?;
    let per_client = match st.limits.websocket(client) {
        Ok(slot) => slot,
        Err(limited) => return Ok(Err(limited.into_response())),
    };
    let session = SessionId::parse(raw).ok_or_else(ApiError::session_not_found)?;
    crate::rest::check_owner(&*st.service, caller, session).await?;
    Ok(Ok(Admitted { permit, per_client, session }))
}

/// `GET /ws?session_id=ID`: checks everything before upgrading, so a refused handshake gets an
/// HTTP status and a JSON error instead of a socket that closes at once.
pub async fn ws_upgrade<S: MonitoringService>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Client(client): Client,
    query: Result<Query<WsQuery>, QueryRejection>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let raw = query.ok().and_then(|Query(q)| q.session_id).ok_or_else(|| {
        ApiError::bad_request(ErrorCode::MissingSessionId, "query parameter session_id is required")
    })?;
    let handshake = match check(&mut req) {
        Ok(h) => h,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    // The permit and the client's share are taken before the upgrade and held until the
    // connection task ends.
    let Admitted { permit, per_client, session } = match admit(&st, &client, &caller, &raw).await? {
        Ok(admitted) => admitted,
        Err(refused) => return Ok(refused),
    };
    let auth = match (&caller, st.auth.verifier()) {
        (Caller::Verified(identity), Some(verifier)) => Some(Box::new(StreamAuth {
            verifier: verifier.clone(),
            subject: identity.subject.clone(),
            expires_at: identity.expires_at,
        })),
        _ => None,
    };
    // Attaching here replaces (4409) any older socket of the session before this one upgrades.
    let updates = st.service.stream_price_updates(session).await.inspect_err(|e| {
        if matches!(e, tickstream_api::ServiceError::SessionNotFound) {
            st.limits.session_gone(session);
        }
    })?;
    let connection = Connection {
        direct: None,
        service: st.service.clone(),
        session,
        config: st.config.clone(),
        metrics: st.metrics.clone(),
        shutdown: st.shutdown.clone(),
        auth,
        encoding: handshake.encoding,
    };
    let response = handshake.response();
    let admitted = Admitted { permit, per_client, session };
    st.tracker.spawn(connection_task(connection, updates, handshake.on_upgrade, admitted, st.limits.clone()));
    Ok(response)
}

/// The connection task: waits for hyper to hand over the upgraded connection, then runs the
/// connection loop on it, holding the admission (`admitted`) until it ends.
///
/// This future is what every connection costs besides its socket and session, so it holds each
/// thing once: an `async` function's arguments stay in its state for its whole life, hence no
/// argument that only builds something else (the WebSocket configuration is made here from
/// the connection's config, not passed in: −64 B), and the connection, the stream and the socket
/// are borrowed by the loop, not moved into it. Its size is pinned by a test
/// (`connection::size_tests`).
pub(crate) async fn connection_task<S: MonitoringService>(
    mut connection: Connection<S>,
    mut updates: S::Updates,
    on_upgrade: OnUpgrade,
    admitted: Admitted,
    limits: Arc<Limits>,
) {
    let session = admitted.session;
    let _task = connection.metrics.task("ws_connection");
    // Resolves once hyper has sent the 101 and handed over the connection; fails if the
    // client went away first (then `updates` drops here and the session detaches).
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            return tracing::debug!(error = %e, session = %tickstream_auth::fingerprint(session.to_string()), "websocket upgrade failed");
        }
    };
    let _open = GaugeGuard::new(&connection.metrics.ws_connections);
    let config = ws_config(&connection.config);
    let (io, direct) = SocketIo::new(upgraded, &connection.config, connection.encoding, &connection.metrics);
    if let Some(direct) = direct {
        // The engine writes through it only once the stream has parked, after the snapshot.
        connection.service.write_direct(&mut updates, Arc::clone(&direct) as _);
        connection.direct = Some(direct);
    }
    let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let ending = connection.run(&mut socket, &mut updates).await;
    if ending == Ending::Server(CloseCode::SessionEnded) {
        limits.session_gone(session);
    }
    tracing::debug!(session = %tickstream_auth::fingerprint(session.to_string()), ?ending, "websocket closed");
}

/// tungstenite's settings for one connection.
fn ws_config(cfg: &crate::GatewayConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_size)
        // Every message is flushed at once: latency first, and nothing queues in tungstenite.
        .write_buffer_size(0)
        .max_write_buffer_size(cfg.max_frame_bytes * 4 + 64 * 1024)
        .max_message_size(Some(cfg.max_frame_bytes))
        .max_frame_size(Some(cfg.max_frame_bytes))
}

/// A checked handshake: what the 101 response needs and the pending upgraded connection.
#[derive(Debug)]
pub struct Handshake {
    accept: HeaderValue,
    pub on_upgrade: OnUpgrade,
    /// The subprotocol the client chose (`encoding`), echoed in the 101 when it named one.
    pub encoding: Encoding,
    protocol: Option<HeaderValue>,
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
/// The refusal to send, with the JSON error body:
/// - 405 `method_not_allowed` for anything but GET (axum routes HEAD to GET handlers);
/// - 426 `websocket_upgrade_required`, with `Upgrade: websocket` and `Sec-WebSocket-Version: 13`
///   (RFC 6455 §4.4), when the request is not a version 13 WebSocket upgrade;
/// - 400 `invalid_handshake` for a missing or malformed `Sec-WebSocket-Key`, or a connection that
///   cannot be upgraded (not HTTP/1.1).
pub fn check(req: &mut Request) -> Result<Handshake, Refusal> {
    if req.method() != Method::GET {
        let e = ApiError::new(ErrorCode::MethodNotAllowed, "a WebSocket handshake is a GET");
        return Err(Refusal(e));
    }
    let upgrade_required = |why: &str| {
        Refusal(ApiError::new(
            ErrorCode::WebsocketUpgradeRequired,
            format!("not a WebSocket handshake: {why}"),
        ))
    };
    let invalid = |why: &str| {
        Refusal(ApiError::bad_request(ErrorCode::InvalidHandshake, format!("bad WebSocket handshake: {why}")))
    };
    let headers = req.headers();
    if !lists_token(headers, header::CONNECTION, "upgrade") {
        return Err(upgrade_required("Connection header must include \"upgrade\""));
    }
    if !lists_token(headers, header::UPGRADE, "websocket") {
        return Err(upgrade_required("Upgrade header must be \"websocket\""));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
        return Err(upgrade_required("Sec-WebSocket-Version must be 13"));
    }
    // The key is base64 of 16 random bytes: 24 characters.
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .ok_or_else(|| invalid("Sec-WebSocket-Key must be 24 characters of base64"))?;
    let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| invalid("bad Sec-WebSocket-Key"))?;
    let (encoding, protocol) = Encoding::negotiate(headers);
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| invalid("the connection cannot be upgraded (HTTP/1.1 required)"))?;
    Ok(Handshake { accept, on_upgrade, encoding, protocol })
}

/// A refused handshake: the JSON error, plus the headers RFC 6455 §4.4 asks for on a 426.
#[derive(Debug)]
pub struct Refusal(pub ApiError);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let upgrade_required = self.0.status == StatusCode::UPGRADE_REQUIRED;
        let mut resp = self.0.into_response();
        if upgrade_required {
            resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            resp.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        resp
    }
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
        if let Some(protocol) = &self.protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol.clone());
        }
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

    fn refusal(req: &mut Request) -> (StatusCode, HeaderMap) {
        let resp = check(req).unwrap_err().into_response();
        (resp.status(), resp.headers().clone())
    }

    #[test]
    fn refuses_incomplete_handshakes() {
        for skip in 0..3 {
            let pairs: Vec<_> =
                GOOD.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, p)| *p).collect();
            let (status, headers) = refusal(&mut request(&pairs));
            assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
            assert_eq!(headers[header::SEC_WEBSOCKET_VERSION], "13");
            assert_eq!(headers[header::UPGRADE], "websocket");
        }
        let mut old = GOOD;
        old[2] = ("sec-websocket-version", "8");
        assert_eq!(refusal(&mut request(&old)).0, StatusCode::UPGRADE_REQUIRED);
        let mut bad_key = GOOD;
        bad_key[3] = ("sec-websocket-key", "short");
        assert_eq!(refusal(&mut request(&bad_key)).0, StatusCode::BAD_REQUEST);
        let no_key: Vec<_> = GOOD[..3].to_vec();
        assert_eq!(refusal(&mut request(&no_key)).0, StatusCode::BAD_REQUEST);
        let mut head = request(&GOOD);
        *head.method_mut() = Method::HEAD;
        assert_eq!(refusal(&mut head).0, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn a_complete_handshake_still_needs_a_real_connection() {
        // Headers are fine, but a request built in memory has no connection to upgrade.
        assert_eq!(refusal(&mut request(&GOOD)).0, StatusCode::BAD_REQUEST);
        // RFC 6455's worked example.
        assert_eq!(derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
