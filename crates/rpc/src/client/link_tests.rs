//! The gateway's side of the link against a real engine served on port 0: sessions sharing a
//! link, per-session flow control, and the link's lifetime.

use std::time::Duration;

use futures::StreamExt;
use tickstream_api::{MonitoringService, StartRequest, Tick, Ticker};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::client::testing::engine_server;
use crate::client::{RemoteConfig, RemoteEngine, RemoteUpdates};

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.unwrap_or_else(|_| panic!("{what} in time"))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    within(what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A gateway handle with one link per engine, on a fresh engine.
async fn one_link(stop: &CancellationToken) -> (RemoteEngine, tickstream_engine::Engine, Arc<Metrics>) {
    let (addr, engine) = engine_server(stop.clone()).await;
    let metrics = Metrics::new();
    let config =
        RemoteConfig { connections_per_engine: 1, ..RemoteConfig::new(vec![format!("http://{addr}")]) };
    (RemoteEngine::new(config, Arc::clone(&metrics)).expect("valid settings"), engine, metrics)
}

async fn session(remote: &RemoteEngine, ticker: Ticker) -> RemoteUpdates {
    let req = StartRequest { tickers: vec![ticker], max_rate_hz: None, owner: None };
    let id = remote.start_monitoring(req).await.expect("created").id;
    let mut updates = remote.stream_price_updates(id).await.expect("attached");
    assert!(matches!(updates.next().await, Some(SessionEvent::Snapshot(_))));
    updates
}

fn links(metrics: &Metrics) -> i64 {
    metrics.tasks.with_label_values(&["engine_link"]).get()
}

#[tokio::test]
async fn sessions_share_a_link_that_closes_with_its_last_session() {
    let stop = CancellationToken::new();
    let (remote, engine, metrics) = one_link(&stop).await;
    let aaa = Ticker::parse("AAA").expect("ticker");
    let sessions: Vec<RemoteUpdates> =
        futures::future::join_all((0..20).map(|_| session(&remote, aaa))).await;
    assert_eq!(links(&metrics), 1, "twenty sessions, one link");
    assert!(remote.inner.engines[0].links[0].is_open());
    assert_eq!(engine.session_count(), 20);
    drop(sessions);
    eventually("the idle link closed", || links(&metrics) == 0).await;
    assert!(!remote.inner.engines[0].links[0].is_open());
    // A later session opens a fresh link.
    let again = session(&remote, aaa).await;
    assert_eq!(links(&metrics), 1);
    drop(again);
    eventually("closed again", || links(&metrics) == 0).await;
    stop.cancel();
}

/// A session nobody reads does not slow the one beside it on the same link, and its updates
/// conflate on the engine: when it reads again it gets one batch with the latest price.
#[tokio::test]
async fn a_stalled_session_never_slows_its_neighbour_on_the_link() {
    let stop = CancellationToken::new();
    let (remote, engine, metrics) = one_link(&stop).await;
    let aaa = Ticker::parse("AAA").expect("ticker");
    let mut stalled = session(&remote, aaa).await;
    let mut fast = session(&remote, aaa).await;
    assert_eq!(links(&metrics), 1);
    for p in 1..=200 {
        remote.publish(vec![Tick::new(aaa, f64::from(p), 1).expect("tick")]).await.expect("published");
        // The fast session reads everything up to this price before the next is published.
        within("the fast session keeps up", async {
            loop {
                match fast.next().await {
                    Some(SessionEvent::Prices(t)) if t.iter().any(|t| t.price() == f64::from(p)) => break,
                    Some(SessionEvent::Prices(_)) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
        .await;
    }
    // The stalled one asked for nothing after its snapshot, so it was granted nothing: its 200
    // updates conflated on the engine, and its next read is one batch with the latest price.
    assert!(metrics.engine_failovers.get() == 0);
    let latest = within("the stalled session's batch", stalled.next()).await;
    let Some(SessionEvent::Prices(latest)) = latest else { panic!("prices") };
    assert_eq!(latest.len(), 1, "conflated on the engine");
    assert_eq!(latest[0].price(), 200.0);
    drop(engine);
    stop.cancel();
}

/// The sessions of a link that watch a ticker get each of its ticks as one shared tick: the
/// engine sent it in full once and repeated it by slot for the others (a tick decoded per
/// session would be a tick of its own per session).
#[tokio::test]
async fn a_tick_for_many_sessions_of_a_link_is_decoded_once() {
    let stop = CancellationToken::new();
    let (remote, engine, _metrics) = one_link(&stop).await;
    let aaa = Ticker::parse("AAA").expect("ticker");
    let mut sessions: Vec<RemoteUpdates> =
        futures::future::join_all((0..5).map(|_| session(&remote, aaa))).await;
    for p in 1..=3 {
        remote.publish(vec![Tick::new(aaa, f64::from(p), 1).expect("tick")]).await.expect("published");
        let mut got = Vec::new();
        for updates in &mut sessions {
            match within("the price", updates.next()).await {
                Some(SessionEvent::Prices(t)) if t.len() == 1 && t[0].price() == f64::from(p) => {
                    got.push(t[0].clone())
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(got.iter().all(|t| Arc::ptr_eq(t, &got[0])), "one tick, shared by all five");
    }
    drop(engine);
    stop.cancel();
}

#[tokio::test]
async fn a_link_that_cannot_be_opened_fails_its_attach_as_a_transport_failure() {
    let dead = crate::client::testing::dead_uri().await;
    let metrics = Metrics::new();
    let remote = RemoteEngine::new(RemoteConfig::new(vec![dead]), Arc::clone(&metrics)).expect("valid");
    let got = remote.stream_price_updates(SessionId::random()).await;
    assert!(matches!(got, Err(tickstream_api::ServiceError::Unavailable(_))), "{got:?}");
    eventually("the failed link's task ended", || links(&metrics) == 0).await;
}
