//! A client that stops reading while tens of thousands of updates are published: the server's
//! writer blocks, the session keeps at most one pending entry per ticker, no message is produced
//! while the client is stalled, and when it reads again it gets the latest price of every ticker
//! in a couple of messages.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{next_json, server};
use futures::StreamExt;
use serde_json::{Value, json};
use tickstream_api::SessionId;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

// Many tickers make each message large (~55 KB), so the socket buffers fill within a few rounds.
const TICKERS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_gets_latest_prices_with_bounded_memory() {
    let s = server(&["--write-timeout", "60s", "--max-tickers-per-session", "1000"]).await;
    let tickers: Vec<String> = (0..TICKERS).map(|i| format!("T{i}")).collect();
    let refs: Vec<&str> = tickers.iter().map(String::as_str).collect();
    let id = s.create(&refs).await;
    let session = SessionId::parse(&id).unwrap();
    // A small receive window, so the server's socket fills after a few messages.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(s.running.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(s.ws_url(&id), tcp).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");

    let mut last: HashMap<String, f64> = HashMap::new();
    let mut round = 0u32;
    let mut publish_round = async |last: &mut HashMap<String, f64>| {
        round += 1;
        let batch: Vec<Value> = (0..1000u32)
            .map(|i| {
                let ticker = &tickers[i as usize % TICKERS];
                let price = f64::from(round * 1000 + i + 1) / 100.0;
                last.insert(ticker.clone(), price);
                json!({"ticker": ticker, "price": price})
            })
            .collect();
        let (status, _) = s.post("/api/v1/prices", Value::Array(batch)).await;
        assert_eq!(status, 202);
        let pending = s.running.engine.pending_updates(session).unwrap();
        assert!(pending <= TICKERS, "pending {pending} > {TICKERS} tickers");
    };

    // 1. Publish until the writer is blocked: messages stop going out while updates keep coming.
    let sent = async || s.counter("tickstream_ws_messages_sent_total").await;
    let mut unchanged = 0;
    let mut before = sent().await;
    for _ in 0..500 {
        publish_round(&mut last).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = sent().await;
        unchanged = if now == before { unchanged + 1 } else { 0 };
        before = now;
        if unchanged == 3 {
            break;
        }
    }
    assert_eq!(unchanged, 3, "the writer never blocked");

    // 2. 20,000 more updates while stalled: no message is built, nothing queues but the map.
    let stalled_at = sent().await;
    let conflated_before = s.counter("tickstream_updates_conflated_total").await;
    for _ in 0..20 {
        publish_round(&mut last).await;
    }
    assert_eq!(sent().await, stalled_at, "no messages while the client reads nothing");
    let conflated = s.counter("tickstream_updates_conflated_total").await - conflated_before;
    assert!(conflated >= 19_000, "conflated {conflated} of 20,000");

    // 3. Read again: every ticker's last price arrives, in at most the blocked message plus one.
    let mut seen: HashMap<String, f64> = HashMap::new();
    while seen != last {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("latest prices arrive")
            .unwrap()
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        for p in v["prices"].as_array().unwrap() {
            seen.insert(p["ticker"].as_str().unwrap().to_owned(), p["price"].as_f64().unwrap());
        }
    }
    let after = sent().await - stalled_at;
    assert!(after <= 2, "{after} messages after resuming: a backlog was queued");
}
