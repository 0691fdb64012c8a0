//! The connection loop without sockets: a channel transport, the real engine (behind a gated
//! service where a ticker change must hang), and tokio's paused clock, so heartbeat and write
//! deadlines are exact and instant. Over 400 lines: one harness serves every loop rule, and
//! splitting it would only duplicate the harness.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Sink, Stream, StreamExt};
use serde_json::Value;
use tickstream_api::{MonitoringService, ServiceError, SessionId, SessionInfo, StartRequest, Tick, Ticker};
use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig};
use tickstream_telemetry::Metrics;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::Connection;
use crate::GatewayConfig;
use crate::close::{CloseCode, Ending};

/// A transport made of two channels; the outbound one is bounded so a test can play a client
/// that stops reading.
struct ChannelTransport {
    inbound: mpsc::UnboundedReceiver<Result<Message, WsError>>,
    outbound: mpsc::Sender<Message>,
}

impl Stream for ChannelTransport {
    type Item = Result<Message, WsError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inbound.poll_next_unpin(cx)
    }
}

impl Sink<Message> for ChannelTransport {
    type Error = WsError;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.outbound.poll_ready(cx).map_err(|e| WsError::Io(std::io::Error::other(e)))
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.outbound.start_send(item).map_err(|e| WsError::Io(std::io::Error::other(e)))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.outbound).poll_flush(cx).map_err(|e| WsError::Io(std::io::Error::other(e)))
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Pin::new(&mut self.outbound).poll_close(cx).map_err(|e| WsError::Io(std::io::Error::other(e)))
    }
}

struct Harness {
    engine: Engine,
    metrics: Arc<Metrics>,
    id: SessionId,
    client_tx: mpsc::UnboundedSender<Result<Message, WsError>>,
    client_rx: mpsc::Receiver<Message>,
    shutdown: CancellationToken,
    task: JoinHandle<Ending>,
}

fn t(s: &str) -> Ticker {
    Ticker::parse(s).unwrap()
}

fn config() -> GatewayConfig {
    GatewayConfig {
        heartbeat_interval: Duration::from_secs(30),
        heartbeat_timeout: Duration::from_secs(60),
        write_timeout: Duration::from_secs(10),
        ..GatewayConfig::default()
    }
}

async fn harness(config: GatewayConfig, outbound_capacity: usize) -> Harness {
    harness_with_early_frames(config, outbound_capacity, &[]).await
}

/// A harness whose client has already sent `early` text frames when the connection starts.
async fn harness_with_early_frames(
    config: GatewayConfig,
    outbound_capacity: usize,
    early: &[&str],
) -> Harness {
    harness_on(config, outbound_capacity, early, |engine| engine).await
}

/// A harness whose connection reaches the engine through `service` (built around it).
async fn harness_on<S: MonitoringService>(
    config: GatewayConfig,
    outbound_capacity: usize,
    early: &[&str],
    service: impl FnOnce(Engine) -> S,
) -> Harness {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(1000, metrics.clone()));
    let engine = Engine::new(EngineConfig::default(), broker, metrics.clone());
    let req = StartRequest { tickers: vec![t("AAPL"), t("MSFT")], max_rate_hz: None, owner: None };
    let id = engine.start_monitoring(req).await.unwrap().id;
    let service = Arc::new(service(engine.clone()));
    let updates = service.stream_price_updates(id).await.unwrap();
    let (client_tx, inbound) = mpsc::unbounded();
    for text in early {
        client_tx.unbounded_send(Ok(Message::text(*text))).unwrap();
    }
    let (outbound, client_rx) = mpsc::channel(outbound_capacity);
    let shutdown = CancellationToken::new();
    let connection = Connection {
        service,
        session: id,
        config: Arc::new(config),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        auth: None,
        encoding: crate::encoding::Encoding::Json,
        direct: None,
    };
    let task = tokio::spawn(async move {
        let (mut transport, mut updates) = (ChannelTransport { inbound, outbound }, updates);
        connection.run(&mut transport, &mut updates).await
    });
    Harness { engine, metrics, id, client_tx, client_rx, shutdown, task }
}

impl Harness {
    fn send_text(&self, text: &str) {
        self.client_tx.unbounded_send(Ok(Message::text(text))).unwrap();
    }

    /// The next message that is not a Ping.
    async fn next(&mut self) -> Message {
        loop {
            match self.client_rx.next().await.expect("connection ended") {
                Message::Ping(_) => continue,
                m => return m,
            }
        }
    }

