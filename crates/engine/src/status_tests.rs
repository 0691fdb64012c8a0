//! Quotes and statuses through the engine, without sockets: staleness by the node's one sweep,
//! halts to every watcher, the status that follows a snapshot, and conflation of whole records.
//! Timers run on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tickstream_api::{
    MonitoringService, Quote, SessionEvent, SharedTick, StartRequest, Tick, TickerStatus, TradingStatus,
};
use tickstream_broker::InMemoryBroker;
use tickstream_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

const STALE: Duration = Duration::from_secs(2);

fn t(s: &str) -> Ticker {
    Ticker::parse(s).unwrap()
}

fn engine() -> (Engine, Arc<Metrics>) {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(10_000, metrics.clone()));
    let config = EngineConfig { stale_after: STALE, ..Default::default() };
    (Engine::new(config, broker, metrics.clone()), metrics)
}

async fn session(e: &Engine, tickers: &[&str]) -> Updates {
    let req =
        StartRequest { tickers: tickers.iter().map(|s| t(s)).collect(), max_rate_hz: None, owner: None };
    let id = e.start_monitoring(req).await.unwrap().id;
    e.stream_price_updates(id).await.unwrap()
}

async fn publish(e: &Engine, s: &str, price: f64) {
    e.publish(vec![Tick::new(t(s), price, tickstream_api::now_ms()).unwrap()]).await.unwrap();
}

