//! Server-Sent Events against a real `serve`, with a raw HTTP/1.1 client (`common::sse`, what
//! `curl -N` does): snapshot then live prices with `id:` = `seq`, resuming with `Last-Event-ID`,
//! the close event on every way the server ends a stream, the refusals, a stalled reader
//! conflated and then cut at the write timeout, and the gauges back to baseline after each.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::sse::{self, Sse};
use common::{IDLE, Server, close_code, price_round, publish_until_writer_blocks, server, stalled_tcp};
use tickstream_api::SessionId;
use tokio::net::TcpStream;

fn events_path(id: &str) -> String {
    format!("/api/v1/sessions/{id}/events")
}

async fn open(s: &Server, id: &str, extra: &[(&str, &str)]) -> Sse {
    let tcp = TcpStream::connect(s.addr().await).await.expect("connect");
    sse::open(tcp, &events_path(id), extra).await.expect("200 text/event-stream")
}

fn price(v: &serde_json::Value, ticker: &str) -> Option<f64> {
    v["prices"].as_array()?.iter().find(|p| p["ticker"] == ticker)?["price"].as_f64()
}

#[tokio::test]
async fn snapshot_then_live_prices_then_resume_with_last_event_id() {
    let s = server(&[]).await;
    s.publish(&[("AAPL", 1.0)]).await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    let mut events = open(&s, &id, &[]).await;
    assert_eq!(events.headers["content-type"], "text/event-stream");
    assert_eq!(events.headers["cache-control"], "no-cache");

    let (first, snapshot) = events.data().await;
    assert_eq!((first, snapshot["type"].as_str()), (Some(1), Some("snapshot")));
    assert_eq!(price(&snapshot, "AAPL"), Some(1.0));
    s.publish(&[("AAPL", 2.0)]).await;
    let (second, prices) = events.data().await;
    assert_eq!((second, prices["type"].as_str(), prices["seq"].as_u64()), (Some(2), Some("prices"), Some(2)));
    assert_eq!(price(&prices, "AAPL"), Some(2.0));
    // One task for the stream, on top of the idle node's.
    let (_, streaming) = s.session(&id).await;
    assert_eq!(streaming["state"], "streaming");
    assert_eq!(s.gauges().await.tasks, IDLE.tasks + 1);

    // The client goes away: the session detaches and the task ends.
    drop(events);
    common::eventually(
        common::WAIT,
        "detached",
        async || s.session(&id).await.1["state"].clone(),
        |st| st == "detached",
    )
    .await;
    s.publish(&[("MSFT", 3.0)]).await;

    // EventSource reconnects with the last id it saw: a fresh snapshot, ids continuing.
    let mut events = open(&s, &id, &[("Last-Event-ID", "2")]).await;
    let (resumed, snapshot) = events.data().await;
    assert_eq!(
        (resumed, snapshot["type"].as_str(), snapshot["seq"].as_u64()),
        (Some(3), Some("snapshot"), Some(3))
    );
    assert_eq!((price(&snapshot, "AAPL"), price(&snapshot, "MSFT")), (Some(2.0), Some(3.0)));

    // Deleting the session ends the stream with its close event, then the response ends.
    assert_eq!(s.delete_session(&id).await, 204);
    assert_eq!(events.close_code().await, Some(4404));
    s.wait_for(IDLE).await;
}

#[tokio::test]
async fn a_websocket_replaces_an_sse_stream_with_4409_and_the_other_way_round() {
    let s = server(&[]).await;
    let id = s.create(&["AAPL"]).await;
    let mut events = open(&s, &id, &[]).await;
    events.data().await;
    let (mut ws, _) = s.ws(&id).await;
    assert_eq!(events.close_code().await, Some(4409));
    let mut events = open(&s, &id, &[]).await;
    events.data().await;
    assert_eq!(close_code(&mut ws).await, 4409);
    drop(events);
    s.delete_session(&id).await;
    s.wait_for(IDLE).await;
}

