//! The gateway side: a [`MonitoringService`] backed by remote engines, with failover.
//!
//! - **Links** ([`link`]). Streams travel over the engine link: a few long-lived `Link` calls
//!   per engine (one per connection, `connections_per_engine`), each carrying many sessions,
//!   with one event granted at a time per session so conflation stays on the engine.
//! - **Placement** ([`placement`]). A session's stream goes to the first reachable engine in a
//!   rendezvous-hash order of its id, the same order on every gateway: a client reconnecting
//!   through another gateway lands on the same engine, and losing an engine moves only its
//!   sessions. Calls not tied to a stream (create, get, delete, publish) go round robin.
//! - **Failover** ([`failover`]). When a stream's engine fails (connection reset, keepalive
//!   timeout, or the engine shutting down), the stream re-attaches the session to the next
//!   engine in its order; the session record is in the shared store, so that engine adopts it
//!   and starts with a fresh snapshot. The WebSocket never notices beyond that snapshot. Only
//!   when no engine takes the stream within `failover_timeout` does it end with
//!   [`CloseReason::Unavailable`](tickstream_api::CloseReason::Unavailable) (1013).
//! - **Health** ([`probe`]). A prober pings every engine; `ready()` (and `/healthz`) is false
//!   while none answers. A failed call marks its engine down at once, so other streams skip it.
//! - **Hygiene** ([`call`]). HTTP/2 keepalives on every connection; a deadline on every unary
//!   call and on opening a stream (not on the stream itself, which lives as long as its socket);
//!   a stream dropped by the gateway cancels the call, which detaches the session on the engine.
//!   Create and publish (prices or statuses, [`status`]) are not retried after a timeout (they
//!   may already have been applied).
//! - **Publishes** ([`publish`]). Publishes that arrive together share one `PublishPrices`
//!   call (at most a few in flight), each still answered on its own.
//!
//! This module holds the handle, its settings and the connections, and maps each
//! [`MonitoringService`] method onto the parts; errors become [`ServiceError`] only here.

mod call;
mod failover;
mod link;
mod placement;
mod probe;
mod publish;
mod status;
#[cfg(test)]
mod testing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::Rng;
use tickstream_api::{
    MonitoringService, ServiceError, SessionId, SessionInfo, StartRequest, Tick, Ticker, TradingStatus,
};
use tickstream_telemetry::Metrics;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::convert::{price_out, session_in, tickers_out};
use crate::pb;
use crate::pb::real_time_price_monitoring_service_client::RealTimePriceMonitoringServiceClient;
use crate::security::{AttachToken, ClientSecurity};

use call::request;
pub use failover::RemoteUpdates;
use failover::Routes;
use placement::session_hash;

type Client = RealTimePriceMonitoringServiceClient<InterceptedService<Channel, AttachToken>>;

/// A link carries many sessions, and its reader never waits on a socket (a session holds at
/// most the one event it was granted), so its window only has to keep a busy link from
/// stalling: what crosses it is bounded by the grants, not by the window.
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// Settings of [`RemoteEngine`].
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Engine URIs, e.g. `http://127.0.0.1:50051`.
    pub engines: Vec<String>,
    /// HTTP/2 connections per engine, each with one engine link; sessions are spread over the
    /// links by session id, so one link's reader and connection are not shared by every socket.
    pub connections_per_engine: usize,
    /// Deadline of each unary call and of opening a stream.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval and ack timeout: a hung engine is detected within their sum.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How long a stream whose engine failed keeps looking for another before closing (1013).
    pub failover_timeout: Duration,
    /// How often every engine is pinged for readiness.
    pub probe_interval: Duration,
    /// TLS to the engines (then their URIs are `https://`) and/or the cluster token.
    pub security: ClientSecurity,
}

impl RemoteConfig {
    /// The documented defaults, with no engines; the CLI's defaults follow them.
    pub const DEFAULT: Self = Self {
        engines: Vec::new(),
        connections_per_engine: 4,
        call_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        keepalive_interval: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(5),
        failover_timeout: Duration::from_secs(10),
        probe_interval: Duration::from_millis(500),
        security: ClientSecurity::NONE,
    };

    pub fn new(engines: Vec<String>) -> Self {
        Self { engines, ..Self::DEFAULT }
    }
}

