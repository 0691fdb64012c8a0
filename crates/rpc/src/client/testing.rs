//! Test fixtures for the client's parts: a real engine served on port 0, and a TCP proxy in
//! front of it whose connections can be cut, to fail an engine the way a network does.

use std::net::SocketAddr;
use std::sync::Arc;

use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig};
use tickstream_telemetry::Metrics;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::{GrpcServerConfig, serve};

/// A local engine (in-memory broker, no shared store) served until `stop` is cancelled.
pub(super) async fn engine_server(stop: CancellationToken) -> (SocketAddr, Engine) {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(1000, Arc::clone(&metrics)));
    let engine = Engine::new(EngineConfig::default(), broker, Arc::clone(&metrics));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let served = engine.clone();
    tokio::spawn(async move {
        let config = GrpcServerConfig::default();
        serve(Arc::new(served), metrics, listener, &config, stop.cancelled_owned()).await
    });
    (addr, engine)
}

/// A port nothing listens on (bound, then released).
pub(super) async fn dead_uri() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    format!("http://{}", listener.local_addr().expect("bound address"))
}

/// A TCP proxy to `backend`: when `cut` is cancelled it drops every connection and stops
/// listening, so the engine behind it looks dead (reset streams, refused connections).
pub(super) async fn proxy(backend: SocketAddr, cut: CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                () = cut.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(_) => continue,
                },
            };
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(backend).await else { return };
                tokio::select! {
                    () = cut.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    format!("http://{addr}")
}