#[tokio::test]
async fn shutdown_ends_streams_with_1001_promptly() {
    let s = server(&[]).await;
    let id = s.create(&["AAPL"]).await;
    let mut events = open(&s, &id, &[]).await;
    events.data().await;
    let started = tokio::time::Instant::now();
    s.running.shutdown();
    assert_eq!(events.close_code().await, Some(1001));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn refusals_are_json_errors_before_any_stream() {
    let s = server(&["--max-ws-per-client", "1"]).await;
    let refused = |id: String, extra: Vec<(&'static str, &'static str)>| {
        let s = &s;
        async move {
            let tcp = TcpStream::connect(s.addr().await).await.expect("connect");
            sse::open(tcp, &events_path(&id), &extra).await.err().expect("refused")
        }
    };
    let r = refused("nope".into(), vec![]).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (404, Some("session_not_found")));
    let id = s.create(&["AAPL"]).await;
    let r = refused(id.clone(), vec![("Last-Event-ID", "yesterday")]).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("invalid_message")));
    // The client's one stream is a WebSocket: an SSE stream is one more.
    let (_ws, _) = s.ws(&id).await;
    let r = refused(id.clone(), vec![]).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (429, Some("rate_limited")));
    assert!(r.headers.contains_key("retry-after"));
}

// Many tickers make each event large (~55 KB), so the socket buffers fill within a few rounds.
const TICKERS: usize = 1000;

/// A session of [`TICKERS`] tickers, its stream opened over a small receive window and its
/// snapshot read, and a publisher of rounds that records the latest prices.
async fn stalled(s: &Server) -> (String, Sse, Vec<String>) {
    let tickers: Vec<String> = (0..TICKERS).map(|i| format!("T{i}")).collect();
    let refs: Vec<&str> = tickers.iter().map(String::as_str).collect();
    let id = s.create(&refs).await;
    let mut events = sse::open(stalled_tcp(s.addr().await).await, &events_path(&id), &[]).await.expect("200");
    assert_eq!(events.data().await.1["type"], "snapshot");
    (id, events, tickers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_conflated_and_gets_the_latest_prices() {
    let s = server(&["--write-timeout", "60s", "--max-tickers-per-session", "1000"]).await;
    let (id, mut events, tickers) = stalled(&s).await;
    let session = SessionId::parse(&id).unwrap();
    let mut last: HashMap<String, f64> = HashMap::new();
    let mut round = 0u32;
    let mut publish_round = async |last: &mut HashMap<String, f64>| {
        round += 1;
        let (status, _) = s.post("/api/v1/prices", price_round(&tickers, round, last)).await;
        assert_eq!(status, 202);
        let pending = s.running.engine.pending_updates(session).unwrap();
        assert!(pending <= TICKERS, "pending {pending} > {TICKERS} tickers");
    };
    // 1. Publish until nothing more is handed to the response: the loop stopped pulling.
    let delivered = async || s.counter("tickstream_updates_delivered_total").await;
    let blocked = publish_until_writer_blocks(async || publish_round(&mut last).await, delivered).await;
    assert!(blocked, "the stream never blocked");
    // 2. 20,000 more updates while stalled: none is delivered, the session's map conflates them.
    let stalled_at = delivered().await;
    let conflated_before = s.counter("tickstream_updates_conflated_total").await;
    for _ in 0..20 {
        publish_round(&mut last).await;
    }
    assert_eq!(delivered().await, stalled_at, "nothing delivered while the client reads nothing");
    let conflated = s.counter("tickstream_updates_conflated_total").await - conflated_before;
    assert!(conflated >= 19_000, "conflated {conflated} of 20,000");
    // 3. Read again: what was buffered before the stall, then the latest price of every ticker
    // in one more event; no backlog of the 20 rounds.
    let read = events.until_latest(&last).await;
    let after = (s.counter("tickstream_updates_delivered_total").await - stalled_at) / TICKERS as i64;
    assert!(
        after <= 2,
        "{after} events' worth of updates after resuming ({read} read): a backlog was queued"
    );
    drop(events);
    s.delete_session(&id).await;
    s.wait_for(IDLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_cut_at_the_write_timeout_and_every_gauge_returns() {
    let s = server(&["--write-timeout", "1s", "--max-tickers-per-session", "1000"]).await;
    let (id, events, tickers) = stalled(&s).await;
    let mut last = HashMap::new();
    let mut round = 0;
    let delivered = async || s.counter("tickstream_updates_delivered_total").await;
    let publish = async || {
        round += 1;
        s.post("/api/v1/prices", price_round(&tickers, round, &mut last)).await;
    };
    assert!(publish_until_writer_blocks(publish, delivered).await, "the stream never blocked");
    // The task ends (4008) although the client never reads or closes; the session detaches.
    common::eventually(
        common::WAIT,
        "the stream's task ended",
        async || s.gauges().await.tasks,
        |t| *t == IDLE.tasks,
    )
    .await;
    assert_eq!(s.session(&id).await.1["state"], "detached");
    drop(events);
    s.delete_session(&id).await;
    s.wait_for(IDLE).await;
}
