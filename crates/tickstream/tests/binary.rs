//! The real binary, as a user runs it: `tickstream serve` with the simulated feed streams prices
//! within a second of connecting, and SIGTERM closes sockets with 1001 and exits 0.

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::cluster::Node;
use common::{close_code, next_json};
use serde_json::{Value, json};

#[tokio::test]
async fn serve_streams_simulated_prices_and_exits_cleanly_on_sigterm() {
    // Killed on drop, so a failed assertion leaves no server running.
    let mut node = Node::spawn(&["serve", "--listen", "127.0.0.1:0"], 1);
    let addr = node.lines[0].strip_prefix("listening on http://").expect("listening line").to_owned();

    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("http://{addr}/api/v1/sessions"))
        .json(&json!({"tickers": ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["session_id"].as_str().unwrap();
    let connected = Instant::now();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?session_id={id}")).await.unwrap();
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["prices"].as_array().unwrap().len(), 5, "the feed primes every ticker");
    let live = next_json(&mut ws).await;
    assert_eq!(live["type"], "prices");
    assert!(
        connected.elapsed() < Duration::from_secs(1),
        "first live prices after {:?}",
        connected.elapsed()
    );

    // SIGTERM, and a clean exit (status 0); the 1001 close frame was sent before the exit.
    node.terminate();
    assert_eq!(close_code(&mut ws).await, 1001);
}
