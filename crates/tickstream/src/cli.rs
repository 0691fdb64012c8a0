//! Command-line arguments. Every flag has an environment variable and a documented default.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::security::{GrpcSecurityOpts, RedisTlsOpts, TlsOpts};

#[derive(Debug, Parser)]
#[command(name = "tickstream", version, about = "Real-time stock-price streaming over WebSockets")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: gateway, engine, broker (in-process, or Redis with
    /// --redis) and simulated feed.
    Serve(ServeArgs),
    /// Run an engine: sessions and fan-out, served over gRPC, sharing sessions and prices with
    /// other nodes through Redis.
    Engine(EngineArgs),
    /// Run a gateway: the REST + WebSocket API of `serve`, backed by remote engines over gRPC.
    Gateway(GatewayArgs),
    /// Publish simulated prices into Redis.
    Feed(FeedArgs),
    /// Print a signed HS256 token (development, tests, examples).
    Token(crate::auth::TokenArgs),
    /// Load generator: virtual users that create sessions and hold WebSockets, in k6-like stages.
    Load(tickstream_load::LoadArgs),
    /// Config files: `config print <role> [flags…]` shows a role's effective settings.
    Config(crate::config_file::ConfigArgs),
}

pub use tickstream_telemetry::logging::LogFormat;

use tickstream_api::parse_duration as duration;
use tickstream_engine::EngineConfig;
use tickstream_feed::FeedConfig;
use tickstream_gateway::GatewayConfig;
use tickstream_rpc::{GrpcServerConfig, RemoteConfig};

/// Where the Redis-backed roles look for Redis when not told.
const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";

impl Command {
    /// The settings every server role has (none for the tools).
    pub fn common(&self) -> Option<&CommonOpts> {
        match self {
            Command::Serve(a) => Some(&a.common),
            Command::Engine(a) => Some(&a.common),
            Command::Gateway(a) => Some(&a.common),
            Command::Feed(a) => Some(&a.common),
            Command::Token(_) | Command::Load(_) | Command::Config(_) => None,
        }
    }
}

/// A duration default for clap, formatted from the config type's `DEFAULT` (so `--help`, the
/// parsed default and the README cannot disagree with the code that uses it). clap wants a
/// `&'static str`; each use site formats once, on first use.
macro_rules! duration_default {
    ($d:expr) => {{
        static TEXT: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| tickstream_api::format_duration($d));
        TEXT.as_str()
    }};
}

#[path = "cli_coalesce.rs"]
mod coalesce;
pub use coalesce::CoalesceOpts;