/// Why a [`RemoteConfig`] was refused: fix the settings (nothing was dialled).
#[derive(Debug, thiserror::Error)]
pub enum RemoteConfigError {
    /// `engines` is empty: give at least one engine URI.
    #[error("at least one engine is needed")]
    NoEngines,
    /// An engine URI does not parse.
    #[error("invalid engine URI {uri:?}: {source}")]
    InvalidUri {
        uri: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// TLS is configured but an engine URI is `http://` (or the reverse), or tonic refused the
    /// TLS settings.
    #[error("engine URI {uri:?}: {reason}")]
    Tls { uri: String, reason: String },
}

/// Remote engines as one [`MonitoringService`]. Cheap to clone (a handle).
#[derive(Clone)]
pub struct RemoteEngine {
    inner: Arc<Inner>,
}

/// What every part shares: the engines, the settings, and where each stream is.
struct Inner {
    engines: Vec<EngineLink>,
    config: RemoteConfig,
    metrics: Arc<Metrics>,
    round_robin: AtomicUsize,
    routes: Routes,
    publishes: publish::Publishes,
}

/// One engine: its connections, and whether it answered its last probe or call.
struct EngineLink {
    uri: String,
    channels: Vec<Client>,
    /// One engine link per channel, opened while it carries a session.
    links: Vec<Arc<link::LinkSlot>>,
    up: AtomicBool,
    /// It answered `Unauthenticated` last (logged once, see `probe::refused`).
    refused: AtomicBool,
}

impl std::fmt::Debug for RemoteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engines: Vec<(&str, bool)> =
            self.inner.engines.iter().map(|e| (e.uri.as_str(), e.up.load(Ordering::Relaxed))).collect();
        f.debug_struct("RemoteEngine").field("engines", &engines).finish_non_exhaustive()
    }
}

impl RemoteEngine {
    /// Connects lazily to every engine (nothing is dialled until the first call or probe). Must
    /// be called within a Tokio runtime.
    ///
    /// # Errors
    /// No engine, or an invalid URI.
    pub fn new(config: RemoteConfig, metrics: Arc<Metrics>) -> Result<Self, RemoteConfigError> {
        if config.engines.is_empty() {
            return Err(RemoteConfigError::NoEngines);
        }
        let mut engines = Vec::with_capacity(config.engines.len());
        for uri in &config.engines {
            let endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|source| RemoteConfigError::InvalidUri { uri: uri.clone(), source })?;
            let endpoint = secure(endpoint, uri, &config.security)?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                // Conflation is kept on the engine by the link's grants, not by HTTP/2 windows:
                // the windows are large so a busy link never waits for a window update.
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .http2_keep_alive_interval(config.keepalive_interval)
                .keep_alive_timeout(config.keepalive_timeout)
                .keep_alive_while_idle(true);
            let channels: Vec<Client> = (0..config.connections_per_engine.max(1))
                .map(|_| {
                    Client::new(InterceptedService::new(
                        endpoint.connect_lazy(),
                        AttachToken(config.security.token.clone()),
                    ))
                })
                .collect();
            engines.push(EngineLink {
                uri: uri.clone(),
                links: channels.iter().map(|_| Arc::default()).collect(),
                channels,
                up: AtomicBool::new(false),
                refused: AtomicBool::new(false),
            });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engines,
                config,
                metrics,
                round_robin: AtomicUsize::new(0),
                routes: Routes::default(),
                publishes: publish::Publishes::default(),
            }),
        })
    }
}

/// TLS on `endpoint` when configured. A scheme that disagrees with the settings is refused
/// here rather than failing every call later (`http://` with TLS would silently go plaintext
/// in some setups; `https://` without it cannot connect at all).
fn secure(endpoint: Endpoint, uri: &str, security: &ClientSecurity) -> Result<Endpoint, RemoteConfigError> {
    let fail = |reason: String| RemoteConfigError::Tls { uri: uri.to_owned(), reason };
    let https = uri.starts_with("https://");
    match &security.tls {
        Some(tls) if https => endpoint.tls_config(tls.clone()).map_err(|e| fail(e.to_string())),
        Some(_) => Err(fail("TLS is configured (--grpc-ca): use https://".into())),
        None if https => Err(fail("https:// needs --grpc-tls-cert, --grpc-tls-key and --grpc-ca".into())),
        None => Ok(endpoint),
    }
}

impl Inner {
    /// One `PublishPrices` call with `ticks` (see [`publish`] for how publishes share it).
    async fn publish_now<'a>(&self, ticks: impl IntoIterator<Item = &'a Tick>) -> Result<(), ServiceError> {
        let msg = pb::PublishPricesRequest { prices: ticks.into_iter().map(price_out).collect() };
        let timeout = self.config.call_timeout;
        let key = rand::rng().random();
        self.call_once_sent(self.order_any(), key, |mut c| {
            let msg = msg.clone();
            async move { c.publish_prices(request(msg, timeout)).await }
        })
        .await?;
        Ok(())
    }

    /// Engines to try for a session, in its rendezvous order (see [`placement::session_order`]).
    fn order_for(&self, id: SessionId, last: Option<usize>) -> Vec<usize> {
        placement::session_order(session_hash(id), &self.up_flags(), last)
    }

    /// Engines to try for a call not tied to a session: the next in round robin first.
    fn order_any(&self) -> Vec<usize> {
        placement::round_robin(self.round_robin.fetch_add(1, Ordering::Relaxed), &self.up_flags())
    }

    fn client(&self, idx: usize, key: u64) -> Client {
        let channels = &self.engines[idx].channels;
        channels[placement::connection(key, channels.len())].clone()
    }

    /// Attaches session `id` on engine `idx`, on the link its `key` picks (the same connection
    /// its unary calls use).
    fn attach(&self, idx: usize, key: u64, id: SessionId) -> link::Attachment {
        let engine = &self.engines[idx];
        let at = placement::connection(key, engine.channels.len());
        engine.links[at].attach(&engine.channels[at], id, &self.metrics)
    }
}

