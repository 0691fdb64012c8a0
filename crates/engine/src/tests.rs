//! Engine behaviour without sockets: fan-out, conflation, lifecycle, limits. Timers run on
//! tokio's paused clock, so TTLs and rate caps are exact and instant.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tickstream_api::{
    CloseReason, MonitoringService, ServiceError, SessionEvent, SessionState, StartRequest, Tick, Ticker,
};
use tickstream_broker::InMemoryBroker;
use tickstream_telemetry::Metrics;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

fn t(s: &str) -> Ticker {
    Ticker::parse(s).unwrap()
}

fn engine_with(config: EngineConfig) -> (Engine, Arc<Metrics>) {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(10_000, metrics.clone()));
    (Engine::new(config, broker, metrics.clone()), metrics)
}

fn engine() -> (Engine, Arc<Metrics>) {
    engine_with(EngineConfig { session_ttl: Duration::from_secs(10), ..Default::default() })
}

async fn start(e: &Engine, tickers: &[&str]) -> SessionId {
    let req =
        StartRequest { tickers: tickers.iter().map(|s| t(s)).collect(), max_rate_hz: None, owner: None };
    e.start_monitoring(req).await.unwrap().id
}

async fn publish(e: &Engine, ticks: &[(&str, f64)]) {
    let ticks = ticks.iter().map(|&(s, p)| Tick::new(t(s), p, 1).unwrap()).collect();
    e.publish(ticks).await.unwrap();
}

