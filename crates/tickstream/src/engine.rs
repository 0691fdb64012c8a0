//! The engine role: sessions and fan-out over gRPC, prices and session records through Redis.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tickstream_engine::{Engine, SharedEngine};
use tickstream_gateway::ops::Readiness;
use tickstream_rpc::GrpcServerConfig;
use tickstream_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::EngineArgs;
use crate::node::{Handle, bind, invalid, spawn_metrics_server};
use crate::serve::{RedisNode, RedisSettings, engine_config, redis_node};

/// A running engine.
#[derive(Debug)]
pub struct RunningEngine {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// The local engine (counts, shutdown); gRPC serves it through its [`SharedEngine`].
    pub engine: Engine,
    pub handle: Handle,
}

/// Binds and starts an engine.
///
/// # Errors
/// Invalid settings, or an address that cannot be bound.
pub async fn start(args: &EngineArgs) -> io::Result<RunningEngine> {
    args.validate().map_err(invalid)?;
    let metrics = Metrics::new();
    metrics.observe_runtime(&tokio::runtime::Handle::current());
    let shutdown = CancellationToken::new();
    let background = TaskTracker::new();
    let RedisNode { broker, store, readiness: broker_ready } = redis_node(
        &RedisSettings::for_engine(
            &args.redis,
            &args.redis_tls,
            &args.sessions,
            args.cluster_secret_file.as_deref(),
        ),
        &metrics,
        &background,
        &shutdown,
    )?;
    let engine = Engine::new(engine_config(&args.sessions), broker, Arc::clone(&metrics));
    // Served through the cluster layer: sessions live in Redis too, so any engine can take one.
    let shared = SharedEngine::new(engine.clone(), store);
    shared.spawn_sweeper(&background, shutdown.clone());

    let grpc = bind(args.grpc_listen, false)?;
    let grpc_addr = grpc.local_addr()?;
    let http = bind(args.metrics_listen, false)?;
    let metrics_addr = http.local_addr()?;
    // The ops server outlives the drain (`/readyz` says `draining`, `/metrics` shows it) and
    // stops with the role.
    let stopped = CancellationToken::new();
    let readiness = Readiness::new().draining(shutdown.clone()).and(&broker_ready);
    let metrics_server = spawn_metrics_server(http, Arc::clone(&metrics), readiness, stopped.clone());

    let config = GrpcServerConfig {
        max_concurrent_streams: args.grpc_max_streams,
        security: args.grpc_security.server()?,
        ..GrpcServerConfig::default()
    };
    let grace = args.common.shutdown_timeout;
    let task = {
        let engine = engine.clone();
        let metrics = Arc::clone(&metrics);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // On shutdown, end every local session first: each stream sends `closed` (shutting
            // down) and ends, and gateways move them to another engine; the sessions' records
            // stay in Redis for that. Then the server drains, within the grace period.
            let stop = {
                let engine = engine.clone();
                let shutdown = shutdown.clone();
                async move {
                    shutdown.cancelled().await;
                    engine.shutdown();
                }
            };
            let server = tickstream_rpc::serve(Arc::new(shared), metrics, grpc, &config, stop);
            tokio::pin!(server);
            let outcome = tokio::select! {
                r = &mut server => Some(r),
                () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => None,
            };
            match outcome {
                Some(Err(e)) => tracing::error!(error = %e, "gRPC server failed"),
                None => tracing::warn!("gRPC streams still open after the shutdown timeout; dropping them"),
                Some(Ok(())) => {}
            }
            shutdown.cancel();
            background.close();
            if tokio::time::timeout(grace, background.wait()).await.is_err() {
                tracing::warn!("background tasks still running after the shutdown timeout");
            }
            engine.shutdown();
            stopped.cancel();
            let _ = metrics_server.await;
        })
    };
    Ok(RunningEngine { grpc_addr, metrics_addr, metrics, engine, handle: Handle::new(shutdown, task) })
}
