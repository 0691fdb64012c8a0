//! The cluster layer against an in-memory [`SessionStore`] shared by several engines: a test
//! double of our own trait, with expiry on tokio's paused clock, control messages delivered to
//! every other engine, and switches for an outage and an empty restart. The Redis store itself
//! is covered end to end by `crates/tickstream/tests/cluster.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tickstream_api::{
    CloseReason, MonitoringService, ServiceError, SessionEvent, SessionId, SessionState, StartRequest, Ticker,
};
use tickstream_broker::{BrokerError, ClusterListener, InMemoryBroker, SessionRecord, SessionStore};
use tickstream_telemetry::Metrics;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Engine, EngineConfig, SharedEngine};

const TTL: Duration = Duration::from_secs(9);

/// What Redis would hold, shared by every node's [`Node`] handle.
#[derive(Default)]
struct Data {
    records: Mutex<HashMap<SessionId, (SessionRecord, Instant)>>,
    listeners: Mutex<Vec<(usize, Arc<dyn ClusterListener>)>>,
    /// Every call fails while set.
    down: AtomicBool,
    /// The next `get` deletes the record it returns (a delete landing right after the read).
    vanish_after_get: AtomicBool,
}

impl Data {
    fn live(&self, id: SessionId) -> Option<(SessionRecord, Instant)> {
        let mut records = self.records.lock();
        match records.get(&id) {
            Some((_, expires)) if *expires <= Instant::now() => {
                records.remove(&id);
                None
            }
            other => other.cloned(),
        }
    }

    fn check(&self) -> Result<(), BrokerError> {
        if self.down.load(Ordering::SeqCst) { Err(BrokerError::Unavailable("down".into())) } else { Ok(()) }
    }

    /// Tells every node but `from`, as the control channel does.
    fn broadcast(&self, from: usize, tell: impl Fn(&dyn ClusterListener)) {
        let listeners: Vec<_> = self.listeners.lock().clone();
        for (node, listener) in listeners {
            if node != from {
                tell(&*listener);
            }
        }
    }

    /// The store restarted empty and every node's subscriber reconnected.
    fn restart_empty(&self) {
        self.records.lock().clear();
        let listeners: Vec<_> = self.listeners.lock().clone();
        for (_, listener) in listeners {
            listener.reconnected();
        }
    }
}

/// One node's connection to the shared [`Data`].
struct Node {
    data: Arc<Data>,
    node: usize,
}

impl SessionStore for Node {
    fn listen(&self, listener: Arc<dyn ClusterListener>) {
        self.data.listeners.lock().push((self.node, listener));
    }

    fn put(&self, records: Vec<(SessionRecord, Duration)>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            self.data.check()?;
            let now = Instant::now();
            let mut map = self.data.records.lock();
            for (record, ttl) in records {
                map.insert(record.id, (record, now + ttl));
            }
            Ok(())
        })
    }

    fn replace(
        &self,
        record: SessionRecord,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        Box::pin(async move {
            self.data.check()?;
            let Some((_, expires)) = self.data.live(record.id) else { return Ok(false) };
            let expires = ttl.map_or(expires, |ttl| Instant::now() + ttl);
            self.data.records.lock().insert(record.id, (record, expires));
            Ok(true)
        })
    }

    fn get(&self, id: SessionId) -> BoxFuture<'_, Result<Option<SessionRecord>, BrokerError>> {
        Box::pin(async move {
            self.data.check()?;
            let record = self.data.live(id).map(|(r, _)| r);
            if self.data.vanish_after_get.swap(false, Ordering::SeqCst) {
                self.data.records.lock().remove(&id);
            }
            Ok(record)
        })
    }

    fn touch(&self, ids: Vec<SessionId>, ttl: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            self.data.check()?;
            for id in ids {
                if let Some((record, _)) = self.data.live(id) {
                    self.data.records.lock().insert(id, (record, Instant::now() + ttl));
                }
            }
            Ok(())
        })
    }

    fn remove(&self, id: SessionId) -> BoxFuture<'_, Result<bool, BrokerError>> {
        Box::pin(async move {
            self.data.check()?;
            let existed = self.data.live(id).is_some();
            self.data.records.lock().remove(&id);
            self.data.broadcast(self.node, |l| l.session_ended(id));
            Ok(existed)
        })
    }

    fn announce_attached(&self, id: SessionId) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            self.data.check()?;
            self.data.broadcast(self.node, |l| l.session_attached(id));
            Ok(())
        })
    }
}

