//! The SSE loop without HTTP: a scripted update stream, the body's channel read (or not) by the
//! test, and tokio's paused clock, so heartbeats and deadlines are exact and instant.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::channel::mpsc as fmpsc;
use serde_json::Value;
use tickstream_api::{CloseReason, SessionEvent, SharedTick, Tick, Ticker};
use tickstream_telemetry::Metrics;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::stream::{HEARTBEAT, SseStream};
use super::*;
use crate::GatewayConfig;

struct Harness {
    events: fmpsc::UnboundedSender<SessionEvent>,
    body: mpsc::Receiver<Bytes>,
    shutdown: CancellationToken,
    task: JoinHandle<(Ending, bool)>,
}

fn tick(s: &str, p: f64) -> SharedTick {
    Arc::new(Tick::new(Ticker::parse(s).unwrap(), p, 5).unwrap())
}

fn start(resumed_from: u64, expires_at: Option<SystemTime>) -> Harness {
    let config = GatewayConfig {
        heartbeat_interval: Duration::from_secs(30),
        write_timeout: Duration::from_secs(10),
        ..GatewayConfig::default()
    };
    let shutdown = CancellationToken::new();
    let stream = SseStream {
        config: Arc::new(config),
        metrics: Metrics::new(),
        shutdown: shutdown.clone(),
        expires_at,
        resumed_from,
    };
    let (events, mut updates) = fmpsc::unbounded();
    let (tx, body) = mpsc::channel(1);
    let task = tokio::spawn(async move { stream.run(&tx, &mut updates).await });
    Harness { events, body, shutdown, task }
}

impl Harness {
    fn push(&self, event: SessionEvent) {
        self.events.unbounded_send(event).unwrap();
    }

    async fn chunk(&mut self) -> String {
        String::from_utf8(self.body.recv().await.expect("an event").to_vec()).unwrap()
    }

    /// The next data event: its id and its JSON.
    async fn event(&mut self) -> (Option<u64>, Value) {
        loop {
            let chunk = self.chunk().await;
            if chunk.as_bytes() == HEARTBEAT {
                continue;
            }
            let mut id = None;
            let mut data = None;
            assert!(chunk.ends_with("\n\n"), "{chunk:?}");
            for line in chunk.trim_end().lines() {
                match line.split_once(": ") {
                    Some(("id", v)) => id = Some(v.parse().unwrap()),
                    Some(("data", v)) => data = Some(serde_json::from_str(v).unwrap()),
                    _ => panic!("unexpected line {line:?}"),
                }
            }
            return (id, data.expect("a data line"));
        }
    }