    async fn next_json(&mut self) -> Value {
        match self.next().await {
            Message::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    async fn publish(&self, ticker: &str, price: f64) {
        self.engine.publish(vec![Tick::new(t(ticker), price, 1).unwrap()]).await.unwrap();
    }

    /// Collects the close frame code and the connection's ending.
    async fn closed(mut self) -> (Option<u16>, Ending) {
        let mut code = None;
        while let Some(m) = self.client_rx.next().await {
            if let Message::Close(Some(CloseFrame { code: c, .. })) = m {
                code = Some(u16::from(c));
                // Answer like a client would, completing the close handshake.
                let _ = self.client_tx.unbounded_send(Ok(Message::Close(None)));
            }
        }
        let ending = self.task.await.unwrap();
        (code, ending)
    }
}

#[tokio::test(start_paused = true)]
async fn snapshot_then_prices_with_growing_seq() {
    let mut h = harness(config(), 16).await;
    let snap = h.next_json().await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["seq"], 1);
    h.publish("AAPL", 10.0).await;
    let m = h.next_json().await;
    assert_eq!(m["type"], "prices");
    assert_eq!(m["seq"], 2);
    assert_eq!(m["prices"][0]["ticker"], "AAPL");
    assert_eq!(h.metrics.updates_delivered.get(), 1);
    assert_eq!(h.metrics.delivery_latency.get_sample_count(), 1);
}

/// A snapshot's ticks count as delivered but not in the delivery-latency histogram: their `ts`
/// is the age of the last price (the "late 2.6 %" of issue 12 were snapshots under churn).
#[tokio::test(start_paused = true)]
async fn snapshots_are_counted_but_not_timed() {
    let mut h = harness(config(), 16).await;
    h.next().await; // the (empty) snapshot
    h.publish("GOOG", 3.0).await;
    h.send_text(r#"{"type":"subscribe","tickers":["GOOG"]}"#);
    h.next_json().await; // subscribed
    assert_eq!(h.next_json().await["type"], "snapshot");
    assert_eq!(h.metrics.updates_delivered.get(), 1);
    assert_eq!(h.metrics.delivery_latency.get_sample_count(), 0, "a snapshot is not a delivery");
    h.publish("GOOG", 4.0).await;
    assert_eq!(h.next_json().await["type"], "prices");
    assert_eq!(h.metrics.updates_delivered.get(), 2);
    assert_eq!(h.metrics.delivery_latency.get_sample_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn silent_client_gets_pings_then_heartbeat_timeout() {
    let mut h = harness(config(), 16).await;
    h.next().await; // snapshot
    let started = tokio::time::Instant::now();
    // Pings arrive every interval, and nothing comes back.
    assert!(matches!(h.client_rx.next().await, Some(Message::Ping(_))));
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    let metrics = h.metrics.clone();
    let (code, ending) = h.closed().await;
    assert_eq!(code, Some(4408));
    assert_eq!(ending, Ending::Server(CloseCode::HeartbeatTimeout));
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    assert_eq!(metrics.sessions_in("detached").get(), 1, "the session survives its socket");
    assert_eq!(metrics.ws_disconnects.with_label_values(&["4408"]).get(), 1);
}

#[tokio::test(start_paused = true)]
async fn app_ping_answers_pong_and_extends_the_deadline() {
    let mut h = harness(config(), 16).await;
    h.next().await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(50)).await;
        h.send_text(r#"{"type":"ping"}"#);
        let pong = h.next_json().await;
        assert_eq!(pong["type"], "pong");
        assert!(pong["ts"].as_u64().unwrap() > 0);
    }
    assert!(!h.task.is_finished(), "250 s alive thanks to pings every 50 s");
    // A WebSocket Pong frame counts too.
    tokio::time::sleep(Duration::from_secs(50)).await;
    h.client_tx.unbounded_send(Ok(Message::Pong(Default::default()))).unwrap();
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert!(!h.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn subscribe_replies_then_snapshots_added_tickers_and_errors_keep_the_socket() {
    let mut h = harness(config(), 16).await;
    h.next().await;
    h.publish("GOOG", 3.0).await;
    h.send_text(r#"{"type":"subscribe","tickers":["goog"]}"#);
    let reply = h.next_json().await;
    assert_eq!(reply, serde_json::json!({"type":"subscribed","tickers":["AAPL","MSFT","GOOG"]}));
    let snap = h.next_json().await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["seq"], 2);
    assert_eq!(snap["prices"][0]["price"], 3.0);
    h.send_text(r#"{"type":"unsubscribe","tickers":["AAPL","MSFT"]}"#);
    assert_eq!(h.next_json().await["tickers"], serde_json::json!(["GOOG"]));
    for (bad, code) in [
        ("nonsense", "invalid_json"),
        (r#"{"type":"fly"}"#, "unknown_type"),
        (r#"{"type":"subscribe","tickers":["b@d"]}"#, "invalid_ticker"),
    ] {
        h.send_text(bad);
        let e = h.next_json().await;
        assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some(code)));
    }
    h.publish("GOOG", 4.0).await;
    assert_eq!(h.next_json().await["prices"][0]["price"], 4.0, "still streaming after errors");
}

#[tokio::test(start_paused = true)]
async fn binary_frame_closes_with_1003() {
    let mut h = harness(config(), 16).await;
    h.next().await;
    h.client_tx.unbounded_send(Ok(Message::Binary(vec![1, 2].into()))).unwrap();
    assert_eq!(h.closed().await, (Some(1003), Ending::Server(CloseCode::Unsupported)));
}

#[tokio::test(start_paused = true)]
async fn flooding_client_closes_with_1008() {
    let mut h = harness(config(), 1024).await;
    h.next().await;
    for _ in 0..100 {
        h.send_text(r#"{"type":"ping"}"#);
    }
    let (code, _) = h.closed().await;
    assert_eq!(code, Some(1008));
}

#[tokio::test(start_paused = true)]
async fn client_close_frame_ends_with_its_code() {
    let mut h = harness(config(), 16).await;
    h.next().await;
    let frame = CloseFrame { code: 1000.into(), reason: "bye".into() };
    h.client_tx.unbounded_send(Ok(Message::Close(Some(frame)))).unwrap();
    let metrics = h.metrics.clone();
    assert_eq!(h.closed().await.1, Ending::Client(Some(1000)));
    assert_eq!(metrics.ws_disconnects.with_label_values(&["1000"]).get(), 1);
}

#[tokio::test(start_paused = true)]
async fn transport_gone_is_1006_and_detaches() {
    let mut h = harness(config(), 16).await;
    h.next().await;
    let (metrics, engine, id) = (h.metrics.clone(), h.engine.clone(), h.id);
    h.client_tx.close_channel();
    assert_eq!(h.closed().await.1, Ending::Lost);
    assert_eq!(metrics.ws_disconnects.with_label_values(&["1006"]).get(), 1);
    assert_eq!(engine.session(id).await.unwrap().state.as_str(), "detached");
}

#[tokio::test(start_paused = true)]
async fn client_that_stops_reading_is_closed_at_the_write_deadline() {
    // Room for the snapshot only: the next write blocks like a full TCP buffer.
    let h = harness(config(), 0).await;
    h.publish("AAPL", 1.0).await;
    h.publish("MSFT", 1.0).await;
    let started = tokio::time::Instant::now();
    let ending = h.task.await.unwrap();
    assert_eq!(ending, Ending::Server(CloseCode::SlowClient));
    assert!(started.elapsed() >= Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_with_1001_and_session_end_with_4404() {
    let mut h = harness(config(), 16).await;
    h.next().await;
    h.shutdown.cancel();
    assert_eq!(h.closed().await.0, Some(1001));

    let mut h = harness(config(), 16).await;
    h.next().await;
    h.engine.end_session(h.id).await.unwrap();
    let metrics = h.metrics.clone();
    assert_eq!(h.closed().await.0, Some(4404));
    assert_eq!(metrics.sessions_in("detached").get() + metrics.sessions_in("streaming").get(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_comes_first_even_when_the_client_speaks_first() {
    let mut h = harness_with_early_frames(config(), 16, &[r#"{"type":"ping"}"#]).await;
    assert_eq!(h.next_json().await["type"], "snapshot");
    assert_eq!(h.next_json().await["type"], "pong");
}

/// A client on a slow link watching a busy ticker: data is always pending, yet pings still go
/// out on time and the client, answering them, is never dropped.
#[tokio::test(start_paused = true)]
async fn a_busy_stream_does_not_starve_heartbeat_pings() {
    let cfg = GatewayConfig {
        heartbeat_interval: Duration::from_secs(1),
        heartbeat_timeout: Duration::from_secs(2),
        ..config()
    };
    let mut h = harness(cfg, 1).await;
    h.next().await;
    let engine = h.engine.clone();
    let publisher = tokio::spawn(async move {
        for i in 1..=5000u32 {
            engine.publish(vec![Tick::new(t("AAPL"), f64::from(i), 1).unwrap()]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut pings = 0;
    let mut data = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
        match h.client_rx.next().await {
            Some(Message::Ping(_)) => {
                pings += 1;
                h.client_tx.unbounded_send(Ok(Message::Pong(Default::default()))).unwrap();
            }
            Some(Message::Close(f)) => panic!("live client closed: {f:?}"),
            Some(_) => data += 1,
            None => panic!("connection ended"),
        }
    }
    publisher.await.unwrap();
    assert!(pings >= 8, "{pings} pings in 10 s at a 1 s interval");
    assert!(data > 1000, "{data} data messages");
    assert!(!h.task.is_finished());
}

/// Review finding: shutdown while a write is stalled (client not reading) must still close with
/// 1001 promptly, not wait out the write timeout and end as 4008.
#[tokio::test(start_paused = true)]
async fn shutdown_interrupts_a_stalled_write() {
    let h = harness(config(), 0).await;
    h.publish("AAPL", 1.0).await;
    h.publish("MSFT", 1.0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    h.shutdown.cancel();
    let ending = h.task.await.unwrap();
    assert_eq!(ending, Ending::Server(CloseCode::GoingAway));
    assert!(started.elapsed() <= Duration::from_secs(2), "took {:?}", started.elapsed());
}

/// The engine behind a gate: each ticker change waits for a permit before it reaches the engine,
/// as a gRPC `UpdateTickers` to a stuck engine waits out its deadline. No permit: it never ends.
struct Gated {
    engine: Engine,
    gate: Arc<Semaphore>,
}

impl MonitoringService for Gated {
    type Updates = <Engine as MonitoringService>::Updates;

    async fn start_monitoring(&self, req: StartRequest) -> Result<SessionInfo, ServiceError> {
        self.engine.start_monitoring(req).await
    }
    async fn session(&self, id: SessionId) -> Result<SessionInfo, ServiceError> {
        self.engine.session(id).await
    }
    async fn end_session(&self, id: SessionId) -> Result<(), ServiceError> {
        self.engine.end_session(id).await
    }
    async fn stream_price_updates(&self, id: SessionId) -> Result<Self::Updates, ServiceError> {
        self.engine.stream_price_updates(id).await
    }
    async fn update_tickers(
        &self,
        id: SessionId,
        add: Vec<Ticker>,
        remove: Vec<Ticker>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        self.gate.acquire().await.map_err(|e| ServiceError::Unavailable(e.to_string()))?.forget();
        self.engine.update_tickers(id, add, remove).await
    }
    async fn tickers(&self, limit: usize) -> Result<Vec<Ticker>, ServiceError> {
        self.engine.tickers(limit).await
    }
    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), ServiceError> {
        self.engine.publish(ticks).await
    }
}

/// A harness whose ticker changes wait at the returned gate (closed: no permits).
async fn gated_harness(config: GatewayConfig) -> (Harness, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let h = harness_on(config, 16, &[], move |engine| Gated { engine, gate: g }).await;
    (h, gate)
}

impl Harness {
    /// The next message within `limit`, or `None` if there is none by then.
    async fn within(&mut self, limit: Duration) -> Option<Message> {
        tokio::time::timeout(limit, self.client_rx.next()).await.ok().flatten()
    }

    /// The next reply (not data, not a Ping) within `limit`, as JSON.
    async fn reply_within(&mut self, limit: Duration) -> Option<Value> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.within(left).await? {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if !matches!(v["type"].as_str(), Some("snapshot" | "prices")) {
                        return Some(v);
                    }
                }
                Message::Ping(_) => {}
                other => panic!("expected a reply, got {other:?}"),
            }
        }
    }
}

/// Issue 9: a ticker change that never completes must not stall the loop. While it hangs, pings
/// go out on schedule and the client's pongs keep it alive past the heartbeat timeout, data is
/// delivered, and shutdown still closes with 1001 at once. (The loop used to await the change
/// inline: no ping, no data, and shutdown waited for the change.)
#[tokio::test(start_paused = true)]
async fn a_hanging_ticker_change_stalls_neither_heartbeats_nor_data_nor_shutdown() {
    let (mut h, _gate) = gated_harness(config()).await;
    h.next().await; // snapshot
    h.send_text(r#"{"type":"subscribe","tickers":["GOOG"]}"#);
    let started = tokio::time::Instant::now();
    // Four heartbeat intervals: twice the 60 s timeout, alive thanks to the pongs.
    for n in 1..=4u32 {
        match h.within(Duration::from_secs(31)).await {
            Some(Message::Ping(_)) => {}
            other => panic!("ping {n} not sent while the change hangs: got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::from_secs(30) * n, "ping {n} on schedule");
        h.client_tx.unbounded_send(Ok(Message::Pong(Default::default()))).unwrap();
    }
    assert!(!h.task.is_finished(), "alive past the heartbeat timeout");
    h.publish("AAPL", 7.0).await;
    match h.within(Duration::from_secs(1)).await {
        Some(Message::Text(t)) => {
            let m: Value = serde_json::from_str(&t).unwrap();
            assert_eq!((m["type"].as_str(), m["prices"][0]["price"].as_f64()), (Some("prices"), Some(7.0)));
        }
        other => panic!("data not delivered while the change hangs: got {other:?}"),
    }
    let stopping = tokio::time::Instant::now();
    h.shutdown.cancel();
    let closed = tokio::time::timeout(Duration::from_secs(2), h.closed()).await;
    assert_eq!(closed.expect("shutdown waited for the hanging change").0, Some(1001));
    assert!(stopping.elapsed() <= Duration::from_secs(1), "took {:?}", stopping.elapsed());
}

/// Requests that arrive while a change is in flight wait their turn: replies in request order,
/// and the final set reflects every request in order.
#[tokio::test(start_paused = true)]
async fn requests_behind_a_change_are_answered_in_order_once_it_completes() {
    let (mut h, gate) = gated_harness(config()).await;
    h.next().await;
    h.send_text(r#"{"type":"subscribe","tickers":["GOOG"]}"#);
    h.send_text(r#"{"type":"ping"}"#);
    h.send_text(r#"{"type":"subscribe","tickers":["NVDA"]}"#);
    h.send_text(r#"{"type":"unsubscribe","tickers":["AAPL"]}"#);
    assert_eq!(
        h.reply_within(Duration::from_secs(5)).await,
        None,
        "nothing answered before the first change"
    );
    gate.add_permits(1);
    let first = h.reply_within(Duration::from_secs(1)).await.unwrap();
    assert_eq!(first, serde_json::json!({"type":"subscribed","tickers":["AAPL","MSFT","GOOG"]}));
    assert_eq!(h.reply_within(Duration::from_secs(1)).await.unwrap()["type"], "pong");
    assert_eq!(h.reply_within(Duration::from_secs(5)).await, None, "the second change waits at the gate");
    gate.add_permits(2);
    let second = h.reply_within(Duration::from_secs(1)).await.unwrap();
    assert_eq!(second["tickers"], serde_json::json!(["AAPL", "MSFT", "GOOG", "NVDA"]));
    let third = h.reply_within(Duration::from_secs(1)).await.unwrap();
    assert_eq!(third["tickers"], serde_json::json!(["MSFT", "GOOG", "NVDA"]));
    let tickers = h.engine.session(h.id).await.unwrap().tickers;
    assert_eq!(tickers, [t("MSFT"), t("GOOG"), t("NVDA")]);
    assert!(!h.task.is_finished());
}

/// The queue behind a change holds one inbound burst; a client that overflows it within its rate
/// limit is closed with 1008 (answering `error` at once would break reply order).
#[tokio::test(start_paused = true)]
async fn more_waiting_requests_than_one_burst_close_with_1008() {
    let cfg = GatewayConfig { client_msg_burst: 2, client_msg_per_sec: 100, ..config() };
    let (mut h, _gate) = gated_harness(cfg).await;
    h.next().await;
    h.send_text(r#"{"type":"subscribe","tickers":["GOOG"]}"#);
    h.send_text(r#"{"type":"ping"}"#);
    // The bucket refills (2 tokens), so the next two are within the rate limit.
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.send_text(r#"{"type":"ping"}"#);
    assert!(h.within(Duration::from_millis(100)).await.is_none(), "two requests wait");
    h.send_text(r#"{"type":"ping"}"#);
    let closed = tokio::time::timeout(Duration::from_secs(2), h.closed()).await;
    assert_eq!(closed.expect("still open"), (Some(1008), Ending::Server(CloseCode::PolicyViolation)));
}

/// Control frames count against the inbound limit: tungstenite answers every ping, so a flood of
/// them would otherwise cost a write each, without limit.
#[tokio::test(start_paused = true)]
async fn a_ping_flood_closes_with_1008() {
    let cfg = GatewayConfig { client_msg_burst: 5, client_msg_per_sec: 1, ..config() };
    let mut h = harness(cfg, 64).await;
    h.next().await;
    for _ in 0..6 {
        h.client_tx.unbounded_send(Ok(Message::Ping(Default::default()))).unwrap();
    }
    let closed = tokio::time::timeout(Duration::from_secs(2), h.closed()).await;
    assert_eq!(closed.expect("still open"), (Some(1008), Ending::Server(CloseCode::PolicyViolation)));
}