fn t(s: &str) -> Ticker {
    Ticker::parse(s).unwrap()
}

/// An engine on its own broker, sharing sessions through `data` as node `node`.
fn shared(data: &Arc<Data>, node: usize) -> (SharedEngine, Arc<Metrics>) {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(1_000, metrics.clone()));
    let config = EngineConfig { session_ttl: TTL, ..EngineConfig::default() };
    let engine = Engine::new(config, broker, metrics.clone());
    (SharedEngine::new(engine, Arc::new(Node { data: Arc::clone(data), node })), metrics)
}

async fn start(e: &SharedEngine, tickers: &[&str]) -> Result<SessionId, ServiceError> {
    let req =
        StartRequest { tickers: tickers.iter().map(|s| t(s)).collect(), max_rate_hz: None, owner: None };
    e.start_monitoring(req).await.map(|info| info.id)
}

fn stored(data: &Data, id: SessionId) -> Option<(SessionState, Vec<Ticker>, Duration)> {
    let (record, expires) = data.live(id)?;
    Some((record.state, record.tickers, expires - Instant::now()))
}

fn sessions_gauge(m: &Metrics) -> i64 {
    ["pending", "streaming", "detached"].iter().map(|s| m.sessions_in(s).get()).sum()
}

#[tokio::test(start_paused = true)]
async fn another_engine_describes_adopts_and_takes_over_a_session() {
    let data = Arc::new(Data::default());
    let (a, _) = shared(&data, 0);
    let (b, _) = shared(&data, 1);
    let id = start(&a, &["AAPL"]).await.unwrap();
    assert_eq!(stored(&data, id), Some((SessionState::Pending, vec![t("AAPL")], TTL)), "written first");

    let info = b.session(id).await.unwrap();
    assert_eq!((info.state, info.tickers, info.ttl), (SessionState::Pending, vec![t("AAPL")], TTL));
    assert_eq!(b.engine().session_count(), 0, "a lookup does not adopt");

    let mut on_a = a.stream_price_updates(id).await.unwrap();
    let mut on_b = b.stream_price_updates(id).await.unwrap();
    assert_eq!(b.engine().session_count(), 1, "adopted on attach");
    assert_eq!(on_a.next().await, Some(SessionEvent::Closed(CloseReason::Replaced)));
    assert_eq!(a.engine().session_count(), 0, "the older copy is dropped");
    assert!(matches!(on_b.next().await, Some(SessionEvent::Snapshot(_))));
    assert_eq!(stored(&data, id).map(|s| s.0), Some(SessionState::Streaming));

    let unknown = SessionId::random();
    assert_eq!(b.session(unknown).await, Err(ServiceError::SessionNotFound));
    assert_eq!(b.stream_price_updates(unknown).await.err(), Some(ServiceError::SessionNotFound));
}

