//! The real binary, as a user runs it: `tickstream serve` with the simulated feed streams prices
//! within a second of connecting, and SIGTERM closes sockets with 1001 and exits 0.

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::cluster::EdgeNode;
use common::{close_code, next_json};

#[tokio::test]
async fn serve_streams_simulated_prices_and_exits_cleanly_on_sigterm() {
    // Killed on drop, so a failed assertion leaves no server running.
    let mut node = EdgeNode::serve_on("127.0.0.1:0", &[]);

    let id = node.create(&["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL"]).await;
    let connected = Instant::now();
    let (mut ws, snapshot) = node.ws(&id).await;
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
    node.node.terminate();
    assert_eq!(close_code(&mut ws).await, 1001);
}
