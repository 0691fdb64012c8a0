//! The accept loop: HTTP/1.1 connections with a cap, a header/idle timeout and a graceful end.
//!
//! Written out rather than `axum::serve`, which has neither a connection cap nor a header read
//! timeout, so a client that opens sockets and never finishes a request would hold them forever.
//! A permit is taken *before* `accept`, so past the cap new connections wait in the kernel's
//! backlog instead of consuming descriptors.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tickstream_telemetry::{GaugeGuard, Metrics};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What the accept loop needs.
#[derive(Debug)]
pub(crate) struct Accept {
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub max_connections: usize,
    /// Time allowed for a request's headers, and for an idle keep-alive connection's next request.
    pub header_timeout: Duration,
    /// How long a connection may take to finish its in-flight request at shutdown.
    pub drain: Duration,
}

impl Accept {
    /// Accepts until shutdown, then waits (at most `drain`) for open HTTP connections.
    /// Upgraded WebSockets leave this loop's accounting when hyper hands them over.
    pub async fn run(self, listener: TcpListener) {
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let connections = TaskTracker::new();
        loop {
            let permit = tokio::select! {
                () = self.shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                () = self.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                },
            };
            // Prices are small and latency-bound: never wait for Nagle.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY failed");
            }
            let service = TowerToHyperService::new(self.router.clone());
            let shutdown = self.shutdown.clone();
            let (header_timeout, drain) = (self.header_timeout, self.drain);
            let open = GaugeGuard::new(&self.metrics.http_connections);
            connections.spawn(async move {
                let _permit = permit;
                let _open = open;
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::pin!(conn);
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "http connection ended with an error");
                        }
                    }
                    () = shutdown.cancelled() => {
                        // Idle keep-alive connections close now; in-flight requests finish.
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(drain, conn).await;
                    }
                }
            });
        }
        drop(listener);
        connections.close();
        if tokio::time::timeout(self.drain, connections.wait()).await.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "HTTP connections still open at the shutdown deadline"
            );
        }
    }
}

/// Per-connection failures (the peer gave up during the handshake) are routine; anything else
/// (out of descriptors, say) is logged and retried after a pause rather than spun on.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
