//! A client that stops reading while thousands of updates are published: when it reads again it
//! gets the latest price of every ticker, and the server held at most one pending entry per
//! ticker for it meanwhile.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::server;
use futures::StreamExt;
use serde_json::{Value, json};
use tickstream_api::SessionId;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn slow_reader_gets_latest_prices_with_bounded_memory() {
    let s = server(&[]).await;
    let tickers: Vec<String> = (0..50).map(|i| format!("T{i}")).collect();
    let refs: Vec<&str> = tickers.iter().map(String::as_str).collect();
    let id = s.create(&refs).await;
    let (mut ws, _) = s.ws(&id).await;
    let session = SessionId::parse(&id).unwrap();

    // 40 requests × 1,000 updates, the client reading nothing meanwhile.
    let mut last: HashMap<String, f64> = HashMap::new();
    for round in 0..40 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| {
                let ticker = &tickers[(i * 7 + round) % tickers.len()];
                let price = f64::from(u32::try_from(round * 1000 + i + 1).unwrap()) / 100.0;
                last.insert(ticker.clone(), price);
                json!({"ticker": ticker, "price": price})
            })
            .collect();
        let (status, _) = s.post("/api/v1/prices", Value::Array(batch)).await;
        assert_eq!(status, 202);
        let pending = s.running.engine.pending_updates(session).unwrap();
        assert!(pending <= tickers.len(), "pending {pending} > {} tickers", tickers.len());
    }

    // Now read until every ticker shows its last published price.
    let mut seen: HashMap<String, f64> = HashMap::new();
    let mut messages = 0u64;
    while seen != last {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("latest prices arrive")
            .unwrap()
            .unwrap();
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap();
        messages += 1;
        for p in v["prices"].as_array().unwrap() {
            seen.insert(p["ticker"].as_str().unwrap().to_owned(), p["price"].as_f64().unwrap());
        }
    }
    let conflated = s.counter("tickstream_updates_conflated_total").await;
    let delivered = s.counter("tickstream_updates_delivered_total").await;
    assert!(conflated > 30_000, "most of 40,000 updates conflated, got {conflated}");
    assert!(delivered < 10_000, "delivered {delivered}");
    assert!(messages < 1000, "{messages} messages for 40,000 updates");
}
