//! The edge's `/readyz` checks over an in-process engine: ready while serving, `draining` once
//! shutdown began, `no_engine` once the service says it cannot serve, and the checks the binary
//! adds (here a broker flag) on top.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig};
use tickstream_gateway::ops::{NotReady, Readiness};
use tickstream_gateway::{Gateway, GatewayConfig};
use tickstream_telemetry::Metrics;
use tokio_util::sync::CancellationToken;

fn gateway(shutdown: &CancellationToken, extra: Readiness) -> (Gateway<Engine>, Engine) {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(100, Arc::clone(&metrics)));
    let engine = Engine::new(EngineConfig::default(), broker, Arc::clone(&metrics));
    let gateway = Gateway::new(Arc::new(engine.clone()), metrics, GatewayConfig::default(), shutdown.clone())
        .expect("default config is valid")
        .with_readiness(extra);
    (gateway, engine)
}

#[tokio::test]
async fn an_edge_is_ready_until_it_drains() {
    let shutdown = CancellationToken::new();
    let (gateway, _engine) = gateway(&shutdown, Readiness::new());
    assert_eq!(gateway.readiness().reasons(), []);
    shutdown.cancel();
    assert_eq!(gateway.readiness().reasons(), [NotReady::Draining]);
}

#[tokio::test]
async fn an_edge_whose_service_cannot_serve_is_not_ready() {
    let shutdown = CancellationToken::new();
    let (gateway, engine) = gateway(&shutdown, Readiness::new());
    // A closing engine answers `ready() == false`, as a remote one does with no engine up.
    engine.shutdown();
    assert_eq!(gateway.readiness().reasons(), [NotReady::NoEngine]);
}

#[tokio::test]
async fn checks_added_by_the_binary_are_asked_too() {
    let shutdown = CancellationToken::new();
    let connected = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&connected);
    let broker = Readiness::new()
        .check(move || (!flag.load(Ordering::Relaxed)).then_some(NotReady::BrokerDisconnected));
    let (gateway, _engine) = gateway(&shutdown, broker);
    assert_eq!(gateway.readiness().reasons(), [NotReady::BrokerDisconnected]);
    connected.store(true, Ordering::Relaxed);
    assert_eq!(gateway.readiness().reasons(), []);
}
