//! The test client: what a user of the REST + WebSocket API does (create a session, open its
//! socket, publish prices, read data messages, wait for a price, read the close code, scrape
//! `/metrics`), against any base URL — an in-process `serve` ([`super::Server`]) or a `serve` /
//! `gateway` process ([`super::cluster::EdgeNode`]), both of which dereference to a [`Client`].
//! Every helper fails the test (panics) on a transport error: a test that cannot reach its
//! server has nothing left to check.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::eventually::{WAIT, eventually};
use super::{Gauges, metric_sum};

/// A client's WebSocket, however it was opened.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// HTTP and WebSocket access to one node at `base` (`http://host:port`).
#[derive(Clone, Debug)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Self { base: base.into(), http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The node's TCP address, for tests that open raw connections.
    pub async fn addr(&self) -> SocketAddr {
        let authority = self.base.split_once("://").map_or(self.base.as_str(), |(_, a)| a);
        let authority = authority.trim_end_matches('/');
        tokio::net::lookup_host(authority)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("no address for {}", self.base))
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.http.post(self.url(path)).json(&body).send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> StatusCode {
        self.http.delete(self.url(path)).send().await.expect("request").status()
    }

    /// Creates a session and returns its id.
    pub async fn create(&self, tickers: &[&str]) -> String {
        let (status, body) = self.post("/api/v1/sessions", json!({ "tickers": tickers })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["session_id"].as_str().expect("session_id").to_owned()
    }

    /// `GET /api/v1/sessions/{id}`.
    pub async fn session(&self, id: &str) -> (StatusCode, Value) {
        self.get(&format!("/api/v1/sessions/{id}")).await
    }

    /// `DELETE /api/v1/sessions/{id}`.
    pub async fn delete_session(&self, id: &str) -> StatusCode {
        self.delete(&format!("/api/v1/sessions/{id}")).await
    }

    /// Publishes `(ticker, price)` pairs with one request.
    pub async fn publish(&self, prices: &[(&str, f64)]) {
        let body: Vec<Value> = prices.iter().map(|(t, p)| json!({ "ticker": t, "price": p })).collect();
        let (status, resp) = self.post("/api/v1/prices", Value::Array(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    }

    /// Publishes one price (the single-object body) and returns the status, for tests that
    /// expect a refusal.
    pub async fn post_price(&self, ticker: &str, price: f64) -> StatusCode {
        self.post("/api/v1/prices", json!({ "ticker": ticker, "price": price })).await.0
    }

    pub fn ws_url(&self, id: &str) -> String {
        // http → ws and https → wss alike.
        format!("{}/ws?session_id={id}", self.base.replacen("http", "ws", 1))
    }

    /// The WebSocket handshake for a session, or why it was refused.
    pub async fn try_connect(&self, id: &str) -> Result<Ws, tungstenite::Error> {
        tokio_tungstenite::connect_async(self.ws_url(id)).await.map(|(ws, _)| ws)
    }

    /// The WebSocket handshake for a session, reading nothing.
    pub async fn connect(&self, id: &str) -> Ws {
        self.try_connect(id).await.expect("ws connects")
    }

    /// Opens a WebSocket for a session and reads its snapshot.
    pub async fn ws(&self, id: &str) -> (Ws, Value) {
        expect_snapshot(self.connect(id).await).await
    }

    /// Opens a session's WebSocket over `tcp` (a connection the test set up itself: a small
    /// receive buffer, linger 0) and reads its snapshot.
    pub async fn ws_on(&self, tcp: TcpStream, id: &str) -> (Ws, Value) {
        let (ws, _) = tokio_tungstenite::client_async(self.ws_url(id), MaybeTlsStream::Plain(tcp))
            .await
            .expect("ws handshake");
        expect_snapshot(ws).await
    }

    pub async fn metrics_text(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text")
    }

    /// Sum of the `/metrics` samples of `prefix` (see [`metric_sum`]).
    pub async fn counter(&self, prefix: &str) -> i64 {
        metric_sum(&self.metrics_text().await, prefix)
    }

    pub async fn gauges(&self) -> Gauges {
        let text = self.metrics_text().await;
        Gauges {
            ws_connections: metric_sum(&text, "tickstream_ws_connections"),
            sessions: metric_sum(&text, "tickstream_sessions{"),
            broker_subscriptions: metric_sum(&text, "tickstream_broker_subscriptions"),
            tasks: metric_sum(&text, "tickstream_tasks{"),
        }
    }

    /// Waits (up to [`WAIT`]) until the gauges equal `want`; fails with the last reading otherwise.
    pub async fn wait_for(&self, want: Gauges) {
        eventually(WAIT, &format!("gauges {want:?}"), async || self.gauges().await, |g| *g == want).await;
    }
}

async fn expect_snapshot(mut ws: Ws) -> (Ws, Value) {
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (ws, snapshot)
}

/// The next text message as JSON, within 5 s; pings are answered by tungstenite.
pub async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("stream open")
            .expect("no error");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("json"),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => continue,
        }
    }
}

/// Reads until the server's close frame; returns its code.
pub async fn close_code<S>(ws: &mut WebSocketStream<S>) -> u16
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("closed within 5 s");
        match msg {
            Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => return code.into(),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

pub async fn send_text<S>(ws: &mut WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.expect("send");
}

/// Tickers of a data message, sorted.
pub fn tickers_of(msg: &Value) -> Vec<String> {
    let mut v: Vec<String> = msg["prices"]
        .as_array()
        .expect("prices array")
        .iter()
        .map(|p| p["ticker"].as_str().expect("ticker").to_owned())
        .collect();
    v.sort();
    v
}

/// The price a data message carries for `ticker`, if any.
pub fn price_of(msg: &Value, ticker: &str) -> Option<f64> {
    msg["prices"].as_array()?.iter().find(|p| p["ticker"] == ticker).and_then(|p| p["price"].as_f64())
}

/// Reads until a data message carries `ticker` at `price` (5 s per message at most); returns
/// how many snapshots came first.
pub async fn until_price<S>(ws: &mut WebSocketStream<S>, ticker: &str, price: f64) -> usize
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut snapshots = 0;
    loop {
        let msg = next_json(ws).await;
        if msg["type"] == "snapshot" {
            snapshots += 1;
        }
        if price_of(&msg, ticker) == Some(price) {
            return snapshots;
        }
    }
}
