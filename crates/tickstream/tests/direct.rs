//! Direct writes over real sockets: prices that find their socket idle are written by the
//! fan-out itself, numbered in one sequence with the task's messages, and a socket that fills
//! mid-frame keeps every frame whole; without `--direct-writes` every message is the task's.

mod common;

use std::time::Duration;

use common::{Gauges, WAIT, eventually, next_json, price_of, send_text, server};
use serde_json::{Value, json};

/// Waits for `tickstream_ws_messages_sent_total` to reach `read` (a message is counted once
/// written, and the client may read it first), and checks it goes no further.
async fn sent_settles_at(s: &common::Server, read: i64) -> i64 {
    let sent = async || s.counter("tickstream_ws_messages_sent_total").await;
    let n = eventually(WAIT, "every message sent counted", sent, |&n| n >= read).await;
    assert_eq!(n, read, "the client read every message sent");
    n
}

/// The `seq` of a numbered message (data or status).
fn seq(msg: &Value) -> u64 {
    msg["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {msg}"))
}

/// Publishes prices one at a time, each read before the next and after the socket has been
/// quiet for a while, with a ticker change in the middle: every message arrives in order,
/// numbered without a gap. Returns the direct count.
async fn one_at_a_time(extra: &[&str]) -> i64 {
    let s = server(extra).await;
    let id = s.create(&["AAPL"]).await;
    let (mut ws, snapshot) = s.ws(&id).await;
    let mut last = seq(&snapshot);
    for i in 1..=20 {
        if i == 10 {
            send_text(&mut ws, r#"{"type":"subscribe","tickers":["MSFT"]}"#).await;
            assert_eq!(next_json(&mut ws).await["type"], "subscribed");
            let added = next_json(&mut ws).await;
            assert_eq!(added["type"], "snapshot", "{added}");
            assert_eq!(seq(&added), last + 1);
            last += 1;
        }
        let price = f64::from(i);
        // Longer than `IDLE_BEFORE_DIRECT` since the last message.
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.publish(&[("AAPL", price)]).await;
        let msg = next_json(&mut ws).await;
        assert_eq!(msg["type"], "prices", "{msg}");
        assert_eq!(price_of(&msg, "AAPL"), Some(price), "{msg}");
        assert_eq!(seq(&msg), last + 1, "numbered in one sequence: {msg}");
        last += 1;
    }
    sent_settles_at(&s, 23).await;
    s.counter("tickstream_ws_direct_writes_total").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_for_an_idle_socket_are_written_directly_in_the_sockets_sequence() {
    let direct = one_at_a_time(&["--direct-writes"]).await;
    // Each price finds the socket idle (quiet since its last message was read).
    assert_eq!(direct, 20, "every price was written by the fan-out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_direct_writes_the_task_writes_every_message() {
    assert_eq!(one_at_a_time(&[]).await, 0);
}

/// A reader that stops with a small receive buffer while thousands of prices of its one ticker
/// are published in bursts: the first of a burst goes straight to the quiet socket, the rest
/// conflate behind it and the task writes them until the socket is full. When it reads again it
/// gets whole frames, numbered in one sequence without a gap, ending with the latest price; then
/// it leaves and nothing stays behind. (A frame the kernel takes only in part: `direct.rs`'s
/// unit test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_fills_mid_frame_keeps_every_frame_whole_and_the_latest_price_last() {
    let s = server(&["--write-timeout", "60s", "--direct-writes"]).await;
    let id = s.create(&["AAPL"]).await;
    let (mut ws, snapshot) = s.stalled_ws(&id).await;
    let mut last_seq = seq(&snapshot);
    let mut latest = 0.0;
    for round in 0..20u32 {
        // One request of 1,000 prices, after a pause: its first finds the socket quiet.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let batch: Vec<Value> = (0..1000u32)
            .map(|i| {
                latest = f64::from(round * 1000 + i + 1) / 100.0;
                json!({"ticker": "AAPL", "price": latest})
            })
            .collect();
        let (status, _) = s.post("/api/v1/prices", Value::Array(batch)).await;
        assert_eq!(status, 202);
    }
    let direct = s.counter("tickstream_ws_direct_writes_total").await;
    assert!(direct > 0, "the first price of a burst went straight to the socket");
    loop {
        // Every frame parses, and is a whole JSON message.
        let msg = next_json(&mut ws).await;
        assert_eq!(seq(&msg), last_seq + 1, "no gap, no repeat: {msg}");
        last_seq += 1;
        if price_of(&msg, "AAPL") == Some(latest) {
            break;
        }
    }
    // Counted once written, which the client may see first: it settles at what was read.
    let read = i64::try_from(last_seq).unwrap();
    let sent = sent_settles_at(&s, read).await;
    assert!(
        sent > direct,
        "the task wrote what conflated once the socket was full ({sent} sent, {direct} direct)"
    );
    drop(ws);
    // Detached: the session waits for a socket, the connection's task and socket are gone.
    s.wait_for(Gauges { ws_connections: 0, sessions: 1, broker_subscriptions: 1, tasks: 1 }).await;
}