fn prices(ev: &SessionEvent) -> Vec<(String, f64)> {
    let ticks = match ev {
        SessionEvent::Snapshot(v) | SessionEvent::Prices(v) => v,
        SessionEvent::Closed(r) => panic!("unexpected close {r:?}"),
        SessionEvent::Status(s) => panic!("unexpected status {s:?}"),
    };
    let mut out: Vec<_> = ticks.iter().map(|t| (t.ticker().to_string(), t.price())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn gauges(m: &Metrics) -> [i64; 4] {
    [
        m.sessions_in("pending").get(),
        m.sessions_in("streaming").get(),
        m.sessions_in("detached").get(),
        m.broker_subscriptions.get(),
    ]
}

#[tokio::test]
async fn one_broker_subscription_per_ticker_reference_counted() {
    let (e, m) = engine();
    let a = start(&e, &["AAPL", "MSFT"]).await;
    let b = start(&e, &["AAPL"]).await;
    assert_eq!(m.broker_subscriptions.get(), 2);
    assert_eq!(gauges(&m), [2, 0, 0, 2]);
    e.end_session(a).await.unwrap();
    assert_eq!(m.broker_subscriptions.get(), 1, "AAPL still watched by b");
    assert_eq!(e.end_session(a).await, Err(ServiceError::SessionNotFound), "idempotent");
    e.end_session(b).await.unwrap();
    assert_eq!(gauges(&m), [0, 0, 0, 0]);
    assert_eq!(e.watched_tickers(), 0);
}

#[tokio::test]
async fn snapshot_first_then_only_watched_tickers() {
    let (e, _m) = engine();
    publish(&e, &[("AAPL", 1.0), ("MSFT", 2.0)]).await;
    let id = start(&e, &["AAPL", "GOOG"]).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    let first = s.next().await.unwrap();
    assert!(matches!(first, SessionEvent::Snapshot(_)));
    assert_eq!(prices(&first), [("AAPL".into(), 1.0)], "GOOG has no price yet");
    publish(&e, &[("MSFT", 3.0), ("GOOG", 4.0)]).await;
    assert_eq!(prices(&s.next().await.unwrap()), [("GOOG".into(), 4.0)]);
}

#[tokio::test]
async fn conflation_keeps_latest_and_bounds_memory() {
    let (e, m) = engine();
    let id = start(&e, &["A", "B", "C"]).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    assert_eq!(prices(&s.next().await.unwrap()), []);
    // The consumer is not reading: 3,000 updates must fold into one entry per ticker.
    for i in 1..=1000 {
        let p = f64::from(i);
        publish(&e, &[("A", p), ("B", p + 0.5), ("C", p + 0.25)]).await;
        assert!(e.pending_updates(id).unwrap() <= 3);
    }
    assert_eq!(m.updates_conflated.get(), 2997);
    let batch = s.next().await.unwrap();
    assert!(matches!(batch, SessionEvent::Prices(_)));
    assert_eq!(prices(&batch), [("A".into(), 1000.0), ("B".into(), 1000.5), ("C".into(), 1000.25)]);
    assert_eq!(e.pending_updates(id), Some(0));
}

#[tokio::test(start_paused = true)]
async fn replacement_ends_old_stream_and_drop_detaches_then_ttl_expires() {
    let (e, m) = engine();
    let id = start(&e, &["AAPL"]).await;
    let mut old = e.stream_price_updates(id).await.unwrap();
    old.next().await.unwrap();
    let mut new = e.stream_price_updates(id).await.unwrap();
    assert_eq!(old.next().await, Some(SessionEvent::Closed(CloseReason::Replaced)));
    assert_eq!(old.next().await, None);
    drop(old);
    assert_eq!(gauges(&m), [0, 1, 0, 1], "dropping the replaced stream must not detach");
    new.next().await.unwrap();
    publish(&e, &[("AAPL", 5.0)]).await;
    assert_eq!(prices(&new.next().await.unwrap()), [("AAPL".into(), 5.0)]);
    drop(new);
    assert_eq!(gauges(&m), [0, 0, 1, 1]);
    assert_eq!(e.session(id).await.unwrap().state, SessionState::Detached);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(e.sweep(), 0, "not yet expired");
    // Resumable before the TTL: attaching again streams.
    let again = e.stream_price_updates(id).await.unwrap();
    drop(again);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(e.sweep(), 1);
    assert_eq!(gauges(&m), [0, 0, 0, 0]);
    assert!(e.stream_price_updates(id).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn never_attached_sessions_expire_and_lookups_see_expiry_before_the_sweeper() {
    let (e, m) = engine();
    let id = start(&e, &["AAPL"]).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(e.session(id).await, Err(ServiceError::SessionNotFound));
    assert_eq!(gauges(&m), [0, 0, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn sweeper_task_removes_expired_and_stops_on_shutdown() {
    let (e, m) = engine();
    let tracker = TaskTracker::new();
    let token = CancellationToken::new();
    e.spawn_sweeper(&tracker, token.clone());
    assert_eq!(m.live_tasks(), 1);
    start(&e, &["AAPL"]).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(e.session_count(), 0);
    token.cancel();
    tracker.close();
    tracker.wait().await;
    assert_eq!(m.live_tasks(), 0);
}

#[tokio::test]
async fn end_while_streaming_closes_stream() {
    let (e, m) = engine();
    let id = start(&e, &["AAPL"]).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    s.next().await.unwrap();
    e.end_session(id).await.unwrap();
    assert_eq!(s.next().await, Some(SessionEvent::Closed(CloseReason::SessionEnded)));
    drop(s);
    assert_eq!(gauges(&m), [0, 0, 0, 0]);
}

#[tokio::test]
async fn shutdown_ends_every_session() {
    let (e, m) = engine();
    let id = start(&e, &["AAPL"]).await;
    start(&e, &["MSFT"]).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    s.next().await.unwrap();
    e.shutdown();
    assert_eq!(s.next().await, Some(SessionEvent::Closed(CloseReason::ShuttingDown)));
    assert_eq!(gauges(&m), [0, 0, 0, 0]);
}

#[tokio::test]
async fn changing_tickers_resubscribes_and_snapshots_added_ones() {
    let (e, m) = engine_with(EngineConfig { max_tickers_per_session: 3, ..Default::default() });
    publish(&e, &[("MSFT", 7.0)]).await;
    let id = start(&e, &["AAPL"]).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    s.next().await.unwrap();
    let all = e.update_tickers(id, vec![t("MSFT"), t("AAPL")], vec![]).await.unwrap();
    assert_eq!(all, [t("AAPL"), t("MSFT")]);
    let snap = s.next().await.unwrap();
    assert!(matches!(snap, SessionEvent::Snapshot(_)));
    assert_eq!(prices(&snap), [("MSFT".into(), 7.0)]);
    assert_eq!(m.broker_subscriptions.get(), 2);
    let all = e.update_tickers(id, vec![], vec![t("AAPL")]).await.unwrap();
    assert_eq!(all, [t("MSFT")]);
    assert_eq!(m.broker_subscriptions.get(), 1);
    publish(&e, &[("AAPL", 1.0), ("MSFT", 8.0)]).await;
    assert_eq!(prices(&s.next().await.unwrap()), [("MSFT".into(), 8.0)]);
    let err = e.update_tickers(id, vec![t("A"), t("B"), t("C")], vec![]).await;
    assert_eq!(err, Err(ServiceError::TooManyTickers { max: 3 }));
    assert_eq!(m.broker_subscriptions.get(), 1, "a rejected change subscribes nothing");
}

#[tokio::test(start_paused = true)]
async fn max_rate_spaces_messages() {
    let (e, _m) = engine();
    let req = StartRequest { tickers: vec![t("AAPL")], max_rate_hz: Some(4.0), owner: None };
    let id = e.start_monitoring(req).await.unwrap().id;
    let mut s = e.stream_price_updates(id).await.unwrap();
    s.next().await.unwrap();
    let t0 = Instant::now();
    publish(&e, &[("AAPL", 1.0)]).await;
    s.next().await.unwrap();
    let t1 = Instant::now();
    publish(&e, &[("AAPL", 2.0)]).await;
    publish(&e, &[("AAPL", 3.0)]).await;
    assert_eq!(prices(&s.next().await.unwrap()), [("AAPL".into(), 3.0)]);
    assert!(t1.duration_since(t0) >= Duration::from_millis(250), "snapshot counts as a message");
    assert!(Instant::now().duration_since(t1) >= Duration::from_millis(250));
}

#[tokio::test]
async fn validates_requests_and_limits() {
    let (e, m) =
        engine_with(EngineConfig { max_sessions: 1, max_tickers_per_session: 2, ..Default::default() });
    let req = |tickers: &[&str], hz| StartRequest {
        tickers: tickers.iter().map(|s| t(s)).collect(),
        max_rate_hz: hz,
        owner: None,
    };
    assert_eq!(e.start_monitoring(req(&[], None)).await, Err(ServiceError::NoTickers));
    assert_eq!(
        e.start_monitoring(req(&["A", "B", "C"], None)).await,
        Err(ServiceError::TooManyTickers { max: 2 })
    );
    for hz in [0.0, -1.0, f64::NAN, 1e9] {
        assert!(matches!(
            e.start_monitoring(req(&["A"], Some(hz))).await,
            Err(ServiceError::InvalidRate { .. })
        ));
    }
    e.start_monitoring(req(&["A"], Some(2.0))).await.unwrap();
    assert_eq!(e.start_monitoring(req(&["A"], None)).await, Err(ServiceError::SessionLimit { max: 1 }));
    assert_eq!(gauges(&m), [1, 0, 0, 1]);
}

/// Bug #1 of the reference system: registration racing deactivation and the sweeper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_attach_end_and_sweep_leave_nothing_behind() {
    let (e, m) = engine_with(EngineConfig { session_ttl: Duration::from_millis(20), ..Default::default() });
    let tickers = ["A", "B", "C", "D", "E"];
    let mut tasks = Vec::new();
    for i in 0..1000usize {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let pick = [tickers[i % 5], tickers[(i / 5) % 5]];
            // With a 20 ms TTL, a create preempted for longer (a loaded machine) can find its
            // session already swept by another task's `sweep()`, and says so.
            let req =
                StartRequest { tickers: pick.iter().map(|s| t(s)).collect(), max_rate_hz: None, owner: None };
            let id = match e.start_monitoring(req).await {
                Ok(info) => info.id,
                Err(ServiceError::SessionNotFound) => return,
                Err(other) => panic!("create: {other:?}"),
            };
            match i % 4 {
                0 => {
                    let _ = e.end_session(id).await;
                }
                1 => {
                    if let Ok(mut s) = e.stream_price_updates(id).await {
                        let ender = e.clone();
                        let end = tokio::spawn(async move { ender.end_session(id).await });
                        while let Some(ev) = s.next().await {
                            if matches!(ev, SessionEvent::Closed(_)) {
                                break;
                            }
                        }
                        let _ = end.await;
                    }
                }
                2 => {
                    let a = e.stream_price_updates(id).await;
                    let b = e.stream_price_updates(id).await;
                    drop((a, b));
                    e.sweep();
                }
                _ => {
                    let _ = e.update_tickers(id, vec![t("Z")], vec![t(pick[0])]).await;
                }
            }
            publish(&e, &[("A", 1.0), ("Z", 2.0)]).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    e.sweep();
    assert_eq!(e.session_count(), 0);
    assert_eq!(gauges(&m), [0, 0, 0, 0]);
    assert_eq!(e.watched_tickers(), 0);
}

/// Review finding: the last `unwatch` of a ticker racing the first `watch` of a new session must
/// not leave the ticker watched but unsubscribed at the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_watch_racing_last_unwatch_keeps_the_broker_subscription() {
    let (e, m) = engine();
    for _ in 0..3000 {
        let a = start(&e, &["X"]).await;
        let ender = e.clone();
        let end = tokio::spawn(async move { ender.end_session(a).await });
        let creator = e.clone();
        let create = tokio::spawn(async move { start(&creator, &["X"]).await });
        end.await.unwrap().unwrap();
        let b = create.await.unwrap();
        assert_eq!(m.broker_subscriptions.get(), 1, "X is watched by b");
        e.end_session(b).await.unwrap();
        assert_eq!(m.broker_subscriptions.get(), 0);
    }
}

/// Review finding: two publishers racing on one ticker must leave the watcher with the price the
/// cache holds (delivery in cache order), never an older one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_deliver_in_cache_order() {
    let (e, _m) = engine();
    let id = start(&e, &["X"]).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    s.next().await.unwrap();
    for round in 0..20_000u32 {
        let base = f64::from(round) * 10.0 + 1.0;
        let (p, q) = (e.clone(), e.clone());
        let one = tokio::spawn(async move { publish(&p, &[("X", base)]).await });
        let two = tokio::spawn(async move { publish(&q, &[("X", base + 1.0)]).await });
        one.await.unwrap();
        two.await.unwrap();
        let cached = e.inner.broker.last_values(&[t("X")]).await[0].price();
        let delivered = prices(&s.next().await.unwrap());
        assert_eq!(delivered, [("X".into(), cached)], "round {round}");
    }
}

/// Review finding: a subscribe from the old socket racing a reconnect either appears in the new
/// stream's snapshot or arrives as its own snapshot — never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticker_added_during_reattach_is_snapshotted() {
    let (e, _m) = engine();
    publish(&e, &[("A", 1.0), ("G", 2.0)]).await;
    for _ in 0..500 {
        let id = start(&e, &["A"]).await;
        let _old = e.stream_price_updates(id).await.unwrap();
        let changer = e.clone();
        let change = tokio::spawn(async move { changer.update_tickers(id, vec![t("G")], vec![]).await });
        let mut new = e.stream_price_updates(id).await.unwrap();
        change.await.unwrap().unwrap();
        let mut seen = Vec::new();
        while !seen.iter().any(|(s, _)| s == "G") {
            let ev = tokio::time::timeout(Duration::from_secs(5), new.next())
                .await
                .expect("G's snapshot")
                .unwrap();
            assert!(matches!(ev, SessionEvent::Snapshot(_)), "{ev:?}");
            seen.extend(prices(&ev));
        }
        e.end_session(id).await.unwrap();
    }
}

/// Review finding: a queued snapshot must not carry a ticker that was unsubscribed before the
/// stream drained it.
#[tokio::test]
async fn unsubscribed_ticker_leaves_the_queued_snapshot() {
    let (e, _m) = engine();
    publish(&e, &[("G", 2.0), ("H", 3.0)]).await;
    let id = start(&e, &["A"]).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    s.next().await.unwrap();
    e.update_tickers(id, vec![t("G"), t("H")], vec![]).await.unwrap();
    e.update_tickers(id, vec![], vec![t("G")]).await.unwrap();
    e.update_tickers(id, vec![t("H")], vec![]).await.unwrap();
    assert_eq!(prices(&s.next().await.unwrap()), [("H".into(), 3.0)]);
}

/// Review finding: a tiny rate used to panic on attach and leave the session streaming forever.
#[tokio::test]
async fn rate_bounds_are_enforced_and_the_lowest_rate_streams() {
    let (e, m) = engine();
    for hz in [1e-300, 1e-19, 0.009] {
        let req = StartRequest { tickers: vec![t("A")], max_rate_hz: Some(hz), owner: None };
        assert!(matches!(e.start_monitoring(req).await, Err(ServiceError::InvalidRate { .. })), "{hz}");
    }
    let req = StartRequest { tickers: vec![t("A")], max_rate_hz: Some(MIN_RATE_HZ), owner: None };
    let id = e.start_monitoring(req).await.unwrap().id;
    let mut s = e.stream_price_updates(id).await.unwrap();
    assert!(matches!(s.next().await, Some(SessionEvent::Snapshot(_))));
    drop(s);
    e.end_session(id).await.unwrap();
    assert_eq!(gauges(&m), [0, 0, 0, 0]);
}