impl MonitoringService for RemoteEngine {
    type Updates = RemoteUpdates;

    async fn start_monitoring(&self, req: StartRequest) -> Result<SessionInfo, ServiceError> {
        let msg = pb::StartPriceMonitoringRequest {
            tickers: tickers_out(&req.tickers),
            max_rate_hz: req.max_rate_hz,
            owner: req.owner,
        };
        let timeout = self.inner.config.call_timeout;
        let key = rand::rng().random();
        let session = self
            .inner
            .call_once_sent(self.inner.order_any(), key, |mut c| {
                let msg = msg.clone();
                async move { c.start_price_monitoring(request(msg, timeout)).await }
            })
            .await?;
        session_in(session)
    }

    async fn session(&self, id: SessionId) -> Result<SessionInfo, ServiceError> {
        let msg = pb::SessionRef { session_id: id.to_string() };
        let timeout = self.inner.config.call_timeout;
        let session = self
            .inner
            .call(self.inner.order_for(id, None), session_hash(id), |mut c| {
                let msg = msg.clone();
                async move { c.get_session(request(msg, timeout)).await }
            })
            .await?;
        session_in(session)
    }

    async fn end_session(&self, id: SessionId) -> Result<(), ServiceError> {
        let msg = pb::SessionRef { session_id: id.to_string() };
        let timeout = self.inner.config.call_timeout;
        self.inner
            .call(self.inner.order_for(id, None), session_hash(id), |mut c| {
                let msg = msg.clone();
                async move { c.end_session(request(msg, timeout)).await }
            })
            .await?;
        Ok(())
    }

    async fn stream_price_updates(&self, id: SessionId) -> Result<RemoteUpdates, ServiceError> {
        Ok(failover::follow(&self.inner, id).await?)
    }

    async fn update_tickers(
        &self,
        id: SessionId,
        add: Vec<Ticker>,
        remove: Vec<Ticker>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        // Only the engine streaming the session can add a snapshot to its stream.
        let order =
            self.inner.routes.engine_of(id).map_or_else(|| self.inner.order_for(id, None), |idx| vec![idx]);
        let msg = pb::UpdateTickersRequest {
            session_id: id.to_string(),
            add: tickers_out(&add),
            remove: tickers_out(&remove),
        };
        let timeout = self.inner.config.call_timeout;
        let resp = self
            .inner
            .call(order, session_hash(id), |mut c| {
                let msg = msg.clone();
                async move { c.update_tickers(request(msg, timeout)).await }
            })
            .await?;
        resp.tickers
            .iter()
            .map(|t| {
                Ticker::parse(t)
                    .map_err(|_| ServiceError::Unavailable("engine sent an invalid ticker".into()))
            })
            .collect()
    }

    async fn tickers(&self, limit: usize) -> Result<Vec<Ticker>, ServiceError> {
        let msg = pb::ListTickersRequest { limit: u32::try_from(limit).unwrap_or(u32::MAX) };
        let timeout = self.inner.config.call_timeout;
        let key = rand::rng().random();
        let resp =
            self.inner
                .call(self.inner.order_any(), key, |mut c| async move {
                    c.list_tickers(request(msg, timeout)).await
                })
                .await?;
        // The engine is trusted to be bounded, but not to be well-formed.
        Ok(resp.tickers.iter().filter_map(|t| Ticker::parse(t).ok()).take(limit).collect())
    }

    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), ServiceError> {
        self.inner.publish_combined(ticks).await
    }

    async fn publish_status(
        &self,
        statuses: Vec<(Ticker, TradingStatus)>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        self.inner.publish_status(statuses).await
    }

    fn ready(&self) -> bool {
        self.engines_up() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_settings_are_refused() {
        assert!(matches!(
            RemoteEngine::new(RemoteConfig::new(vec![]), Metrics::new()),
            Err(RemoteConfigError::NoEngines)
        ));
        let err = RemoteEngine::new(RemoteConfig::new(vec!["not a uri".into()]), Metrics::new())
            .expect_err("not a URI");
        assert!(matches!(&err, RemoteConfigError::InvalidUri { uri, .. } if uri == "not a uri"));
        assert!(err.to_string().starts_with("invalid engine URI \"not a uri\": "), "{err}");
    }

    #[tokio::test]
    async fn the_handle_orders_engines_by_session_and_in_round_robin() {
        let remote = RemoteEngine::new(
            RemoteConfig::new((0..3).map(|i| format!("http://127.0.0.1:{}", 1 + i)).collect()),
            Metrics::new(),
        )
        .expect("valid settings");
        let id = SessionId::random();
        let order = remote.inner.order_for(id, None);
        assert_eq!(order, remote.inner.order_for(id, None));
        assert_eq!(remote.inner.order_for(id, Some(order[0])).last(), Some(&order[0]));
        // Round robin starts one further on every call.
        let (a, b) = (remote.inner.order_any(), remote.inner.order_any());
        assert_eq!(b[0], (a[0] + 1) % 3);
    }
}
