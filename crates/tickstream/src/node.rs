//! What every role shares: binding listeners, the gateway settings from flags, the small HTTP
//! server for `/metrics`, `/healthz` and `/readyz` on roles without the gateway, and the handle to a
//! running role.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tickstream_api::TsWindow;
use tickstream_gateway::GatewayConfig;
use tickstream_gateway::ops::Readiness;
use tickstream_telemetry::Metrics;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{CommonOpts, EdgeOpts};

/// Listen backlog; the kernel caps it at `somaxconn` (4096 here). A connection storm (a load
/// test's ramp, every client reconnecting after a restart) needs more than tokio's 1024.
const BACKLOG: u32 = 4096;

pub(crate) fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Restart on the same port while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

pub(crate) fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

pub(crate) fn gateway_config(edge: &EdgeOpts, common: &CommonOpts) -> GatewayConfig {
    GatewayConfig {
        heartbeat_interval: edge.heartbeat_interval,
        heartbeat_timeout: edge.heartbeat_timeout,
        write_timeout: edge.write_timeout,
        shutdown_timeout: common.shutdown_timeout,
        max_connections: edge.max_connections,
        max_http_connections: edge.max_http_connections,
        http_header_timeout: edge.http_header_timeout,
        ts_window: TsWindow { max_age: edge.max_tick_age, ..TsWindow::DEFAULT },
        max_sessions_per_client: edge.max_sessions_per_client,
        max_ws_per_client: edge.max_ws_per_client,
        session_creates_per_sec: edge.session_creates_per_sec,
        session_create_burst: edge.session_create_burst,
        publishes_per_sec: edge.publishes_per_sec,
        publish_burst: edge.publish_burst,
        max_http_connections_per_ip: edge.max_http_connections_per_ip,
        trusted_proxies: edge.trusted_proxies.clone(),
        max_tracked_clients: edge.max_tracked_clients,
        direct_writes: edge.direct_writes,
        ..GatewayConfig::default()
    }
}

/// `/metrics`, `/healthz` and `/readyz` for the engine and feed roles (the gateway serves its
/// own), until `stop`.
pub(crate) fn spawn_metrics_server(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let router = tickstream_gateway::ops::ops_router(metrics, readiness);
    tokio::spawn(async move {
        let served = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics server failed");
        }
    })
}

/// A running role: stop it with [`Handle::shutdown`], then [`Handle::wait`] for it to release
/// everything.
#[derive(Debug)]
pub struct Handle {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Handle {
    pub(crate) fn new(shutdown: CancellationToken, task: JoinHandle<()>) -> Self {
        Self { shutdown, task }
    }

    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the role has stopped.
    ///
    /// # Errors
    /// Only if its task panicked.
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)
    }
}