    async fn ended(self) -> (Ending, bool) {
        self.task.await.unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn streams_events_with_seq_ids_and_heartbeats() {
    let mut h = start(0, None);
    h.push(SessionEvent::Snapshot(vec![tick("AAPL", 1.5)]));
    let (id, snapshot) = h.event().await;
    assert_eq!(id, Some(1));
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["prices"][0]["price"], 1.5);
    h.push(SessionEvent::Prices(vec![tick("AAPL", 2.0)]));
    let (id, prices) = h.event().await;
    assert_eq!((id, prices["seq"].as_u64()), (Some(2), Some(2)));
    // Nothing to send for a while: a comment every heartbeat interval, exactly.
    let before = tokio::time::Instant::now();
    assert_eq!(h.chunk().await.as_bytes(), HEARTBEAT);
    assert_eq!(before.elapsed(), Duration::from_secs(30));
    assert_eq!(h.chunk().await.as_bytes(), HEARTBEAT);
    assert_eq!(before.elapsed(), Duration::from_secs(60));
    h.push(SessionEvent::Closed(CloseReason::SessionEnded));
    let (id, close) = h.event().await;
    assert_eq!(id, None, "the close event keeps the last id");
    assert_eq!(close, serde_json::json!({"type":"close","code":4404,"reason":"session ended"}));
    assert!(h.body.recv().await.is_none(), "the response ends after the close event");
    assert_eq!(h.ended().await, (Ending::Server(CloseCode::SessionEnded), true));
}

#[tokio::test(start_paused = true)]
async fn status_messages_are_events_numbered_with_the_data() {
    use tickstream_api::{StatusUpdate, TickerStatus};
    let mut h = start(0, None);
    h.push(SessionEvent::Snapshot(vec![tick("AAPL", 1.0)]));
    h.event().await;
    let halted = Arc::new(StatusUpdate::new(Ticker::parse("AAPL").unwrap(), TickerStatus::Halted, 5));
    h.push(SessionEvent::Status(vec![halted]));
    let (id, status) = h.event().await;
    assert_eq!(id, Some(2));
    assert_eq!(
        status,
        serde_json::json!({"type":"status","seq":2,"statuses":[{"ticker":"AAPL","status":"halted","ts":5}]})
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_stream_continues_the_ids() {
    let mut h = start(41, None);
    h.push(SessionEvent::Snapshot(vec![]));
    let (id, snapshot) = h.event().await;
    assert_eq!((id, snapshot["seq"].as_u64()), (Some(42), Some(42)));
    h.push(SessionEvent::Closed(CloseReason::Replaced));
    assert_eq!(h.event().await.1["code"], 4409);
}

#[tokio::test(start_paused = true)]
async fn a_reader_that_stops_reading_ends_with_4008_and_the_response_is_cut() {
    let h = start(0, None);
    h.push(SessionEvent::Snapshot(vec![tick("AAPL", 1.0)]));
    // The body never takes anything: the snapshot fills the slot, the next event waits.
    h.push(SessionEvent::Prices(vec![tick("AAPL", 2.0)]));
    let before = tokio::time::Instant::now();
    assert_eq!(h.task.await.unwrap(), (Ending::Server(CloseCode::SlowClient), false));
    assert_eq!(before.elapsed(), Duration::from_secs(10), "the write timeout");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_stream_with_1001() {
    let mut h = start(0, None);
    h.push(SessionEvent::Snapshot(vec![]));
    h.event().await;
    h.shutdown.cancel();
    assert_eq!(h.event().await.1["code"], 1001);
    assert_eq!(h.ended().await, (Ending::Server(CloseCode::GoingAway), true));
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_the_reader_is_stalled_cuts_the_response_within_the_grace_period() {
    let h = start(0, None);
    h.push(SessionEvent::Snapshot(vec![]));
    h.push(SessionEvent::Prices(vec![tick("AAPL", 2.0)]));
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.shutdown.cancel();
    let before = tokio::time::Instant::now();
    assert_eq!(h.task.await.unwrap(), (Ending::Server(CloseCode::GoingAway), false));
    assert!(before.elapsed() <= GatewayConfig::DEFAULT.close_grace);
}

#[tokio::test(start_paused = true)]
async fn the_token_expiry_ends_the_stream_with_4401() {
    let mut h = start(0, Some(SystemTime::now() + Duration::from_secs(45)));
    h.push(SessionEvent::Snapshot(vec![]));
    h.event().await;
    let before = tokio::time::Instant::now();
    // One heartbeat at 30 s, then the expiry (the paused clock and the wall clock differ by
    // however long the test ran, well under a second).
    assert_eq!(h.event().await.1["code"], 4401);
    assert!(before.elapsed() >= Duration::from_secs(44), "{:?}", before.elapsed());
    assert_eq!(h.ended().await.0, Ending::Server(CloseCode::TokenExpired));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_body_ends_the_stream_at_once() {
    let mut h = start(0, None);
    h.push(SessionEvent::Snapshot(vec![]));
    h.event().await;
    let before = tokio::time::Instant::now();
    drop(h.body);
    assert_eq!(h.task.await.unwrap(), (Ending::Lost, true));
    assert_eq!(before.elapsed(), Duration::ZERO, "not at the next heartbeat");
}

#[tokio::test(start_paused = true)]
async fn an_engine_stream_that_ends_silently_is_1011() {
    let mut h = start(0, None);
    h.push(SessionEvent::Snapshot(vec![]));
    h.event().await;
    h.events.close_channel();
    assert_eq!(h.event().await.1["code"], 1011);
}

#[test]
fn last_event_id_is_a_seq() {
    let with = |v: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(LAST_EVENT_ID, HeaderValue::from_str(v).unwrap());
        last_event_id(&headers).map_err(|e| e.code)
    };
    assert_eq!(last_event_id(&HeaderMap::new()).map_err(|e| e.code), Ok(0));
    assert_eq!(with("17"), Ok(17));
    assert_eq!(with(""), Ok(0));
    assert_eq!(with("abc"), Err(ErrorCode::InvalidMessage));
    assert_eq!(with("-1"), Err(ErrorCode::InvalidMessage));
}
