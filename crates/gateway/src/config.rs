//! Gateway settings: limits and timings of the HTTP + WebSocket edge, their defaults and the
//! invariants between them.

use std::time::Duration;

use tickstream_api::config;
use tickstream_api::{ConfigError, TsWindow};

use crate::limits::Cidr;

/// Gateway limits and timings. [`GatewayConfig::DEFAULT`] is the one place their defaults live:
/// the CLI's flags, `--help` and the README (checked by a test) follow it.
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
    /// How long a rendered `GET /api/v1/tickers` is served from cache.
    pub tickers_cache_ttl: Duration,
    /// The `ts` a published price may carry (`invalid_ts` outside it).
    pub ts_window: TsWindow,
    /// Per-client limits (`limits`); a client is its JWT subject, else its IP.
    /// Concurrent sessions created through this gateway (429 above it).
    pub max_sessions_per_client: usize,
    /// Concurrent WebSockets (429 before upgrading).
    pub max_ws_per_client: usize,
    /// Session creations: sustained rate and burst (429 with `Retry-After`).
    pub session_creates_per_sec: u32,
    pub session_create_burst: u32,
    /// `POST /api/v1/prices` requests: sustained rate and burst (429 with `Retry-After`).
    pub publishes_per_sec: u32,
    pub publish_burst: u32,
    /// Concurrent HTTP connections per peer IP, counted at accept; past it a new connection
    /// is closed at once. Trusted proxies are exempt.
    pub max_http_connections_per_ip: usize,
    /// Peers whose `Forwarded` / `X-Forwarded-For` name the client.
    pub trusted_proxies: Vec<Cidr>,
    /// Most clients each per-client table tracks (the bound on their memory).
    pub max_tracked_clients: usize,
    /// Let the engine's fan-out write a price straight to an idle WebSocket (`direct.rs`);
    /// off (the default), every message is written by the connection's task.
    pub direct_writes: bool,
}

impl GatewayConfig {
    pub const DEFAULT: Self = Self {
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
        tickers_cache_ttl: Duration::from_secs(1),
        ts_window: TsWindow::DEFAULT,
        max_sessions_per_client: 100,
        max_ws_per_client: 100,
        session_creates_per_sec: 10,
        session_create_burst: 20,
        publishes_per_sec: 100,
        publish_burst: 200,
        max_http_connections_per_ip: 256,
        trusted_proxies: Vec::new(),
        max_tracked_clients: 100_000,
        direct_writes: false,
    };

    /// Checks the invariants every gateway relies on.
    ///
    /// # Errors
    /// The first broken one, naming its setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::positive(&[
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--heartbeat-timeout", self.heartbeat_timeout),
            ("--write-timeout", self.write_timeout),
            ("--http-header-timeout", self.http_header_timeout),
        ])?;
        // Otherwise a healthy client would be dropped before its first ping could be answered.
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(ConfigError("--heartbeat-timeout must be longer than --heartbeat-interval".into()));
        }
        config::at_least_one(&[
            ("--max-connections", self.max_connections),
            ("--max-http-connections", self.max_http_connections),
            ("max_frame_bytes", self.max_frame_bytes),
            ("read_buffer_size", self.read_buffer_size),
            ("client_msg_burst", self.client_msg_burst as usize),
            ("client_msg_per_sec", self.client_msg_per_sec as usize),
            ("max_prices_per_request", self.max_prices_per_request),
            ("--max-sessions-per-client", self.max_sessions_per_client),
            ("--max-ws-per-client", self.max_ws_per_client),
            ("--session-creates-per-sec", self.session_creates_per_sec as usize),
            ("--session-create-burst", self.session_create_burst as usize),
            ("--publishes-per-sec", self.publishes_per_sec as usize),
            ("--publish-burst", self.publish_burst as usize),
            ("--max-http-connections-per-ip", self.max_http_connections_per_ip),
            ("--max-tracked-clients", self.max_tracked_clients),
        ])
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}