#[tokio::test(start_paused = true)]
async fn a_session_whose_record_cannot_be_written_is_not_created() {
    let data = Arc::new(Data::default());
    let (a, m) = shared(&data, 0);
    data.down.store(true, Ordering::SeqCst);
    assert!(matches!(start(&a, &["AAPL"]).await, Err(ServiceError::Unavailable(_))));
    assert_eq!((a.engine().session_count(), a.engine().watched_tickers(), sessions_gauge(&m)), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn delete_removes_the_record_and_ends_every_copy() {
    let data = Arc::new(Data::default());
    let (a, _) = shared(&data, 0);
    let (b, mb) = shared(&data, 1);
    let id = start(&a, &["AAPL"]).await.unwrap();
    let mut on_b = b.stream_price_updates(id).await.unwrap();
    assert!(matches!(on_b.next().await, Some(SessionEvent::Snapshot(_))));

    a.end_session(id).await.unwrap();
    assert_eq!(on_b.next().await, Some(SessionEvent::Closed(CloseReason::SessionEnded)));
    assert_eq!(stored(&data, id), None);
    assert_eq!((b.engine().session_count(), b.engine().watched_tickers(), sessions_gauge(&mb)), (0, 0, 0));
    assert_eq!(a.end_session(id).await, Err(ServiceError::SessionNotFound));

    // The local copy ends, but a record left behind could resurrect it: the client must retry.
    let id = start(&a, &["AAPL"]).await.unwrap();
    data.down.store(true, Ordering::SeqCst);
    assert!(matches!(a.end_session(id).await, Err(ServiceError::Unavailable(_))));
    assert_eq!(a.engine().session_count(), 0);
    data.down.store(false, Ordering::SeqCst);
    assert_eq!(a.end_session(id).await, Ok(()), "the record was still there");
}

#[tokio::test(start_paused = true)]
async fn an_adopted_session_whose_record_vanished_is_ended_not_resurrected() {
    let data = Arc::new(Data::default());
    let (a, _) = shared(&data, 0);
    let (b, mb) = shared(&data, 1);
    let id = start(&a, &["AAPL"]).await.unwrap();
    data.vanish_after_get.store(true, Ordering::SeqCst);
    let mut on_b = b.stream_price_updates(id).await.unwrap();
    assert_eq!(on_b.next().await, Some(SessionEvent::Closed(CloseReason::SessionEnded)));
    assert_eq!(stored(&data, id), None, "not written back");
    assert_eq!((b.engine().session_count(), sessions_gauge(&mb)), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn records_follow_the_session_streaming_then_detached_with_the_time_left() {
    let data = Arc::new(Data::default());
    let (a, _) = shared(&data, 0);
    let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
    a.spawn_sweeper(&tracker, token.clone());
    let id = start(&a, &["AAPL"]).await.unwrap();
    let stream = a.stream_price_updates(id).await.unwrap();

    // Streaming for three TTLs: the keeper refreshes the record every TTL/3.
    tokio::time::sleep(TTL * 3).await;
    let (state, _, left) = stored(&data, id).unwrap();
    assert_eq!(state, SessionState::Streaming);
    assert!(left > TTL / 2, "refreshed, {left:?} left");

    drop(stream);
    let detached_at = Instant::now();
    tokio::time::sleep(TTL / 3 + Duration::from_millis(10)).await;
    let (state, _, left) = stored(&data, id).unwrap();
    assert_eq!(state, SessionState::Detached);
    let deadline = detached_at + TTL;
    assert_eq!(Instant::now() + left, deadline, "expires with the session, not a TTL later");

    tokio::time::sleep_until(deadline + Duration::from_secs(1)).await;
    assert_eq!((stored(&data, id), a.engine().session_count()), (None, 0));
    token.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(start_paused = true)]
async fn every_record_is_rewritten_after_the_store_came_back_empty() {
    let data = Arc::new(Data::default());
    let (a, _) = shared(&data, 0);
    let (tracker, token) = (TaskTracker::new(), CancellationToken::new());
    a.spawn_sweeper(&tracker, token.clone());
    let pending = start(&a, &["AAPL"]).await.unwrap();
    let streaming = start(&a, &["MSFT"]).await.unwrap();
    let _stream = a.stream_price_updates(streaming).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    data.restart_empty();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (state, _, left) = stored(&data, pending).unwrap();
    assert_eq!(state, SessionState::Pending);
    assert_eq!(left, TTL - Duration::from_secs(1) - Duration::from_millis(10), "with the time it has left");
    let full = TTL - Duration::from_millis(10);
    assert_eq!(stored(&data, streaming).map(|s| (s.0, s.2)), Some((SessionState::Streaming, full)));

    // A ticker change finds its record gone: the keeper re-writes it, with the new tickers.
    data.records.lock().clear();
    a.update_tickers(streaming, vec![t("GOOG")], vec![]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(stored(&data, streaming).map(|s| s.1), Some(vec![t("MSFT"), t("GOOG")]));

    // A session held here all along re-creates its lost record when it is attached again.
    data.records.lock().clear();
    let _stream = a.stream_price_updates(pending).await.unwrap();
    assert_eq!(stored(&data, pending).map(|s| s.0), Some(SessionState::Streaming));
    token.cancel();
    tracker.close();
    tracker.wait().await;
}

#[tokio::test(start_paused = true)]
async fn a_draining_engine_refuses_new_and_adopted_sessions() {
    let data = Arc::new(Data::default());
    let (a, _) = shared(&data, 0);
    let (b, mb) = shared(&data, 1);
    let id = start(&a, &["AAPL"]).await.unwrap();
    assert!(b.ready());
    b.engine().shutdown();
    assert!(!b.ready());
    assert!(matches!(start(&b, &["AAPL"]).await, Err(ServiceError::Unavailable(_))));
    assert!(matches!(b.stream_price_updates(id).await, Err(ServiceError::Unavailable(_))));
    assert_eq!((b.engine().session_count(), sessions_gauge(&mb)), (0, 0));
    assert_eq!(stored(&data, id).map(|s| s.0), Some(SessionState::Pending), "left for another engine");
}
