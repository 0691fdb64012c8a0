//! The all-in-one role: broker, engine, feed and gateway in one process. The broker is
//! in-process unless `--redis` is given; then prices and sessions go through Redis, so several
//! `serve` nodes behind a load balancer share them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tickstream_api::MonitoringService;
use tickstream_broker::{Broker, InMemoryBroker, SessionStore};
use tickstream_engine::{Engine, EngineConfig, SharedEngine};
use tickstream_feed::SimulatedFeed;
use tickstream_gateway::ops::{NotReady, Readiness};
use tickstream_gateway::{EdgeTls, Gateway, GatewayConfig};
use tickstream_redis::{Bounds, ControlAuth, RedisBroker, RedisConfig};
use tickstream_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{ServeArgs, SessionOpts};
use crate::node::{Handle, bind, gateway_config, invalid, spawn_metrics_server};
use crate::security::RedisTlsOpts;

/// A running `serve` node.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// The local engine (counts, shutdown), also when the gateway serves it through a
    /// [`SharedEngine`].
    pub engine: Engine,
    handle: Handle,
}

impl Running {
    /// Starts the graceful shutdown: stop accepting, close every WebSocket with 1001, end every
    /// session, stop the feed and the sweeper.
    pub fn shutdown(&self) {
        self.handle.shutdown();
    }

    /// Waits until the node has stopped and released everything.
    ///
    /// # Errors
    /// Only if the serving task panicked.
    pub async fn wait(self) -> io::Result<()> {
        self.handle.wait().await
    }
}

pub(crate) fn engine_config(opts: &SessionOpts) -> EngineConfig {
    EngineConfig {
        session_ttl: opts.session_ttl,
        max_tickers_per_session: opts.max_tickers_per_session,
        max_sessions: opts.max_sessions,
        max_symbols: opts.max_symbols,
        stale_after: opts.status.stale_after,
        coalesce_window: opts.coalesce.coalesce_window,
    }
}

/// A node's Redis broker, as the broker and as the session store (one value, two roles), and
/// its `/readyz` check (`broker_disconnected` while the home shard's Pub/Sub connection is
/// down: with shards, another shard being down pauses only its tickers, and every node sees
/// the same shards, so taking nodes out of rotation for it would help nobody).
pub(crate) struct RedisNode {
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn SessionStore>,
    pub readiness: Readiness,
}

pub(crate) fn redis_node(
    node: &RedisSettings<'_>,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> io::Result<RedisNode> {
    let control_auth = match node.secret_file {
        // Read once at start: a missing or unreadable secret file is a startup error, never a
        // silent fall-back to unsigned control messages.
        Some(path) => {
            let secret = std::fs::read(path)
                .map_err(|e| invalid(format!("--cluster-secret-file {}: {e}", path.display())))?;
            let auth = ControlAuth::with_secret(&secret);
            if !auth.is_signed() {
                return Err(invalid(format!("--cluster-secret-file {} is empty", path.display())));
            }
            auth
        }
        None => ControlAuth::none(),
    };
    let defaults = RedisConfig::new(node.url);
    let config = RedisConfig {
        max_symbols: node.max_symbols,
        tls: node.tls.load(node.url)?,
        bounds: Bounds { max_tickers: node.max_tickers_per_session, ..defaults.bounds },
        control_auth,
        ..defaults
    };
    let redis = RedisBroker::start(config, Arc::clone(metrics), tracker, shutdown.clone())
        .map_err(|e| invalid(e.to_string()))?;
    let probe = redis.clone();
    let readiness =
        Readiness::new().check(move || (!probe.is_connected()).then_some(NotReady::BrokerDisconnected));
    Ok(RedisNode { broker: Arc::new(redis.clone()), store: Arc::new(redis), readiness })
}

/// What a role that takes `--redis` needs to start its Redis node.
pub(crate) struct RedisSettings<'a> {
    pub url: &'a str,
    pub tls: &'a RedisTlsOpts,
    pub max_symbols: usize,
    /// Session records read from Redis are held to this (`--max-tickers-per-session`).
    pub max_tickers_per_session: usize,
    pub secret_file: Option<&'a std::path::Path>,
}