/// Options of the HTTP/WebSocket edge (`serve` and `gateway`).
#[derive(Debug, Clone, Args)]
pub struct EdgeOpts {
    /// Address for HTTP and WebSocket clients.
    #[arg(long, env = "TICKSTREAM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Let several processes listen on the same address (SO_REUSEPORT); the kernel spreads
    /// connections between them.
    #[arg(long, env = "TICKSTREAM_REUSE_PORT")]
    pub reuse_port: bool,
    /// Let the fan-out write a price straight to an idle WebSocket, with no task wake-up (less
    /// CPU per frame when each update needs its own frame; `serve` on plain TCP only).
    #[arg(long, env = "TICKSTREAM_DIRECT_WRITES")]
    pub direct_writes: bool,
    /// Interval of WebSocket Ping frames.
    #[arg(long, env = "TICKSTREAM_HEARTBEAT_INTERVAL", value_parser = duration,
          default_value = duration_default!(GatewayConfig::DEFAULT.heartbeat_interval))]
    pub heartbeat_interval: Duration,
    /// Close a WebSocket (4408) that sends nothing for this long.
    #[arg(long, env = "TICKSTREAM_HEARTBEAT_TIMEOUT", value_parser = duration,
          default_value = duration_default!(GatewayConfig::DEFAULT.heartbeat_timeout))]
    pub heartbeat_timeout: Duration,
    /// Most concurrent WebSockets (503 too_many_connections above it).
    #[arg(long, env = "TICKSTREAM_MAX_CONNECTIONS", default_value_t = GatewayConfig::DEFAULT.max_connections)]
    pub max_connections: usize,
    /// Most concurrent plain HTTP connections; past it, new ones wait in the listen backlog.
    #[arg(long, env = "TICKSTREAM_MAX_HTTP_CONNECTIONS", default_value_t = GatewayConfig::DEFAULT.max_http_connections)]
    pub max_http_connections: usize,
    /// Close an HTTP connection whose request headers (or next request, when idle) take longer.
    #[arg(long, env = "TICKSTREAM_HTTP_HEADER_TIMEOUT", value_parser = duration,
          default_value = duration_default!(GatewayConfig::DEFAULT.http_header_timeout))]
    pub http_header_timeout: Duration,
    /// Close a WebSocket (4008) whose write does not complete in this time.
    #[arg(long, env = "TICKSTREAM_WRITE_TIMEOUT", value_parser = duration,
          default_value = duration_default!(GatewayConfig::DEFAULT.write_timeout))]
    pub write_timeout: Duration,
    /// Also serve /metrics and /healthz on this address, without a token (keep it private).
    #[arg(long, env = "TICKSTREAM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Refuse (400 invalid_ts) a published price whose ts is older than this; a ts more than
    /// 5 s ahead of the server clock is always refused.
    #[arg(long, env = "TICKSTREAM_MAX_TICK_AGE", value_parser = duration,
          default_value = duration_default!(GatewayConfig::DEFAULT.ts_window.max_age))]
    pub max_tick_age: Duration,
    /// Per-client limits: a client is its JWT subject, else its IP (see --trusted-proxies).
    /// Concurrent sessions one client may hold through this gateway (429 rate_limited above).
    #[arg(long, env = "TICKSTREAM_MAX_SESSIONS_PER_CLIENT", default_value_t = GatewayConfig::DEFAULT.max_sessions_per_client)]
    pub max_sessions_per_client: usize,
    /// Concurrent WebSockets one client may hold (429 rate_limited above).
    #[arg(long, env = "TICKSTREAM_MAX_WS_PER_CLIENT", default_value_t = GatewayConfig::DEFAULT.max_ws_per_client)]
    pub max_ws_per_client: usize,
    /// Session creations per second per client, sustained (429 with Retry-After above).
    #[arg(long, env = "TICKSTREAM_SESSION_CREATES_PER_SEC", default_value_t = GatewayConfig::DEFAULT.session_creates_per_sec)]
    pub session_creates_per_sec: u32,
    /// Session creations one client may make at once before the rate applies.
    #[arg(long, env = "TICKSTREAM_SESSION_CREATE_BURST", default_value_t = GatewayConfig::DEFAULT.session_create_burst)]
    pub session_create_burst: u32,
    /// Price-publish requests per second per client, sustained (429 with Retry-After above).
    #[arg(long, env = "TICKSTREAM_PUBLISHES_PER_SEC", default_value_t = GatewayConfig::DEFAULT.publishes_per_sec)]
    pub publishes_per_sec: u32,
    /// Price-publish requests one client may make at once before the rate applies.
    #[arg(long, env = "TICKSTREAM_PUBLISH_BURST", default_value_t = GatewayConfig::DEFAULT.publish_burst)]
    pub publish_burst: u32,
    /// Concurrent HTTP connections per peer IP, counted at accept; past it new ones are closed
    /// at once. Trusted proxies are exempt.
    #[arg(long, env = "TICKSTREAM_MAX_HTTP_CONNECTIONS_PER_IP", default_value_t = GatewayConfig::DEFAULT.max_http_connections_per_ip)]
    pub max_http_connections_per_ip: usize,
    /// Comma-separated CIDRs of reverse proxies whose Forwarded / X-Forwarded-For headers name
    /// the client (the right-most untrusted address). None by default: headers are ignored.
    #[arg(long, env = "TICKSTREAM_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<tickstream_gateway::limits::Cidr>,
    /// Most clients each per-client limit table tracks (bounds their memory; the least recently
    /// active are forgotten past it).
    #[arg(long, env = "TICKSTREAM_MAX_TRACKED_CLIENTS", default_value_t = GatewayConfig::DEFAULT.max_tracked_clients)]
    pub max_tracked_clients: usize,
}

