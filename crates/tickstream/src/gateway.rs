//! The gateway role: the REST + WebSocket API of `serve`, backed by remote engines over gRPC.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tickstream_gateway::Gateway;
use tickstream_rpc::{RemoteConfig, RemoteEngine};
use tickstream_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::GatewayArgs;
use crate::node::{Handle, bind, gateway_config, invalid, spawn_metrics_server};

/// A running gateway.
#[derive(Debug)]
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub handle: Handle,
}

/// Binds and starts a gateway. Engines need not be up yet: `/healthz` says 503 `no_engine`
/// until one answers.
///
/// # Errors
/// Invalid settings, or an address that cannot be bound.
pub async fn start(args: &GatewayArgs) -> io::Result<RunningGateway> {
    args.validate().map_err(invalid)?;
    let auth = args.auth.edge_auth().map_err(invalid)?;
    let tls = args.tls.load()?;
    let metrics = Metrics::new();
    metrics.observe_runtime(&tokio::runtime::Handle::current());
    let shutdown = CancellationToken::new();
    let background = TaskTracker::new();
    let remote = RemoteEngine::new(
        RemoteConfig {
            connections_per_engine: args.engine_connections,
            call_timeout: args.engine_timeout,
            failover_timeout: args.failover_timeout,
            security: args.grpc_security.client()?,
            ..RemoteConfig::new(args.engine.clone())
        },
        Arc::clone(&metrics),
    )
    .map_err(|e| invalid(e.to_string()))?;
    remote.start_prober(&background, shutdown.clone()).await;
    let listener = bind(args.edge.listen, args.edge.reuse_port)?;
    let addr = listener.local_addr()?;
    let mut gateway = Gateway::new(
        Arc::new(remote),
        Arc::clone(&metrics),
        gateway_config(&args.edge, &args.common),
        shutdown.clone(),
    )
    .map_err(|e| invalid(e.to_string()))?
    .with_auth(auth);
    if let Some(tls) = tls {
        gateway = gateway.with_tls(tls);
    }
    let ops = match args.edge.metrics_listen {
        Some(addr) => Some(spawn_metrics_server(
            bind(addr, false)?,
            Arc::clone(&metrics),
            gateway.readiness(),
            shutdown.clone(),
        )),
        None => None,
    };
    let task = tokio::spawn(async move {
        gateway.serve(listener).await;
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        background.close();
        background.wait().await;
    });
    Ok(RunningGateway { addr, metrics, handle: Handle::new(shutdown, task) })
}