impl<'a> RedisSettings<'a> {
    /// The settings of a role that runs an engine on Redis (`serve --redis`, `engine`): its
    /// session limits bound the records it reads.
    pub(crate) fn for_engine(
        url: &'a str,
        tls: &'a RedisTlsOpts,
        sessions: &SessionOpts,
        secret_file: Option<&'a std::path::Path>,
    ) -> Self {
        Self {
            url,
            tls,
            max_symbols: sessions.max_symbols,
            max_tickers_per_session: sessions.max_tickers_per_session,
            secret_file,
        }
    }
}

/// Binds and starts a `serve` node.
///
/// # Errors
/// Invalid settings ([`ServeArgs::validate`]), or a listen address that cannot be bound.
pub async fn start(args: &ServeArgs) -> io::Result<Running> {
    args.validate().map_err(invalid)?;
    let auth = args.auth.edge_auth().map_err(invalid)?;
    let tls = args.tls.load()?;
    let metrics = Metrics::new();
    metrics.observe_runtime(&tokio::runtime::Handle::current());
    let shutdown = CancellationToken::new();
    let background = TaskTracker::new();
    // The in-process broker is always connected; Redis' readiness is its subscriber's.
    let (broker, store, readiness): (Arc<dyn Broker>, Option<Arc<dyn SessionStore>>, _) = match &args.redis {
        None => {
            let broker = InMemoryBroker::new(args.sessions.max_symbols, Arc::clone(&metrics));
            (Arc::new(broker), None, Readiness::new())
        }
        Some(url) => {
            let redis = redis_node(
                &RedisSettings::for_engine(
                    url,
                    &args.redis_tls,
                    &args.sessions,
                    args.cluster_secret_file.as_deref(),
                ),
                &metrics,
                &background,
                &shutdown,
            )?;
            (redis.broker, Some(redis.store), redis.readiness)
        }
    };
    let engine = Engine::new(engine_config(&args.sessions), broker.clone(), Arc::clone(&metrics));
    // With a store, the gateway serves through the cluster layer; `engine` stays the local
    // handle (counts, shutdown) either way.
    let shared = store.map(|store| SharedEngine::new(engine.clone(), store));
    let listener = bind(args.edge.listen, args.edge.reuse_port)?;
    let addr = listener.local_addr()?;

    match &shared {
        Some(shared) => shared.spawn_sweeper(&background, shutdown.clone()),
        None => engine.spawn_sweeper(&background, shutdown.clone()),
    }
    if !args.no_feed {
        let feed = SimulatedFeed::new(&args.sim.feed_config());
        feed.spawn(broker, &metrics, &background, shutdown.clone());
    }
    if let Some(addr) = args.edge.metrics_listen {
        // The ops port answers /readyz like the edge: draining, or the broker away.
        let ready = Readiness::new().draining(shutdown.clone()).and(&readiness);
        let ops = spawn_metrics_server(bind(addr, false)?, Arc::clone(&metrics), ready, shutdown.clone());
        background.spawn(async move {
            let _ = ops.await;
        });
    }
    let node = Node {
        auth,
        metrics: Arc::clone(&metrics),
        config: gateway_config(&args.edge, &args.common),
        shutdown: shutdown.clone(),
        listener,
        background,
        engine: engine.clone(),
        readiness,
        tls,
    };
    let task = match shared {
        Some(shared) => node.serve(Arc::new(shared)),
        None => node.serve(Arc::new(engine.clone())),
    }?;
    Ok(Running { addr, metrics, engine, handle: Handle::new(shutdown, task) })
}

/// What the gateway task needs, whichever service it serves.
struct Node {
    auth: tickstream_gateway::auth::Auth,
    metrics: Arc<Metrics>,
    config: GatewayConfig,
    shutdown: CancellationToken,
    listener: TcpListener,
    background: TaskTracker,
    engine: Engine,
    readiness: Readiness,
    tls: Option<EdgeTls>,
}

impl Node {
    /// Serves `service` until shutdown, then stops the background tasks and ends every session.
    fn serve<S: MonitoringService>(self, service: Arc<S>) -> io::Result<JoinHandle<()>> {
        let Self { auth, metrics, config, shutdown, listener, background, engine, readiness, tls } = self;
        let mut gateway = Gateway::new(service, metrics, config, shutdown)
            .map_err(|e| invalid(e.to_string()))?
            .with_auth(auth)
            .with_readiness(readiness);
        if let Some(tls) = tls {
            gateway = gateway.with_tls(tls);
        }
        Ok(tokio::spawn(async move {
            gateway.serve(listener).await;
            background.close();
            background.wait().await;
            engine.shutdown();
        }))
    }
}
