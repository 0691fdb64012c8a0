//! The accept loop: HTTP/1.1 connections with a cap, timeouts and a graceful end.
//!
//! Written out rather than `axum::serve`, which has no connection cap and no timeouts, so a
//! client that opens sockets and never finishes a request, or never reads its response, would
//! hold them forever. Here:
//! - a permit is taken *before* `accept`, so past the cap new connections wait in the kernel's
//!   backlog instead of consuming descriptors;
//! - request headers (and an idle keep-alive connection's next request) must arrive within the
//!   header timeout; the body and the handler get the same budget (`Gateway::router`);
//! - a write that makes no progress for the write timeout fails the connection ([`StallGuard`]);
//! - with edge TLS, the handshake must also finish within the header timeout ([`EdgeTls`]).
//! - an IP holding `--max-http-connections-per-ip` has its next connection closed at once
//!   (no response: a client hoarding connections is not reading answers), and every request
//!   carries its peer address (`ConnectInfo`) for the per-client limits (`limits`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tickstream_telemetry::{GaugeGuard, Metrics};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::edge_tls::EdgeTls;
use crate::limits::{Limits, WithPeer};

/// What the accept loop needs.
#[derive(Debug)]
pub(crate) struct Accept {
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub limits: Arc<Limits>,
    pub max_connections: usize,
    /// Time allowed for a request's headers, and for an idle keep-alive connection's next request.
    pub header_timeout: Duration,
    /// A write that makes no progress for this long fails the connection.
    pub write_stall: Duration,
    /// How long shutdown waits for connections to finish their in-flight requests.
    pub drain: Duration,
    /// Edge TLS (`--tls-cert`/`--tls-key`): every connection is a TLS handshake first.
    pub tls: Option<EdgeTls>,
}

impl Accept {
    /// Accepts until shutdown, then waits for open HTTP connections until the returned deadline
    /// (`drain` after shutdown began), which the caller reuses for WebSockets. Upgraded
    /// WebSockets leave this loop's accounting when hyper hands them over.
    pub async fn run(self, listener: TcpListener) -> Instant {
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
            let (stream, peer) = tokio::select! {
                () = self.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tokio::select! {
                            () = self.shutdown.cancelled() => break,
                            () = accept_error(e) => continue,
                        }
                    }
                },
            };
            let Some(per_ip) = self.limits.http_connection(peer.ip()) else {
                // Dropping the stream closes it; the permit goes back with it.
                continue;
            };
            // Prices are small and latency-bound: never wait for Nagle.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY failed");
            }
            let service = TowerToHyperService::new(WithPeer::new(self.router.clone(), peer));
            let shutdown = self.shutdown.clone();
            let (header_timeout, drain) = (self.header_timeout, self.drain);
            let io = StallGuard::new(stream, self.write_stall);
            let open = GaugeGuard::new(&self.metrics.http_connections);
            let tls = self.tls.clone();
            let metrics = Arc::clone(&self.metrics);
            connections.spawn(async move {
                let _permit = permit;
                let _per_ip = per_ip;
                let _open = open;
                let http = Http { service, shutdown, header_timeout, drain };
                match tls {
                    None => http.serve(io).await,
                    // The handshake runs here, in the connection's task, never in the loop.
                    Some(tls) => {
                        if let Some(io) = tls.handshake(io, header_timeout, &metrics).await {
                            http.serve(io).await;
                        }
                    }
                }
            });
        }
        let deadline = Instant::now() + self.drain;
        drop(listener);
        connections.close();
        if tokio::time::timeout_at(deadline, connections.wait()).await.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "HTTP connections still open at the shutdown deadline"
            );
        }
        deadline
    }
}

/// One accepted connection's HTTP/1.1 server, over plain TCP or TLS (generic, so the plain path
/// is exactly what it was before TLS existed).
struct Http {
    service: TowerToHyperService<WithPeer>,
    shutdown: CancellationToken,
    header_timeout: Duration,
    drain: Duration,
}

impl Http {
    async fn serve<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, io: I) {
        let Self { service, shutdown, header_timeout, drain } = self;
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(io), service)
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

/// A TCP stream whose writes must make progress within `limit`. hyper has no write timeout: a
/// client that never reads its response would otherwise hold the connection and its slot
/// forever. The timer is allocated only while a write is pending. Upgraded WebSockets keep this
/// wrapper; their own write deadline (`--write-timeout`, close code 4008) is shorter and fires
/// first.
#[derive(Debug)]
pub(crate) struct StallGuard {
    inner: TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    pub fn new(inner: TcpStream, limit: Duration) -> Self {
        Self { inner, limit, stalled: None }
    }

    /// SPIKE: a non-blocking write outside tokio's budget (the fan-out's direct writes).
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.try_write(buf)
    }

    /// Called when a write is pending: starts the stall timer, or fails once it has run out.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled"))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, result: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(result, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(result, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
