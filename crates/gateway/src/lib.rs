//! The gateway: the HTTP + WebSocket edge.
//!
//! - [`origin`]: the `Origin` check and CORS (outermost); [`auth`]: bearer tokens, the route
//!   policy and the [`auth::Caller`] handlers see;
//! - `server`: the accept loop (connection cap, header timeout, graceful end);
//! - [`edge_tls`]: the optional rustls handshake in front of it (`https://`, `wss://`);
//! - [`rest`]: REST routes; [`listing`]: the cache in front of `GET /api/v1/tickers`;
//! - [`connection`]: one task per WebSocket (reader, single writer, heartbeats);
//! - `direct`: the socket shared with the engine's fan-out, which writes a price straight to it
//!   while it is idle (direct writes);
//! - [`protocol`]: the WebSocket JSON messages, as pure functions; [`encoding`]: JSON or the
//!   binary subprotocol `tickstream.v1.proto`, chosen in the handshake;
//! - [`sse`]: `GET /api/v1/sessions/{id}/events`, a session's stream as Server-Sent Events;
//! - [`upgrade`]: `GET /ws`: the opening handshake, the connection permit, the connection task;
//! - `config`: [`GatewayConfig`], its defaults and invariants;
//! - [`limits`]: per-client limits (sessions, WebSockets, creation and publish rates, HTTP
//!   connections per IP) and who a client is;
//! - [`close`]: typed close codes; [`error`]: the HTTP error shape and each code's status;
//! - [`ops`]: `/metrics`, `/healthz` and `/readyz`, shared with the roles that have no edge;
//! - [`web`]: the price board page at `GET /`, the reference browser client.
//!
//! The gateway reaches the engine only through [`MonitoringService`], so the same code serves an
//! in-process engine or a remote one.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tickstream_api::{ConfigError, MonitoringService};
use tickstream_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod auth;
pub mod close;
mod config;
pub mod connection;
mod direct;
pub mod edge_tls;
pub mod encoding;
pub mod error;
pub mod limits;
pub mod listing;
pub mod ops;
pub mod origin;
pub mod protocol;
pub mod rest;
mod server;
pub mod sse;
pub mod upgrade;
pub mod web;

pub use config::GatewayConfig;
pub use edge_tls::EdgeTls;

/// Shared state of every handler.
pub struct AppState<S> {
    pub service: Arc<S>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<GatewayConfig>,
    pub shutdown: CancellationToken,
    /// Tracks WebSocket tasks: axum's graceful shutdown does not wait for upgraded connections.
    pub tracker: TaskTracker,
    pub permits: Arc<Semaphore>,
    /// Authentication and allowed origins (off by default).
    pub auth: Arc<auth::Auth>,
    /// The cached `GET /api/v1/tickers` (see `listing`).
    pub listing: Arc<listing::TickersCache>,
    pub limits: Arc<limits::Limits>,
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self {
            service: Arc::clone(&self.service),
            metrics: Arc::clone(&self.metrics),
            config: Arc::clone(&self.config),
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
            permits: Arc::clone(&self.permits),
            auth: Arc::clone(&self.auth),
            listing: Arc::clone(&self.listing),
            limits: Arc::clone(&self.limits),
        }
    }
}

impl<S> std::fmt::Debug for AppState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The HTTP + WebSocket server over a monitoring service.
#[derive(Debug)]
pub struct Gateway<S> {
    state: AppState<S>,
    /// `/readyz` checks beyond the edge's own (draining, the service's `ready()`).
    readiness: ops::Readiness,
    tls: Option<EdgeTls>,
}

impl<S: MonitoringService> Gateway<S> {
    /// # Errors
    /// A configuration that breaks an invariant ([`GatewayConfig::validate`]).
    pub fn new(
        service: Arc<S>,
        metrics: Arc<Metrics>,
        config: GatewayConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let listing = Arc::new(listing::TickersCache::new(config.tickers_cache_ttl));
        let limits = Arc::new(limits::Limits::new(&config));
        Ok(Self {
            state: AppState {
                service,
                metrics,
                config: Arc::new(config),
                shutdown,
                tracker: TaskTracker::new(),
                permits,
                auth: Arc::new(auth::Auth::off()),
                listing,
                limits,
            },
            readiness: ops::Readiness::new(),
            tls: None,
        })
    }