/// Options of the engine (`serve` and `engine`).
#[derive(Debug, Clone, Args)]
pub struct SessionOpts {
    /// How long a session lives with no WebSocket attached (e.g. 60s, 500ms).
    #[arg(long, env = "TICKSTREAM_SESSION_TTL", value_parser = duration,
          default_value = duration_default!(EngineConfig::DEFAULT.session_ttl))]
    pub session_ttl: Duration,
    /// Most tickers one session may watch.
    #[arg(long, env = "TICKSTREAM_MAX_TICKERS_PER_SESSION", default_value_t = EngineConfig::DEFAULT.max_tickers_per_session)]
    pub max_tickers_per_session: usize,
    /// Most live sessions on this node (503 session_limit_reached above it).
    #[arg(long, env = "TICKSTREAM_MAX_SESSIONS", default_value_t = EngineConfig::DEFAULT.max_sessions)]
    pub max_sessions: usize,
    /// Most distinct ticker symbols this node accepts prices for (503 symbol_limit_reached).
    #[arg(long, env = "TICKSTREAM_MAX_SYMBOLS", default_value_t = tickstream_broker::DEFAULT_MAX_SYMBOLS)]
    pub max_symbols: usize,
    #[command(flatten)]
    pub status: crate::status_opts::StatusOpts,
    #[command(flatten)]
    pub coalesce: CoalesceOpts,
}

/// Options of the simulated feed (`serve` and `feed`).
#[derive(Debug, Clone, Args)]
pub struct SimOpts {
    /// Size of the simulated ticker universe (well-known symbols first).
    #[arg(long, env = "TICKSTREAM_TICKERS", default_value_t = FeedConfig::DEFAULT.tickers)]
    pub tickers: usize,
    /// Total simulated price updates per second.
    #[arg(long, env = "TICKSTREAM_FEED_RATE", default_value_t = FeedConfig::DEFAULT.rate)]
    pub feed_rate: u32,
}

/// Options every role has.
#[derive(Debug, Clone, Args)]
pub struct CommonOpts {
    /// TOML file of settings, keyed by long flag names (see `config_file`); flags and env vars
    /// win over it.
    #[arg(long, env = "TICKSTREAM_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// On SIGINT/SIGTERM, how long to wait for connections and streams to close.
    #[arg(long, env = "TICKSTREAM_SHUTDOWN_TIMEOUT", value_parser = duration,
          default_value = duration_default!(GatewayConfig::DEFAULT.shutdown_timeout))]
    pub shutdown_timeout: Duration,
    /// Log format.
    #[arg(long, env = "TICKSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Runtime worker threads (default: one per core), e.g. to fit the role to the cores it is
    /// given.
    #[arg(long, env = "TICKSTREAM_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

/// Flags of `tickstream serve`.
#[derive(Debug, Clone, Parser)]
pub struct ServeArgs {
    #[command(flatten)]
    pub edge: EdgeOpts,
    #[command(flatten)]
    pub sessions: SessionOpts,
    #[command(flatten)]
    pub sim: SimOpts,
    /// Do not run the simulated feed (prices come only from POST /api/v1/prices).
    #[arg(long, env = "TICKSTREAM_NO_FEED")]
    pub no_feed: bool,
    /// Use Redis as the broker and session store (e.g. redis://127.0.0.1:6379), so several
    /// `serve` nodes share prices and sessions; comma-separated URLs shard tickers over several
    /// Redis; redis+cluster://seed,… one Redis Cluster. Without it all stays in this process.
    #[arg(long, env = "TICKSTREAM_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// File holding the cluster secret: control messages on Redis are signed with it
    /// (HMAC-SHA256) and unsigned or forged ones refused. Every node of a cluster needs the same.
    #[arg(long, env = "TICKSTREAM_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub auth: crate::auth::AuthOpts,
    #[command(flatten)]
    pub redis_tls: RedisTlsOpts,
    #[command(flatten)]
    pub tls: TlsOpts,
    #[command(flatten)]
    pub common: CommonOpts,
}

