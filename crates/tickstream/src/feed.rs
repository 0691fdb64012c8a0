//! The feed role: simulated prices published into Redis, where every node picks them up.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tickstream_feed::SimulatedFeed;
use tickstream_gateway::ops::Readiness;
use tickstream_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::FeedArgs;
use crate::node::{Handle, bind, invalid, spawn_metrics_server};
use crate::serve::{RedisNode, redis_node};

/// A running feed.
#[derive(Debug)]
pub struct RunningFeed {
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub handle: Handle,
}

/// Starts publishing.
///
/// # Errors
/// Invalid settings, or a metrics address that cannot be bound.
pub async fn start(args: &FeedArgs) -> io::Result<RunningFeed> {
    args.validate().map_err(invalid)?;
    let metrics = Metrics::new();
    metrics.observe_runtime(&tokio::runtime::Handle::current());
    let shutdown = CancellationToken::new();
    let background = TaskTracker::new();
    let RedisNode { broker, readiness: broker_ready, .. } =
        redis_node(&args.redis, args.sim.tickers.max(1), &metrics, &background, &shutdown)?;
    let feed = SimulatedFeed::new(&args.sim.feed_config());
    feed.spawn(broker, &metrics, &background, shutdown.clone());
    // The ops server outlives the drain (`/readyz` says `draining`) and stops with the role.
    let stopped = CancellationToken::new();
    let (metrics_addr, metrics_server) = match args.metrics_listen {
        Some(addr) => {
            let listener = bind(addr, false)?;
            let addr = listener.local_addr()?;
            let readiness = Readiness::new().draining(shutdown.clone()).and(&broker_ready);
            let server = spawn_metrics_server(listener, Arc::clone(&metrics), readiness, stopped.clone());
            (Some(addr), Some(server))
        }
        None => (None, None),
    };
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            background.close();
            background.wait().await;
            stopped.cancel();
            if let Some(server) = metrics_server {
                let _ = server.await;
            }
        })
    };
    Ok(RunningFeed { metrics_addr, metrics, handle: Handle::new(shutdown, task) })
}
