//! 1,000 concurrent session creations racing deletions, expiries and WebSocket attaches (the
//! reference system's "close of closed channel" panic and its leaked subscriptions).

mod common;

use std::time::Duration;

use common::{IDLE, server};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_racing_deletions_expiries_and_attaches() {
    let s = std::sync::Arc::new(server(&[&["--session-ttl", "3s"], common::NO_CLIENT_LIMITS].concat()).await);
    let tickers = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA"];
    let mut tasks = Vec::new();
    for i in 0..1000usize {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let pick = [tickers[i % 7], tickers[(i / 7) % 7], tickers[(i / 49) % 7]];
            let (status, body) = s.post("/api/v1/sessions", json!({ "tickers": pick })).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let id = body["session_id"].as_str().unwrap().to_owned();
            match i % 5 {
                // Delete at once (on a saturated machine the TTL may have won the race: 404).
                0 => {
                    let deleted = s.delete(&format!("/api/v1/sessions/{id}")).await;
                    assert!(deleted == StatusCode::NO_CONTENT || deleted == StatusCode::NOT_FOUND);
                }
                // Attach, and race a delete against the stream.
                1 => {
                    let ws = s.try_connect(&id).await;
                    let deleted = s.delete(&format!("/api/v1/sessions/{id}")).await;
                    assert!(deleted == StatusCode::NO_CONTENT || deleted == StatusCode::NOT_FOUND);
                    if let Ok(mut ws) = ws {
                        while let Some(Ok(_)) = ws.next().await {}
                    }
                }
                // Two attaches racing each other, then the client vanishes: expiry cleans up.
                2 => {
                    let (a, b) = tokio::join!(s.try_connect(&id), s.try_connect(&id));
                    drop((a, b));
                }
                // Delete racing an attach.
                3 => {
                    let path = format!("/api/v1/sessions/{id}");
                    let (_, ws) = tokio::join!(s.delete(&path), s.try_connect(&id));
                    drop(ws);
                }
                // Never connected: expiry cleans up.
                _ => {}
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Everything settles: deletes and closes immediately, the rest at the 3 s TTL.
    s.wait_for(IDLE).await;
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.running.engine.session_count(), 0);
    assert_eq!(s.running.engine.watched_tickers(), 0);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
