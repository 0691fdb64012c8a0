//! The all-in-one role: broker, engine, feed and gateway in one process. The broker is
//! in-process unless `--redis` is given; then prices and sessions go through Redis, so several
//! `serve` nodes behind a load balancer share them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tickstream_broker::{Broker, InMemoryBroker, SessionStore};
use tickstream_engine::{Engine, EngineConfig};
use tickstream_feed::{FeedConfig, SimulatedFeed};
use tickstream_gateway::Gateway;
use tickstream_redis::{RedisBroker, RedisConfig};
use tickstream_telemetry::Metrics;
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

/// A node's Redis broker, as the broker and as the session store (one value, two roles).
pub(crate) fn redis_node(
    url: &str,
    max_symbols: usize,
    metrics: &Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> io::Result<(Arc<dyn Broker>, Arc<dyn SessionStore>)> {
    let config = RedisConfig { max_symbols, ..RedisConfig::new(url) };
    let redis = RedisBroker::start(config, Arc::clone(metrics), tracker, shutdown.clone())
        .map_err(|e| invalid(e.to_string()))?;
    Ok((Arc::new(redis.clone()), Arc::new(redis)))
}

/// Binds and starts a `serve` node.
///
/// # Errors
/// Invalid settings ([`ServeArgs::validate`]), or a listen address that cannot be bound.
pub async fn start(args: &ServeArgs) -> io::Result<Running> {
    args.validate().map_err(invalid)?;
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let background = TaskTracker::new();
    let (broker, engine): (Arc<dyn Broker>, Engine) = match &args.redis {
        None => {
            let broker = Arc::new(InMemoryBroker::new(args.sessions.max_symbols, Arc::clone(&metrics)));
            let engine = Engine::new(engine_config(&args.sessions), broker.clone(), Arc::clone(&metrics));
            (broker, engine)
        }
        Some(url) => {
            let (broker, store) =
                redis_node(url, args.sessions.max_symbols, &metrics, &background, &shutdown)?;
            let engine = Engine::with_store(
                engine_config(&args.sessions),
                broker.clone(),
                store,
                Arc::clone(&metrics),
            );
            (broker, engine)
        }
    };
    let listener = bind(args.edge.listen, args.edge.reuse_port)?;
    let addr = listener.local_addr()?;

    engine.spawn_sweeper(&background, shutdown.clone());
    if !args.no_feed {
        let feed = SimulatedFeed::new(&FeedConfig {
            tickers: args.sim.tickers,
            rate: args.sim.feed_rate,
            seed: rand::random(),
        });
        feed.spawn(broker, &metrics, &background, shutdown.clone());
    }
    let gateway = Gateway::new(
        Arc::new(engine.clone()),
        Arc::clone(&metrics),
        gateway_config(&args.edge, &args.common),
        shutdown.clone(),
    );
    let task = {
        let engine = engine.clone();
        tokio::spawn(async move {
            gateway.serve(listener).await;
            background.close();
            background.wait().await;
            engine.shutdown();
        })
    };
    Ok(Running { addr, metrics, engine, handle: Handle::new(shutdown, task) })
}
