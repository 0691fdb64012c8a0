//! The all-in-one role: broker, engine, feed and gateway in one process.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig};
use tickstream_feed::{FeedConfig, SimulatedFeed};
use tickstream_gateway::{Gateway, GatewayConfig};
use tickstream_telemetry::Metrics;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::ServeArgs;

/// Listen backlog; the kernel caps it at `somaxconn` (4096 here). A connection storm (a load
/// test's ramp, every client reconnecting after a restart) needs more than tokio's 1024.
const BACKLOG: u32 = 4096;

/// A running `serve` node.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub engine: Engine,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts the graceful shutdown: stop accepting, close every WebSocket with 1001, end every
    /// session, stop the feed and the sweeper.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the node has stopped and released everything.
    ///
    /// # Errors
    /// Only if the serving task panicked.
    pub async fn wait(self) -> io::Result<()> {
        self.task.await.map_err(io::Error::other)
    }
}

/// Binds and starts a `serve` node.
///
/// # Errors
/// Invalid settings ([`ServeArgs::validate`]), or a listen address that cannot be bound.
pub async fn start(args: &ServeArgs) -> io::Result<Running> {
    args.validate().map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(args.max_symbols, Arc::clone(&metrics)));
    let engine = Engine::new(
        EngineConfig {
            session_ttl: args.session_ttl,
            max_tickers_per_session: args.max_tickers_per_session,
            max_sessions: args.max_sessions,
        },
        broker.clone(),
        Arc::clone(&metrics),
    );
    let listener = bind(args.listen)?;
    let addr = listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let background = TaskTracker::new();
    engine.spawn_sweeper(&background, shutdown.clone());
    if !args.no_feed {
        let feed = SimulatedFeed::new(&FeedConfig {
            tickers: args.tickers,
            rate: args.feed_rate,
            seed: rand::random(),
        });
        feed.spawn(broker, &metrics, &background, shutdown.clone());
    }
    let gateway = Gateway::new(
        Arc::new(engine.clone()),
        Arc::clone(&metrics),
        GatewayConfig {
            heartbeat_interval: args.heartbeat_interval,
            heartbeat_timeout: args.heartbeat_timeout,
            write_timeout: args.write_timeout,
            shutdown_timeout: args.shutdown_timeout,
            max_connections: args.max_connections,
            max_http_connections: args.max_http_connections,
            http_header_timeout: args.http_header_timeout,
            ..GatewayConfig::default()
        },
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
    Ok(Running { addr, metrics, engine, shutdown, task })
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // Restart on the same port while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
