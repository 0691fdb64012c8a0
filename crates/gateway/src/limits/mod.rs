//! Per-client limits of the edge: who a client is ([`ClientKey`]), and the tables that bound
//! what one client may hold or do, so that one client at its limit never delays another.
//!
//! - a client is the verified JWT subject when the request carries one
//!   (`tickstream_auth::Identity` in the request's extensions, put there by the auth layer), else
//!   its IP address ([`proxy::client_ip`]: forwarding headers count only from
//!   `--trusted-proxies`); IPv6 addresses are keyed by their /64, what one host is given;
//! - [`Limits`] holds every table: session creations and price publishes per second (token
//!   buckets, [`table::Buckets`]), concurrent WebSockets per client and HTTP connections per IP
//!   ([`table::Counts`]), concurrent sessions per client ([`sessions::Owners`]);
//! - over a limit the request is answered 429 `rate_limited` with `Retry-After` ([`Limited`])
//!   before anything is created; an HTTP connection over its IP's limit is closed at accept.
//!
//! The handlers (`rest`, `upgrade`) and the accept loop (`server`) call in here; nothing here
//! does I/O except [`Limits::reserve_session`], which may ask the service whether a client's
//! sessions still exist.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tickstream_api::{ErrorCode, MonitoringService, ServiceError, SessionId};

use crate::error::ApiError;
use crate::{AppState, GatewayConfig};

pub mod proxy;
pub mod sessions;
pub mod table;

pub use proxy::Cidr;
use sessions::{Full, Owners, Reservation};
use table::{Buckets, Counts, Slot};

/// Who a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An authenticated caller, by its JWT `sub`.
    Subject(Arc<str>),
    /// An anonymous caller, by address (IPv6 by its /64).
    Ip(IpAddr),
}

impl ClientKey {
    pub fn ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(_) => Self::Ip(proxy::mask(ip, 64)),
            v4 => Self::Ip(v4),
        }
    }
}

/// Every per-client table of one gateway.
#[derive(Debug)]
pub struct Limits {
    trusted: Vec<Cidr>,
    creations: Buckets<ClientKey>,
    publishes: Buckets<ClientKey>,
    websockets: Arc<Counts<ClientKey>>,
    http: Arc<Counts<IpAddr>>,
    sessions: Arc<Owners>,
}

/// An HTTP connection's place in its IP's count (none for a trusted proxy); dropping it frees it.
#[derive(Debug)]
pub struct HttpSlot(#[allow(dead_code)] Option<Slot<IpAddr>>);

/// A request refused by a limit: 429 `rate_limited` with `Retry-After` (whole seconds, ≥ 1).
#[derive(Debug)]
pub struct Limited {
    pub error: ApiError,
    pub retry_after: Duration,
}

impl Limited {
    fn new(what: &str, retry_after: Duration) -> Self {
        Self { error: ApiError::new(ErrorCode::RateLimited, what.to_owned()), retry_after }
    }
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let secs = self.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = self.error.into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp
    }
}

/// A concurrent limit frees when something ends: a client is told to retry in a second.
const RETRY_CONCURRENT: Duration = Duration::from_secs(1);

impl Limits {
    pub fn new(cfg: &GatewayConfig) -> Self {
        let cap = cfg.max_tracked_clients;
        Self {
            trusted: cfg.trusted_proxies.clone(),
            creations: Buckets::new(cfg.session_create_burst, cfg.session_creates_per_sec, cap),
            publishes: Buckets::new(cfg.publish_burst, cfg.publishes_per_sec, cap),
            websockets: Counts::new(cfg.max_ws_per_client),
            http: Counts::new(cfg.max_http_connections_per_ip),
            sessions: Owners::new(cfg.max_sessions_per_client, cap),
        }
    }

    /// The client of a request from `peer` with these parts.
    pub fn client_of(&self, peer: IpAddr, parts: &Parts) -> ClientKey {
        if let Some(id) = parts.extensions.get::<tickstream_auth::Identity>() {
            return ClientKey::Subject(Arc::from(id.subject.as_str()));
        }
        ClientKey::ip(proxy::client_ip(peer, &parts.headers, &self.trusted))
    }

    /// A slot for one more HTTP connection from `peer`, taken at accept. Trusted proxies carry
    /// many clients on their connections and are not capped (their clients are, per request).
    /// `None`: the IP holds `--max-http-connections-per-ip` already.
    pub fn http_connection(&self, peer: IpAddr) -> Option<HttpSlot> {
        if proxy::is_trusted(&self.trusted, peer) {
            return Some(HttpSlot(None));
        }
        self.http.acquire(&peer).map(|slot| HttpSlot(Some(slot)))
    }