/// Flags of `tickstream engine`.
#[derive(Debug, Clone, Parser)]
pub struct EngineArgs {
    /// Address of the gRPC service.
    #[arg(long, env = "TICKSTREAM_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP endpoints /metrics and /healthz.
    #[arg(long, env = "TICKSTREAM_METRICS_LISTEN", default_value = "127.0.0.1:9090")]
    pub metrics_listen: SocketAddr,
    /// Redis shared by every node (broker and session store); comma-separated URLs shard
    /// tickers over several Redis; redis+cluster://seed,… one Redis Cluster. rediss:// for TLS.
    #[arg(long, env = "TICKSTREAM_REDIS", hide_env_values = true, default_value = DEFAULT_REDIS)]
    pub redis: String,
    #[command(flatten)]
    pub redis_tls: RedisTlsOpts,
    #[command(flatten)]
    pub grpc_security: GrpcSecurityOpts,
    /// File holding the cluster secret: control messages on Redis are signed with it
    /// (HMAC-SHA256) and unsigned or forged ones refused. Every node of a cluster needs the same.
    #[arg(long, env = "TICKSTREAM_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// Most concurrent gRPC streams per connection (each WebSocket is one stream).
    #[arg(long, env = "TICKSTREAM_GRPC_MAX_STREAMS", default_value_t = GrpcServerConfig::DEFAULT.max_concurrent_streams)]
    pub grpc_max_streams: u32,
    #[command(flatten)]
    pub sessions: SessionOpts,
    #[command(flatten)]
    pub common: CommonOpts,
}

/// Flags of `tickstream gateway`.
#[derive(Debug, Clone, Parser)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub edge: EdgeOpts,
    #[command(flatten)]
    pub tls: TlsOpts,
    #[command(flatten)]
    pub grpc_security: GrpcSecurityOpts,
    /// Engines' gRPC URIs, comma-separated; streams are spread over them and fail over
    /// (https:// with --grpc-ca).
    #[arg(long, env = "TICKSTREAM_ENGINE", value_delimiter = ',', default_value = "http://127.0.0.1:50051")]
    pub engine: Vec<String>,
    /// HTTP/2 connections to each engine (streams are spread over them).
    #[arg(long, env = "TICKSTREAM_ENGINE_CONNECTIONS", default_value_t = RemoteConfig::DEFAULT.connections_per_engine)]
    pub engine_connections: usize,
    /// Deadline of each call to an engine, and of opening a stream.
    #[arg(long, env = "TICKSTREAM_ENGINE_TIMEOUT", value_parser = duration,
          default_value = duration_default!(RemoteConfig::DEFAULT.call_timeout))]
    pub engine_timeout: Duration,
    /// How long a stream whose engine failed looks for another before closing with 1013.
    #[arg(long, env = "TICKSTREAM_FAILOVER_TIMEOUT", value_parser = duration,
          default_value = duration_default!(RemoteConfig::DEFAULT.failover_timeout))]
    pub failover_timeout: Duration,
    #[command(flatten)]
    pub auth: crate::auth::AuthOpts,
    #[command(flatten)]
    pub common: CommonOpts,
}

/// Flags of `tickstream feed`.
#[derive(Debug, Clone, Parser)]
pub struct FeedArgs {
    /// Redis to publish into: comma-separated for shards, redis+cluster:// seeds for a Cluster.
    #[arg(long, env = "TICKSTREAM_REDIS", hide_env_values = true, default_value = DEFAULT_REDIS)]
    pub redis: String,
    /// File holding the cluster secret: control messages on Redis are signed with it
    /// (HMAC-SHA256) and unsigned or forged ones refused. Every node of a cluster needs the same.
    #[arg(long, env = "TICKSTREAM_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub redis_tls: RedisTlsOpts,
    #[command(flatten)]
    pub sim: SimOpts,
    /// Address of /metrics and /healthz (none if not given).
    #[arg(long, env = "TICKSTREAM_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub common: CommonOpts,
}

