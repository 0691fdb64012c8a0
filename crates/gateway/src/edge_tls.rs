//! Edge TLS: the rustls handshake in front of the gateway's HTTP/1.1 server, so `https://` and
//! `wss://` work without a proxy. The accept loop (`server`) hands each accepted
//! connection here when `--tls-cert`/`--tls-key` are set; the plain path never touches it.
//!
//! The config comes from `tickstream_auth::tls::server_config` (PEM files, ring provider); this
//! module only fixes ALPN to `http/1.1` (hyper here speaks HTTP/1.1 only, and a client offering
//! `h2` must not be told yes) and bounds the handshake by the header timeout, so a peer that
//! opens a socket and never completes the handshake holds its slot no longer than one that
//! never sends its headers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tickstream_telemetry::Metrics;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

/// The edge listener's TLS settings. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct EdgeTls {
    acceptor: TlsAcceptor,
}

impl fmt::Debug for EdgeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeTls").finish_non_exhaustive()
    }
}

impl EdgeTls {
    /// Serves with `config` (certificate and key already loaded), advertising only `http/1.1`.
    pub fn new(mut config: ServerConfig) -> Self {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self { acceptor: TlsAcceptor::from(Arc::new(config)) }
    }

    /// The server handshake on `io`, within `timeout`. A failure (a plain-HTTP client, an
    /// untrusted certificate on the client's side, a scanner, a timeout) is routine for an
    /// open port: counted in `tickstream_tls_handshake_failures_total`, logged at debug, and
    /// the connection dropped; `None` then.
    pub(crate) async fn handshake<I>(
        &self,
        io: I,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Option<TlsStream<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(timeout, self.acceptor.accept(io)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                metrics.tls_handshake_failures.inc();
                tracing::debug!(?timeout, "TLS handshake timed out");
                None
            }
        }
    }
}
