//! The coalescing window (`EngineConfig::coalesce_window`) on tokio's paused clock: it opens
//! only for a stream whose last message left less than a window ago, and a session's longer
//! `max_rate_hz` interval still wins.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tickstream_api::{MonitoringService, SessionEvent, StartRequest, Tick, Ticker};
use tickstream_broker::InMemoryBroker;
use tickstream_telemetry::Metrics;
use tokio::time::Instant;

use super::*;

const WINDOW: Duration = Duration::from_millis(20);

fn t(s: &str) -> Ticker {
    Ticker::parse(s).unwrap()
}

fn engine(window: Duration) -> Engine {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(1000, metrics.clone()));
    Engine::new(EngineConfig { coalesce_window: window, ..Default::default() }, broker, metrics)
}

async fn stream(e: &Engine, tickers: &[&str], max_rate_hz: Option<f64>) -> Updates {
    let req = StartRequest { tickers: tickers.iter().map(|s| t(s)).collect(), max_rate_hz, owner: None };
    let id = e.start_monitoring(req).await.unwrap().id;
    let mut s = e.stream_price_updates(id).await.unwrap();
    assert!(matches!(s.next().await, Some(SessionEvent::Snapshot(_))));
    s
}

async fn publish(e: &Engine, ticker: &str, price: f64) {
    e.publish(vec![Tick::new(t(ticker), price, 1).unwrap()]).await.unwrap();
}

fn count(ev: Option<SessionEvent>) -> usize {
    match ev {
        Some(SessionEvent::Prices(v)) => v.len(),
        other => panic!("expected prices, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_with_time_since_its_last_message_gets_its_update_at_once() {
    let e = engine(WINDOW);
    let mut s = stream(&e, &["AAPL"], None).await;
    tokio::time::advance(WINDOW).await;
    publish(&e, "AAPL", 1.0).await;
    let t0 = Instant::now();
    assert_eq!(count(s.next().await), 1);
    assert_eq!(t0.elapsed(), Duration::ZERO, "the window is closed: no added latency");
}

#[tokio::test(start_paused = true)]
async fn updates_faster_than_the_window_leave_together_one_window_after_the_last_message() {
    let e = engine(WINDOW);
    let mut s = stream(&e, &["AAPL", "MSFT", "NVDA"], None).await;
    tokio::time::advance(WINDOW).await;
    publish(&e, "AAPL", 1.0).await;
    assert_eq!(count(s.next().await), 1);
    let sent = Instant::now();
    publish(&e, "MSFT", 1.0).await;
    tokio::time::advance(Duration::from_millis(5)).await;
    publish(&e, "NVDA", 1.0).await;
    publish(&e, "AAPL", 2.0).await;
    assert_eq!(count(s.next().await), 3, "one fuller message");
    assert_eq!(sent.elapsed(), WINDOW, "held until the window closed, no longer");
}

#[tokio::test(start_paused = true)]
async fn without_a_window_every_update_leaves_at_once() {
    let e = engine(Duration::ZERO);
    let mut s = stream(&e, &["AAPL", "MSFT"], None).await;
    publish(&e, "AAPL", 1.0).await;
    assert_eq!(count(s.next().await), 1);
    let sent = Instant::now();
    publish(&e, "MSFT", 1.0).await;
    assert_eq!(count(s.next().await), 1);
    assert_eq!(sent.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_longer_max_rate_interval_wins_over_the_window() {
    let e = engine(WINDOW);
    let mut s = stream(&e, &["AAPL"], Some(4.0)).await;
    let snap = Instant::now();
    publish(&e, "AAPL", 1.0).await;
    assert_eq!(count(s.next().await), 1);
    assert_eq!(snap.elapsed(), Duration::from_millis(250));
}

#[test]
fn a_window_over_the_maximum_is_refused() {
    let config = |w| EngineConfig { coalesce_window: w, ..Default::default() };
    assert!(config(MAX_COALESCE_WINDOW).validate().is_ok());
    let err = config(MAX_COALESCE_WINDOW + Duration::from_millis(1)).validate().unwrap_err();
    assert!(err.to_string().contains("--coalesce-window"), "{err}");
}