fn positive(flags: &[(&str, Duration)]) -> Result<(), String> {
    match flags.iter().find(|(_, d)| d.is_zero()) {
        Some((flag, _)) => Err(format!("{flag} must be greater than zero")),
        None => Ok(()),
    }
}

impl EdgeOpts {
    /// The gateway's own invariants ([`GatewayConfig::validate`]), on these flags.
    fn validate(&self, common: &CommonOpts) -> Result<(), String> {
        crate::node::gateway_config(self, common).validate().map_err(|e| e.to_string())
    }
}

impl SimOpts {
    /// The feed these flags describe, with a fresh random seed.
    pub fn feed_config(&self) -> FeedConfig {
        FeedConfig { tickers: self.tickers, rate: self.feed_rate, seed: rand::random() }
    }
}

impl SessionOpts {
    /// The engine's own invariants ([`EngineConfig::validate`]), on these flags.
    fn validate(&self) -> Result<(), String> {
        crate::serve::engine_config(self).validate().map_err(|e| e.to_string())
    }
}

/// A comma-separated list of one or more Redis URLs (one per shard).
fn redis_url(list: &str) -> Result<(), String> {
    match tickstream_redis::split_urls(list).iter().find(|u| !tickstream_redis::known_scheme(u)) {
        // Redacted: the URL may carry a password.
        Some(bad) => {
            Err(format!("--redis must be redis:// URLs, got {:?}", tickstream_redis::redact_url(bad)))
        }
        None => tickstream_redis::RedisConfig::new(list).validate().map_err(|e| e.to_string()),
    }
}

impl ServeArgs {
    /// Checks what clap's types cannot: durations that must be positive, and relations between
    /// flags.
    ///
    /// # Errors
    /// A message naming the offending flag.
    pub fn validate(&self) -> Result<(), String> {
        self.edge.validate(&self.common)?;
        self.auth.validate(self.edge.listen)?;
        self.sessions.validate()?;
        if let Some(url) = &self.redis {
            redis_url(url)?;
        }
        if !self.no_feed {
            self.sim.feed_config().validate().map_err(|e| e.to_string())?;
        }
        if !self.no_feed && self.sim.tickers > self.sessions.max_symbols {
            return Err(format!(
                "--tickers ({}) exceeds --max-symbols ({})",
                self.sim.tickers, self.sessions.max_symbols
            ));
        }
        Ok(())
    }
}

impl EngineArgs {
    /// # Errors
    /// A message naming the offending flag.
    pub fn validate(&self) -> Result<(), String> {
        self.sessions.validate()?;
        redis_url(&self.redis)?;
        if self.grpc_max_streams == 0 {
            return Err("--grpc-max-streams must be at least 1".into());
        }
        Ok(())
    }
}

impl GatewayArgs {
    /// # Errors
    /// A message naming the offending flag.
    pub fn validate(&self) -> Result<(), String> {
        self.edge.validate(&self.common)?;
        self.auth.validate(self.edge.listen)?;
        positive(&[
            ("--engine-timeout", self.engine_timeout),
            ("--failover-timeout", self.failover_timeout),
        ])?;
        // With --grpc-ca every engine is https://, without it http:// (the other mix is a
        // misconfiguration that would fail every call, or silently skip TLS).
        let scheme = if self.grpc_security.tls_enabled() { "https://" } else { "http://" };
        if self.engine.is_empty() || self.engine.iter().any(|e| !e.starts_with(scheme)) {
            return Err(format!("--engine needs one or more {scheme} URIs"));
        }
        if self.engine_connections == 0 {
            return Err("--engine-connections must be at least 1".into());
        }
        Ok(())
    }
}

impl FeedArgs {
    /// # Errors
    /// A message naming the offending flag.
    pub fn validate(&self) -> Result<(), String> {
        redis_url(&self.redis)?;
        self.sim.feed_config().validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
