//! A client that stops reading its socket, and the publishing that proves the server copes:
//! a connection with a small receive buffer, rounds of 1,000 distinct prices, publishing until
//! the server's writer is blocked, and reading again until every latest price has arrived.
//! Shared by the in-process conflation test and the cluster's stalled client behind a gateway.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::client::{Client, Ws};
use super::eventually::try_eventually;

/// The receive buffer of a stalled client: a few messages fill it, so the server's socket
/// (and then its writer) blocks within a few rounds instead of after megabytes.
const STALLED_RECV_BUFFER: u32 = 4096;

/// A TCP connection to `addr` with a small receive buffer. It is set before connecting, as the
/// window the kernel advertises (and its scale) is settled in the handshake.
pub async fn stalled_tcp(addr: SocketAddr) -> TcpStream {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.expect("socket");
    socket.set_recv_buffer_size(STALLED_RECV_BUFFER).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

impl Client {
    /// A session's WebSocket over [`stalled_tcp`], its snapshot read. The test stalls it by
    /// not reading, and resumes with [`read_until_latest`].
    pub async fn stalled_ws(&self, id: &str) -> (Ws, Value) {
        self.ws_on(stalled_tcp(self.addr().await).await, id).await
    }
}

/// One round of 1,000 distinct prices spread over `tickers` (round `round` ≥ 1), recorded in
/// `last` as the latest price of each ticker: the body of one `POST /api/v1/prices`.
pub fn price_round(tickers: &[String], round: u32, last: &mut HashMap<String, f64>) -> Value {
    let batch: Vec<Value> = (0..1000u32)
        .map(|i| {
            let ticker = &tickers[i as usize % tickers.len()];
            let price = f64::from(round * 1000 + i + 1) / 100.0;
            last.insert(ticker.clone(), price);
            json!({"ticker": ticker, "price": price})
        })
        .collect();
    Value::Array(batch)
}

/// Reads data messages until every ticker of `last` has been seen at its latest price (10 s
/// per message at most).
pub async fn read_until_latest<S>(ws: &mut WebSocketStream<S>, last: &HashMap<String, f64>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut seen = HashMap::new();
    while &seen != last {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("latest prices arrive")
            .expect("stream open")
            .expect("no error");
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).expect("json");
        for p in v["prices"].as_array().expect("prices") {
            seen.insert(
                p["ticker"].as_str().expect("ticker").to_owned(),
                p["price"].as_f64().expect("price"),
            );
        }
    }
}

/// Publishes rounds (every 20 ms or so) until the server's writer for a stalled reader is
/// blocked: its sent-messages counter stays still for three rounds in a row. False if it has
/// not within 30 s.
pub async fn publish_until_writer_blocks(
    mut publish: impl AsyncFnMut(),
    sent: impl AsyncFn() -> i64,
) -> bool {
    let mut before = sent().await;
    let mut unchanged = 0;
    let round = async || {
        publish().await;
        // Give the server a moment to write what it can before the counter is read.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = sent().await;
        unchanged = if now == before { unchanged + 1 } else { 0 };
        before = now;
        unchanged
    };
    try_eventually(Duration::from_secs(30), round, |&still| still == 3).await.is_ok()
}