    /// One price-publish request.
    ///
    /// # Errors
    /// The client's bucket is empty.
    pub fn publish(&self, client: &ClientKey) -> Result<(), Limited> {
        self.publishes.take(client).map_err(|wait| Limited::new("price publish rate limit reached", wait))
    }

    /// One more WebSocket for `client`, held as long as the slot lives.
    ///
    /// # Errors
    /// The client holds `--max-ws-per-client` already.
    pub fn websocket(&self, client: &ClientKey) -> Result<Slot<ClientKey>, Limited> {
        self.websockets
            .acquire(client)
            .ok_or_else(|| Limited::new("WebSocket limit per client reached", RETRY_CONCURRENT))
    }

    /// A session creation for `client`: one token of its creation rate and one of its sessions.
    /// At the session limit, the client's sessions are first re-checked with `service` (at most
    /// once a second), and those that are gone give their slots back.
    ///
    /// # Errors
    /// Over the creation rate or the session limit.
    pub async fn reserve_session<S: MonitoringService>(
        &self,
        service: &S,
        client: &ClientKey,
    ) -> Result<Reservation, Limited> {
        self.creations
            .take(client)
            .map_err(|wait| Limited::new("session creation rate limit reached", wait))?;
        let full = || Limited::new("session limit per client reached", RETRY_CONCURRENT);
        match self.sessions.reserve(client) {
            Ok(r) => Ok(r),
            Err(Full::Limited) => Err(full()),
            Err(Full::Recheck(ids)) => {
                // Concurrent, and bounded by the per-client limit; only this client waits.
                let checks = ids.iter().map(|id| service.session(*id));
                let answers = futures::future::join_all(checks).await;
                for (id, answer) in ids.iter().zip(answers) {
                    if matches!(answer, Err(ServiceError::SessionNotFound)) {
                        self.sessions.release(*id);
                    }
                }
                self.sessions.reserve(client).map_err(|_| full())
            }
        }
    }

    /// The session ended or does not exist: its creator gets the slot back.
    pub fn session_gone(&self, id: SessionId) {
        self.sessions.release(id);
    }

    /// Sessions `client` holds through this gateway.
    pub fn sessions_held(&self, client: &ClientKey) -> usize {
        self.sessions.held(client)
    }
}

/// The router, with each request tagged with its connection's peer (`ConnectInfo`), which
/// `axum::serve` would do and our own accept loop must.
#[derive(Debug, Clone)]
pub(crate) struct WithPeer {
    router: axum::Router,
    peer: SocketAddr,
}

impl WithPeer {
    pub fn new(router: axum::Router, peer: SocketAddr) -> Self {
        Self { router, peer }
    }
}

impl<B> tower::Service<axum::http::Request<B>> for WithPeer
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = <axum::Router as tower::Service<axum::http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<axum::http::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.call(req)
    }
}

/// The client of a request, as a handler argument.
#[derive(Debug, Clone)]
pub struct Client(pub ClientKey);

impl<S: Send + Sync + 'static> FromRequestParts<AppState<S>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, st: &AppState<S>) -> Result<Self, Self::Rejection> {
        // The accept loop records the peer; a router driven without it (in-memory tests) has
        // one anonymous client.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip());
        Ok(Self(st.limits.client_of(peer, parts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_subjects_when_authenticated_else_addresses() {
        let limits = Limits::new(&GatewayConfig::default());
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        let v6: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        assert_eq!(limits.client_of(v6, &parts), ClientKey::Ip("2001:db8:1:2::".parse().unwrap()));
        parts.extensions.insert(tickstream_auth::Identity {
            subject: "alice".into(),
            scopes: Default::default(),
            expires_at: std::time::SystemTime::UNIX_EPOCH,
        });
        assert_eq!(limits.client_of(v6, &parts), ClientKey::Subject("alice".into()));
    }

    #[test]
    fn limited_answers_carry_retry_after_in_whole_seconds() {
        let resp = Limited::new("x", Duration::from_millis(10)).into_response();
        assert_eq!(resp.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let resp = Limited::new("x", Duration::from_millis(2500)).into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
    }

    #[test]
    fn trusted_proxies_are_not_capped_per_ip() {
        let cfg = GatewayConfig {
            max_http_connections_per_ip: 1,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..GatewayConfig::default()
        };
        let limits = Limits::new(&cfg);
        let a: IpAddr = "1.2.3.4".parse().unwrap();
        let held = limits.http_connection(a).expect("first");
        assert!(limits.http_connection(a).is_none(), "second from the same IP");
        drop(held);
        assert!(limits.http_connection(a).is_some(), "freed when the connection ends");
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limits.http_connection(proxy).is_some() && limits.http_connection(proxy).is_some());
    }
}