fn statuses(ev: &SessionEvent) -> Vec<(String, TickerStatus)> {
    let SessionEvent::Status(v) = ev else { panic!("expected a status event, got {ev:?}") };
    let mut out: Vec<_> = v.iter().map(|s| (s.ticker().to_string(), s.status())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn ticks(ev: &SessionEvent) -> &[SharedTick] {
    match ev {
        SessionEvent::Snapshot(v) | SessionEvent::Prices(v) => v,
        other => panic!("expected prices, got {other:?}"),
    }
}

async fn next(s: &mut Updates) -> SessionEvent {
    s.next().await.unwrap()
}

fn pending(s: &mut Updates) -> bool {
    futures::FutureExt::now_or_never(s.next()).is_some()
}

#[tokio::test(start_paused = true)]
async fn a_quiet_ticker_turns_stale_within_stale_after_plus_the_sweep_interval_and_live_on_its_next_update() {
    let (e, m) = engine();
    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    e.spawn_sweeper(&tracker, token.clone());
    assert_eq!(m.live_tasks(), 1, "one sweeper task for TTLs and statuses");
    publish(&e, "A", 1.0).await;
    publish(&e, "B", 1.0).await;
    let mut s = session(&e, &["A", "B"]).await;
    assert!(matches!(next(&mut s).await, SessionEvent::Snapshot(_)));
    let started = tokio::time::Instant::now();
    // B keeps updating; A goes quiet.
    let mut b_updates = 0;
    let stale = loop {
        tokio::select! {
            ev = s.next() => {
                let ev = ev.unwrap();
                if let SessionEvent::Status(_) = ev { break ev; }
                assert!(matches!(ev, SessionEvent::Prices(_)));
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                publish(&e, "B", 2.0 + f64::from(b_updates)).await;
                b_updates += 1;
            }
        }
    };
    let waited = started.elapsed();
    assert_eq!(statuses(&stale), [("A".into(), TickerStatus::Stale)]);
    let sweep_every = STALE / 10;
    assert!(waited >= STALE && waited <= STALE + sweep_every, "stale after {waited:?}");
    publish(&e, "A", 3.0).await;
    assert_eq!(statuses(&next(&mut s).await), [("A".into(), TickerStatus::Live)], "live before the price");
    assert_eq!(ticks(&next(&mut s).await)[0].price(), 3.0);
    token.cancel();
    tracker.close();
    tracker.wait().await;
    drop(s);
    assert_eq!(m.live_tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_halt_reaches_every_watcher_and_a_new_snapshot_says_it() {
    let (e, _m) = engine();
    publish(&e, "X", 10.0).await;
    let mut watchers = [session(&e, &["X"]).await, session(&e, &["X", "Y"]).await];
    for s in &mut watchers {
        assert!(matches!(next(s).await, SessionEvent::Snapshot(_)));
        assert!(!pending(s), "a live snapshot is followed by no status");
    }
    let missing =
        e.publish_status(vec![(t("X"), TradingStatus::Halted), (t("Y"), TradingStatus::Halted)]).await;
    assert_eq!(missing, Ok(vec![t("Y")]), "Y has no price, hence no record to carry the halt");
    for s in &mut watchers {
        assert_eq!(statuses(&next(s).await), [("X".into(), TickerStatus::Halted)]);
        let ev = next(s).await;
        let record = &ticks(&ev)[0];
        assert_eq!((record.price(), record.trading_status()), (10.0, Some(TradingStatus::Halted)));
    }
    // A halted ticker never turns stale.
    tokio::time::advance(STALE * 3).await;
    assert_eq!(e.sweep_status(), 0);
    let mut late = session(&e, &["X"]).await;
    assert!(matches!(next(&mut late).await, SessionEvent::Snapshot(_)));
    assert_eq!(statuses(&next(&mut late).await), [("X".into(), TickerStatus::Halted)]);
    e.publish_status(vec![(t("X"), TradingStatus::Resumed)]).await.unwrap();
    assert_eq!(statuses(&next(&mut late).await), [("X".into(), TickerStatus::Resumed)]);
    next(&mut late).await;
    publish(&e, "X", 11.0).await;
    assert_eq!(statuses(&next(&mut late).await), [("X".into(), TickerStatus::Live)]);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_is_followed_by_the_status_of_each_ticker_that_is_not_live() {
    let (e, _m) = engine();
    publish(&e, "OLD", 1.0).await;
    let mut first = session(&e, &["OLD"]).await;
    next(&mut first).await;
    tokio::time::advance(STALE).await;
    assert_eq!(e.sweep_status(), 1);
    assert_eq!(statuses(&next(&mut first).await), [("OLD".into(), TickerStatus::Stale)]);
    publish(&e, "NEW", 1.0).await;
    let mut s = session(&e, &["OLD", "NEW", "NONE"]).await;
    assert_eq!(ticks(&next(&mut s).await).len(), 2);
    assert_eq!(statuses(&next(&mut s).await), [("OLD".into(), TickerStatus::Stale)]);
    assert!(!pending(&mut s));
    // Drained statuses are gone; a detached session keeps none.
    drop(s);
    drop(first);
    assert_eq!(e.sweep_status(), 0, "already stale");
}

#[tokio::test]
async fn the_latest_record_wins_whole_partial_updates_do_not_merge() {
    let (e, m) = engine();
    let quoted = Tick::new(t("Q"), 100.0, 1)
        .unwrap()
        .with_quote(Quote { bid: Some(99.9), ask: Some(100.1), volume: Some(5.0), ..Quote::EMPTY })
        .unwrap();
    e.publish(vec![quoted.clone()]).await.unwrap();
    let mut s = session(&e, &["Q"]).await;
    assert_eq!(*ticks(&next(&mut s).await)[0], quoted, "the snapshot is the whole record");
    // Two updates before the stream drains: a trade print without the book, then a quote.
    let trade = Tick::new(t("Q"), 100.05, 2)
        .unwrap()
        .with_quote(Quote { size: Some(10.0), volume: Some(15.0), ..Quote::EMPTY })
        .unwrap();
    let price_only = Tick::new(t("Q"), 100.2, 3).unwrap();
    e.publish(vec![trade, price_only.clone()]).await.unwrap();
    let batch = next(&mut s).await;
    assert_eq!(ticks(&batch).len(), 1, "one record per ticker");
    let latest = &ticks(&batch)[0];
    assert_eq!(**latest, price_only, "no field of an earlier record survives");
    assert_eq!(latest.quote(), &Quote::EMPTY);
    assert!(m.updates_conflated.get() >= 1);
    let again = session(&e, &["Q"]).await;
    drop(s);
    let mut again = again;
    assert_eq!(*ticks(&next(&mut again).await)[0], price_only, "the cache holds the same record");
}
