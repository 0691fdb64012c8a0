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
use tickstream_gateway::{Gateway, GatewayConfig};
use tickstream_redis::{RedisBroker, RedisConfig};
use tickstream_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{ServeArgs, SessionOpts};
use crate::node::{Handle, bind, gateway_config, invalid};

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
    }
}

/// A node's Redis broker, as the broker and as the session store (one value, two roles), and
/// its `/readyz` check (`broker_disconnected` while the Pub/Sub connection is down).
pub(crate) struct RedisNode {
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn SessionStore>,
    pub readiness: Readiness,
}

pub(crate) fn redis_node(
    url: &str,
    max_symbols: usize,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> io::Result<RedisNode> {
    let config = RedisConfig { max_symbols, ..RedisConfig::new(url) };
    let redis = RedisBroker::start(config, Arc::clone(metrics), tracker, shutdown.clone())
        .map_err(|e| invalid(e.to_string()))?;
    let probe = redis.clone();
    let readiness =
        Readiness::new().check(move || (!probe.is_connected()).then_some(NotReady::BrokerDisconnected));
    Ok(RedisNode { broker: Arc::new(redis.clone()), store: Arc::new(redis), readiness })
}

/// Binds and starts a `serve` node.
///
/// # Errors
/// Invalid settings ([`ServeArgs::validate`]), or a listen address that cannot be bound.
pub async fn start(args: &ServeArgs) -> io::Result<Running> {
    args.validate().map_err(invalid)?;
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
            let redis = redis_node(url, args.sessions.max_symbols, &metrics, &background, &shutdown)?;
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
    let node = Node {
        metrics: Arc::clone(&metrics),
        config: gateway_config(&args.edge, &args.common),
        shutdown: shutdown.clone(),
        listener,
        background,
        engine: engine.clone(),
        readiness,
    };
    let task = match shared {
        Some(shared) => node.serve(Arc::new(shared)),
        None => node.serve(Arc::new(engine.clone())),
    }?;
    Ok(Running { addr, metrics, engine, handle: Handle::new(shutdown, task) })
}

/// What the gateway task needs, whichever service it serves.
struct Node {
    metrics: Arc<Metrics>,
    config: GatewayConfig,
    shutdown: CancellationToken,
    listener: TcpListener,
    background: TaskTracker,
    engine: Engine,
    readiness: Readiness,
}

impl Node {
    /// Serves `service` until shutdown, then stops the background tasks and ends every session.
    fn serve<S: MonitoringService>(self, service: Arc<S>) -> io::Result<JoinHandle<()>> {
        let Self { metrics, config, shutdown, listener, background, engine, readiness } = self;
        let gateway = Gateway::new(service, metrics, config, shutdown)
            .map_err(|e| invalid(e.to_string()))?
            .with_readiness(readiness);
        Ok(tokio::spawn(async move {
            gateway.serve(listener).await;
            background.close();
            background.wait().await;
            engine.shutdown();
        }))
    }
}
