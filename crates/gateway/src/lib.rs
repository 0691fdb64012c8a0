//! The gateway: the HTTP + WebSocket edge.
//!
//! - `server`: the accept loop (connection cap, header timeout, graceful end);
//! - [`rest`]: REST routes;
//! - [`connection`]: one task per WebSocket (reader, single writer, heartbeats);
//! - [`protocol`]: the WebSocket JSON messages, as pure functions;
//! - [`upgrade`]: `GET /ws`: the opening handshake, the connection permit, the connection task;
//! - [`close`]: typed close codes; [`error`]: the HTTP error shape;
//! - [`web`]: the price board page at `GET /`, the reference browser client.
//!
//! The gateway reaches the engine only through [`MonitoringService`], so the same code serves an
//! in-process engine or a remote one.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tickstream_api::MonitoringService;
use tickstream_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod close;
pub mod connection;
pub mod error;
pub mod protocol;
pub mod rest;
mod server;
pub mod upgrade;
pub mod web;

/// Gateway limits and timings. Defaults are the documented ones (README "Configuration").
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// A WebSocket Ping is sent this often.
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing for this long is dropped (4408).
    pub heartbeat_timeout: Duration,
    /// A write that takes longer closes the connection (4008).
    pub write_timeout: Duration,
    /// Time allowed for the close handshake.
    pub close_grace: Duration,
    /// How long shutdown waits for connections to close.
    pub shutdown_timeout: Duration,
    /// Concurrent WebSockets; more are refused with 503 before upgrading.
    pub max_connections: usize,
    /// Concurrent plain HTTP connections; past it, new ones wait in the listen backlog.
    pub max_http_connections: usize,
    /// Time allowed for a request's headers, and for an idle keep-alive connection's next
    /// request, before the connection is closed.
    pub http_header_timeout: Duration,
    /// Largest inbound WebSocket frame or message (1009 above it).
    pub max_frame_bytes: usize,
    /// Initial read buffer per WebSocket.
    pub read_buffer_size: usize,
    /// Inbound client messages: burst size and sustained rate per connection (1008 above it).
    pub client_msg_burst: u32,
    pub client_msg_per_sec: u32,
    /// Largest `POST /api/v1/sessions` body.
    pub session_body_limit: usize,
    /// Largest `POST /api/v1/prices` body, and most prices in one request.
    pub prices_body_limit: usize,
    pub max_prices_per_request: usize,
    /// Most tickers listed by `GET /api/v1/tickers` (the cache may hold 100,000).
    pub max_tickers_listed: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            close_grace: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            max_http_connections: 10_000,
            http_header_timeout: Duration::from_secs(30),
            max_frame_bytes: 4 * 1024,
            read_buffer_size: 128,
            client_msg_burst: 20,
            client_msg_per_sec: 10,
            session_body_limit: 64 * 1024,
            prices_body_limit: 1024 * 1024,
            max_prices_per_request: 10_000,
            max_tickers_listed: 10_000,
        }
    }
}

/// Shared state of every handler.
pub struct AppState<S> {
    pub service: Arc<S>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<GatewayConfig>,
    pub shutdown: CancellationToken,
    /// Tracks WebSocket tasks: axum's graceful shutdown does not wait for upgraded connections.
    pub tracker: TaskTracker,
    pub permits: Arc<Semaphore>,
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
}

impl<S: MonitoringService> Gateway<S> {
    pub fn new(
        service: Arc<S>,
        metrics: Arc<Metrics>,
        config: GatewayConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_connections));
        Self {
            state: AppState {
                service,
                metrics,
                config: Arc::new(config),
                shutdown,
                tracker: TaskTracker::new(),
                permits,
            },
        }
    }

    /// All routes.
    pub fn router(&self) -> Router {
        let cfg = &self.state.config;
        Router::new()
            .route("/", get(web::index))
            .route(
                "/api/v1/sessions",
                post(rest::create_session::<S>).layer(DefaultBodyLimit::max(cfg.session_body_limit)),
            )
            .route("/api/v1/sessions/{id}", get(rest::get_session::<S>).delete(rest::delete_session::<S>))
            .route(
                "/api/v1/prices",
                post(rest::publish_prices::<S>).layer(DefaultBodyLimit::max(cfg.prices_body_limit)),
            )
            .route("/api/v1/tickers", get(rest::list_tickers::<S>))
            .route("/ws", get(upgrade::ws_upgrade::<S>))
            .route("/healthz", get(rest::healthz::<S>))
            .route("/metrics", get(rest::metrics::<S>))
            .fallback(rest::not_found)
            .method_not_allowed_fallback(rest::method_not_allowed)
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
            max_connections: cfg.max_http_connections,
            header_timeout: cfg.http_header_timeout,
            // Longer than the WebSocket loop's own write deadline, which must fire first (4008).
            write_stall: cfg.write_timeout + cfg.close_grace * 2,
            drain: cfg.shutdown_timeout,
        }
        .run(listener)
        .await;
        state.tracker.close();
        if tokio::time::timeout_at(deadline, state.tracker.wait()).await.is_err() {
            tracing::warn!(remaining = state.tracker.len(), "WebSockets still open at the shutdown deadline");
        }
    }
}
