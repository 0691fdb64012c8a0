//! Direct writes (`MonitoringService::write_direct`): a price goes to the socket's writer only
//! while the stream is parked with nothing pending; in every other case it conflates into the
//! stream as before, so a direct price never overtakes an older one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use parking_lot::Mutex;
use tickstream_api::{
    DirectWrite, MonitoringService, SessionEvent, SharedTick, StartRequest, Tick, Ticker, TradingStatus,
};
use tickstream_broker::InMemoryBroker;
use tickstream_telemetry::Metrics;

use super::*;

/// A socket writer that records what it was given, and can refuse (a full socket).
#[derive(Debug, Default)]
struct Writer {
    got: Mutex<Vec<f64>>,
    refuse: AtomicBool,
}

impl DirectWrite for Writer {
    fn write_prices(&self, ticks: &[SharedTick]) -> bool {
        if self.refuse.load(Ordering::Relaxed) {
            return false;
        }
        self.got.lock().extend(ticks.iter().map(|t| t.price()));
        true
    }
}

fn engine() -> Engine {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(1000, metrics.clone()));
    Engine::new(EngineConfig::default(), broker, metrics)
}

async fn session(e: &Engine, max_rate_hz: Option<f64>) -> tickstream_api::SessionId {
    let tickers = vec![Ticker::parse("AAPL").unwrap(), Ticker::parse("MSFT").unwrap()];
    e.start_monitoring(StartRequest { tickers, max_rate_hz, owner: None }).await.unwrap().id
}

/// A session on AAPL and MSFT, its stream attached (snapshot not taken) with a writer handed to it.
async fn streaming(max_rate_hz: Option<f64>) -> (Engine, Updates, Arc<Writer>) {
    let e = engine();
    let id = session(&e, max_rate_hz).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    let writer = Arc::new(Writer::default());
    e.write_direct(&mut s, Arc::clone(&writer) as _);
    (e, s, writer)
}

async fn publish(e: &Engine, ticker: &str, price: f64, ts: u64) {
    e.publish(vec![Tick::new(Ticker::parse(ticker).unwrap(), price, ts).unwrap()]).await.unwrap();
}

/// The stream's next event if it has one now, polled as its consumer would (parking it if not).
fn poll_now(s: &mut Updates) -> Option<SessionEvent> {
    futures::FutureExt::now_or_never(s.next()).flatten()
}

/// The prices of a prices event, in ascending order (a batch is a set).
fn prices(ev: Option<SessionEvent>) -> Vec<f64> {
    let mut prices: Vec<f64> = match ev {
        Some(SessionEvent::Prices(ticks)) => ticks.iter().map(|t| t.price()).collect(),
        other => panic!("expected prices, got {other:?}"),
    };
    prices.sort_by(f64::total_cmp);
    prices
}

#[tokio::test]
async fn a_parked_stream_hands_prices_to_its_writer_and_a_busy_one_conflates_them() {
    let (e, mut s, writer) = streaming(None).await;

    // Not parked yet: the snapshot is still to be taken, so a price waits behind it.
    publish(&e, "AAPL", 1.0, 1).await;
    assert!(matches!(poll_now(&mut s), Some(SessionEvent::Snapshot(_))));
    assert!(writer.got.lock().is_empty(), "nothing written before the snapshot");
    assert_eq!(prices(poll_now(&mut s)), [1.0]);

    // Parked (its last poll found nothing): prices go to the writer, and nothing is left for
    // the stream, which is not woken for them.
    assert!(poll_now(&mut s).is_none());
    publish(&e, "AAPL", 2.0, 2).await;
    publish(&e, "MSFT", 3.0, 2).await;
    assert_eq!(*writer.got.lock(), [2.0, 3.0]);
    assert!(poll_now(&mut s).is_none(), "the stream has nothing of its own");

    // The writer refuses (its socket is busy or full): the price conflates in the stream, and
    // later ones join it there rather than overtaking it through the writer.
    writer.refuse.store(true, Ordering::Relaxed);
    publish(&e, "AAPL", 4.0, 3).await;
    writer.refuse.store(false, Ordering::Relaxed);
    publish(&e, "AAPL", 5.0, 4).await;
    publish(&e, "MSFT", 6.0, 4).await;
    assert_eq!(prices(poll_now(&mut s)), [5.0, 6.0], "conflated: the latest per ticker");
    assert_eq!(writer.got.lock().len(), 2, "none of them went to the writer");

    // Taken a batch (not parked again yet): the consumer is writing it, so a price waits.
    publish(&e, "AAPL", 7.0, 5).await;
    assert_eq!(*writer.got.lock(), [2.0, 3.0]);
    assert_eq!(prices(poll_now(&mut s)), [7.0]);
}

#[tokio::test]
async fn a_status_change_waits_in_the_stream_and_holds_prices_behind_it() {
    let (e, mut s, writer) = streaming(None).await;
    publish(&e, "AAPL", 1.0, 1).await;
    // The snapshot, then what came with the first price (its `live` status, the price).
    while poll_now(&mut s).is_some() {}
    e.publish_status(vec![(Ticker::parse("AAPL").unwrap(), TradingStatus::Halted)]).await.unwrap();
    publish(&e, "MSFT", 2.0, 2).await;
    assert!(writer.got.lock().is_empty(), "a price does not overtake the status");
    assert!(matches!(poll_now(&mut s), Some(SessionEvent::Status(_))));
    // AAPL's record again, with its status, and MSFT's price.
    assert_eq!(prices(poll_now(&mut s)), [1.0, 2.0]);
}

#[tokio::test]
async fn a_paced_stream_never_takes_a_writer() {
    let (e, mut s, writer) = streaming(Some(1.0)).await;
    assert_eq!(Arc::strong_count(&writer), 1, "a rate-capped stream keeps every price in its map");
    assert!(matches!(poll_now(&mut s), Some(SessionEvent::Snapshot(_))));
    assert!(poll_now(&mut s).is_none());
    publish(&e, "AAPL", 1.0, 1).await;
    assert!(writer.got.lock().is_empty());
}

#[tokio::test]
async fn the_writer_goes_with_its_stream_when_it_ends_or_is_replaced() {
    let e = engine();
    let id = session(&e, None).await;
    let mut s = e.stream_price_updates(id).await.unwrap();
    let old = Arc::new(Writer::default());
    e.write_direct(&mut s, Arc::clone(&old) as _);
    assert!(matches!(poll_now(&mut s), Some(SessionEvent::Snapshot(_))));
    assert!(poll_now(&mut s).is_none());
    assert_eq!(Arc::strong_count(&old), 2, "the session holds it");

    // A new socket attaches: the old one's writer is released at once, and the new stream
    // writes nothing directly before it has taken its own snapshot.
    let mut replacement = e.stream_price_updates(id).await.unwrap();
    assert_eq!(Arc::strong_count(&old), 1);
    let new = Arc::new(Writer::default());
    e.write_direct(&mut replacement, Arc::clone(&new) as _);
    publish(&e, "AAPL", 1.0, 1).await;
    assert!(old.got.lock().is_empty() && new.got.lock().is_empty());
    assert!(matches!(poll_now(&mut s), Some(SessionEvent::Closed(CloseReason::Replaced))));
    drop(s);
    assert!(matches!(poll_now(&mut replacement), Some(SessionEvent::Snapshot(_))));

    // The stream drops (its socket is gone): so does the writer, whatever state the session is in.
    e.end_session(id).await.unwrap();
    assert_eq!(Arc::strong_count(&new), 2);
    drop(replacement);
    assert_eq!(Arc::strong_count(&new), 1);
}