    /// Adds `/readyz` checks the edge cannot know, e.g. the broker's connection.
    #[must_use]
    pub fn with_readiness(mut self, readiness: ops::Readiness) -> Self {
        self.readiness = self.readiness.and(&readiness);
        self
    }

    /// What `/readyz` asks: not draining, the service ready (on a gateway: an engine answers),
    /// then the checks of [`Gateway::with_readiness`].
    pub fn readiness(&self) -> ops::Readiness {
        let service = Arc::clone(&self.state.service);
        ops::Readiness::new()
            .draining(self.state.shutdown.clone())
            .check(move || (!service.ready()).then_some(ops::NotReady::NoEngine))
            .and(&self.readiness)
    }

    /// Requires tokens and allows origins as `auth` says (the default is [`auth::Auth::off`]).
    #[must_use]
    pub fn with_auth(mut self, auth: auth::Auth) -> Self {
        self.state.auth = Arc::new(auth);
        self
    }

    /// Serves HTTPS and `wss://` instead of plain HTTP: every connection is a TLS handshake
    /// first, bounded by the header timeout.
    #[must_use]
    pub fn with_tls(mut self, tls: EdgeTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// All routes.
    pub fn router(&self) -> Router {
        let cfg = &self.state.config;
        let readiness = self.readiness();
        Router::new()
            .route("/", get(web::index))
            .route(
                "/api/v1/sessions",
                post(rest::create_session::<S>).layer(DefaultBodyLimit::max(cfg.session_body_limit)),
            )
            .route("/api/v1/sessions/{id}", get(rest::get_session::<S>).delete(rest::delete_session::<S>))
            .route("/api/v1/sessions/{id}/events", get(sse::events::<S>))
            .route(
                "/api/v1/prices",
                post(rest::publish_prices::<S>).layer(DefaultBodyLimit::max(cfg.prices_body_limit)),
            )
            .route(
                "/api/v1/status",
                post(rest::publish_status::<S>).layer(DefaultBodyLimit::max(cfg.session_body_limit)),
            )
            .route("/api/v1/tickers", get(listing::cached::<S>))
            .route("/ws", get(upgrade::ws_upgrade::<S>))
            .route("/healthz", get(rest::healthz::<S>))
            .route(
                "/readyz",
                get(move || {
                    let readiness = readiness.clone();
                    async move { readiness.response() }
                }),
            )
            .route("/metrics", get(rest::metrics::<S>))
            .fallback(rest::not_found)
            .method_not_allowed_fallback(rest::method_not_allowed)
            // Outermost last: the budget, then origins (preflights need no token), then tokens.
            .layer(axum::middleware::from_fn_with_state(self.state.auth.clone(), auth::authenticate))
            .layer(axum::middleware::from_fn_with_state(self.state.auth.clone(), origin::check_origin))
            .layer(axum::middleware::from_fn_with_state(cfg.http_header_timeout, rest::request_timeout))
            .with_state(self.state.clone())
    }

    /// Serves until the shutdown token is cancelled, then: stops accepting, closes every
    /// WebSocket with 1001, and waits for HTTP connections and WebSocket tasks, both within one
    /// `shutdown_timeout`. Accept errors are logged and retried, never fatal.
    pub async fn serve(self, listener: TcpListener) {
        let state = self.state.clone();
        let cfg = &state.config;
        // One deadline for the whole shutdown: HTTP connections, then WebSockets, within it.
        let deadline = server::Accept {
            router: self.router(),
            metrics: state.metrics.clone(),
            shutdown: state.shutdown.clone(),
            limits: state.limits.clone(),
            max_connections: cfg.max_http_connections,
            header_timeout: cfg.http_header_timeout,
            // Longer than the WebSocket loop's own write deadline, which must fire first (4008).
            write_stall: cfg.write_timeout + cfg.close_grace * 2,
            drain: cfg.shutdown_timeout,
            tls: self.tls.clone(),
        }
        .run(listener)
        .await;
        state.tracker.close();
        if tokio::time::timeout_at(deadline, state.tracker.wait()).await.is_err() {
            tracing::warn!(remaining = state.tracker.len(), "WebSockets still open at the shutdown deadline");
        }
    }
}
