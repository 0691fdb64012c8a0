//! Test harness: a real `serve` node on an ephemeral port, a real HTTP client and a real
//! WebSocket client. Gauges are read by scraping `/metrics`, as an operator would.
#![allow(dead_code)]

pub mod cluster;
pub mod webdriver;

use std::time::Duration;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use tickstream::cli::ServeArgs;
use tickstream::serve::{self, Running};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running node plus clients for it.
pub struct Server {
    pub running: Running,
    pub base: String,
    pub http: reqwest::Client,
}

/// Starts `serve --listen 127.0.0.1:0 --no-feed` plus `extra` flags.
pub async fn server(extra: &[&str]) -> Server {
    let mut argv = vec!["serve", "--listen", "127.0.0.1:0", "--no-feed"];
    argv.extend_from_slice(extra);
    let args = ServeArgs::try_parse_from(argv).expect("valid test flags");
    let running = serve::start(&args).await.expect("server starts");
    let base = format!("http://{}", running.addr);
    Server { running, base, http: reqwest::Client::new() }
}

/// The gauges that must return to their baseline after every connection and session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub ws_connections: i64,
    pub sessions: i64,
    pub broker_subscriptions: i64,
    pub tasks: i64,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
        let (status, body) = self.post("/api/v1/sessions", serde_json::json!({ "tickers": tickers })).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["session_id"].as_str().expect("session_id").to_owned()
    }

    /// Publishes `(ticker, price)` pairs with one request.
    pub async fn publish(&self, prices: &[(&str, f64)]) {
        let body: Vec<Value> =
            prices.iter().map(|(t, p)| serde_json::json!({ "ticker": t, "price": p })).collect();
        let (status, resp) = self.post("/api/v1/prices", Value::Array(body)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{resp}");
    }

    pub fn ws_url(&self, id: &str) -> String {
        format!("ws://{}/ws?session_id={id}", self.running.addr)
    }

    /// Opens a WebSocket for a session and reads its snapshot.
    pub async fn ws(&self, id: &str) -> (Ws, Value) {
        let (mut ws, _) = tokio_tungstenite::connect_async(self.ws_url(id)).await.expect("ws connects");
        let snapshot = next_json(&mut ws).await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        (ws, snapshot)
    }

    pub async fn metrics_text(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text")
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

    /// Waits (up to 10 s) until the gauges equal `want`; fails with the last reading otherwise.
    pub async fn wait_for(&self, want: Gauges) {
        let mut last = self.gauges().await;
        for _ in 0..200 {
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            last = self.gauges().await;
        }
        panic!("gauges never reached {want:?}; last {last:?}");
    }

    pub async fn counter(&self, prefix: &str) -> i64 {
        metric_sum(&self.metrics_text().await, prefix)
    }
}

/// Sum of every sample whose line starts with `prefix` (labels included in the prefix if given).
pub fn metric_sum(text: &str, prefix: &str) -> i64 {
    text.lines()
        .filter(|l| {
            l.starts_with(prefix) && (prefix.ends_with('{') || l[prefix.len()..].starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

/// The baseline of an idle `--no-feed` node: only the sweeper task runs.
pub const IDLE: Gauges = Gauges { ws_connections: 0, sessions: 0, broker_subscriptions: 0, tasks: 1 };

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

/// One round of 1,000 distinct prices spread over `tickers` (round `round` ≥ 1), recorded in
/// `last` as the latest price of each ticker: the body of one `POST /api/v1/prices`.
pub fn price_round(
    tickers: &[String],
    round: u32,
    last: &mut std::collections::HashMap<String, f64>,
) -> Value {
    let batch: Vec<Value> = (0..1000u32)
        .map(|i| {
            let ticker = &tickers[i as usize % tickers.len()];
            let price = f64::from(round * 1000 + i + 1) / 100.0;
            last.insert(ticker.clone(), price);
            serde_json::json!({"ticker": ticker, "price": price})
        })
        .collect();
    Value::Array(batch)
}

/// Reads data messages until every ticker of `last` has been seen at its latest price (10 s
/// per message at most).
pub async fn read_until_latest<S>(ws: &mut WebSocketStream<S>, last: &std::collections::HashMap<String, f64>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut seen = std::collections::HashMap::new();
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

/// Publishes rounds (every 20 ms) until the server's writer for a stalled reader is blocked:
/// its sent-messages counter stays still for three rounds in a row. False if it never does.
pub async fn publish_until_writer_blocks(
    mut publish: impl AsyncFnMut(),
    sent: impl AsyncFn() -> i64,
) -> bool {
    let mut unchanged = 0;
    let mut before = sent().await;
    for _ in 0..500 {
        publish().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = sent().await;
        unchanged = if now == before { unchanged + 1 } else { 0 };
        before = now;
        if unchanged == 3 {
            return true;
        }
    }
    false
}
