//! A client that stops reading while tens of thousands of updates are published: the server's
//! writer blocks, the session keeps at most one pending entry per ticker, no message is produced
//! while the client is stalled, and when it reads again it gets the latest price of every ticker
//! in a couple of messages.

mod common;

use std::collections::HashMap;

use common::{price_round, publish_until_writer_blocks, read_until_latest, server};
use tickstream_api::SessionId;

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
    let (mut ws, snapshot) = s.stalled_ws(&id).await;
    assert_eq!(snapshot["type"], "snapshot");

    let mut last: HashMap<String, f64> = HashMap::new();
    let mut round = 0u32;
    let mut publish_round = async |last: &mut HashMap<String, f64>| {
        round += 1;
        let batch = price_round(&tickers, round, last);
        let (status, _) = s.post("/api/v1/prices", batch).await;
        assert_eq!(status, 202);
        let pending = s.running.engine.pending_updates(session).unwrap();
        assert!(pending <= TICKERS, "pending {pending} > {TICKERS} tickers");
    };

    // 1. Publish until the writer is blocked: messages stop going out while updates keep coming.
    let sent = async || s.counter("tickstream_ws_messages_sent_total").await;
    let blocked = publish_until_writer_blocks(async || publish_round(&mut last).await, sent).await;
    assert!(blocked, "the writer never blocked");

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
    read_until_latest(&mut ws, &last).await;
    let after = sent().await - stalled_at;
    assert!(after <= 2, "{after} messages after resuming: a backlog was queued");
}
