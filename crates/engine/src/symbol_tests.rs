//! Tests of the symbol bound (`EngineConfig::max_symbols`) over the engine and the in-memory
//! broker together, and of the resync snapshot a broker sends after a reconnect.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tickstream_api::{MonitoringService, ServiceError, SessionEvent, StartRequest, Tick, Ticker};
use tickstream_broker::{InMemoryBroker, TickSink};
use tickstream_telemetry::Metrics;

use super::*;

fn t(s: &str) -> Ticker {
    Ticker::parse(s).unwrap()
}

fn req(tickers: Vec<Ticker>) -> StartRequest {
    StartRequest { tickers, max_rate_hz: None, owner: None }
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_sessions_of_new_symbols_stay_within_max_symbols() {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(1000, metrics.clone()));
    let config = EngineConfig { max_symbols: 1000, max_sessions: 20_000, ..Default::default() };
    let e = Engine::new(config, broker.clone(), metrics.clone());
    let (mut created, mut refused) = (0, 0);
    for i in 0..10_000 {
        let tickers = (0..3).map(|j| t(&format!("S{i}X{j}"))).collect();
        match e.start_monitoring(req(tickers)).await {
            Ok(_) => created += 1,
            Err(ServiceError::SymbolLimit { max: 1000 }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
        // Each also publishes a new symbol: the cache has the same bound.
        let _ = e.publish(vec![Tick::new(t(&format!("P{i}")), 1.0, 1).unwrap()]).await;
    }
    assert_eq!(created, 333);
    assert_eq!(refused, 10_000 - 333);
    assert!(e.watched_tickers() <= 1000, "{} watched", e.watched_tickers());
    assert_eq!(metrics.broker_subscriptions.get(), 999);
    assert!(broker.cached_symbols() <= 1000);
    // Adding tickers to an existing session is bounded the same way.
    let id = e.start_monitoring(req(vec![t("S0X0")])).await.unwrap().id;
    let err = e.update_tickers(id, vec![t("NEW1"), t("NEW2")], vec![]).await.unwrap_err();
    assert!(matches!(err, ServiceError::SymbolLimit { max: 1000 }), "{err:?}");
    assert!(e.update_tickers(id, vec![t("NEW1")], vec![]).await.is_ok(), "one slot was left");

    // Junk published once and never watched is evicted after the idle age: a new listing fits.
    let late = Tick::new(t("LISTING"), 1.0, 1).unwrap();
    assert!(e.publish(vec![late.clone()]).await.is_err(), "full");
    tokio::time::advance(tickstream_broker::DEFAULT_SYMBOL_IDLE + Duration::from_secs(2)).await;
    e.publish(vec![late]).await.unwrap();
}

#[tokio::test]
async fn a_resync_reaches_streaming_sessions_as_a_snapshot() {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(100, metrics.clone()));
    let e = Engine::new(EngineConfig::default(), broker, metrics);
    let id = e.start_monitoring(req(vec![t("A"), t("B")])).await.unwrap().id;
    let mut updates = e.stream_price_updates(id).await.unwrap();
    assert!(matches!(updates.next().await, Some(SessionEvent::Snapshot(v)) if v.is_empty()));
    let tick = Arc::new(Tick::new(t("A"), 5.0, 9).unwrap());
    let other = Arc::new(Tick::new(t("Z"), 5.0, 9).unwrap());
    e.inner.fanout.resync(&[Arc::clone(&tick), other]);
    match updates.next().await {
        Some(SessionEvent::Snapshot(v)) => assert_eq!(v, vec![tick]),
        other => panic!("expected a snapshot, got {other:?}"),
    }
}
