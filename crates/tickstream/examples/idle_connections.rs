//! Opens N sessions with one idle WebSocket each and holds them, so the server's memory per
//! idle connection can be read from outside (`ps -o rss`). A stopgap until `tickstream load`.
//!
//! `cargo run --release --example idle_connections -- 127.0.0.1:8080 10000 30`
//! (address, connections, seconds to hold)

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:8080".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let hold: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(30);
    let http = reqwest::Client::new();
    let tickers = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL"];
    let mut sockets = Vec::with_capacity(n);
    let mut pending = FuturesUnordered::new();
    let mut started = 0;
    while sockets.len() < n {
        while started < n && pending.len() < 128 {
            started += 1;
            let (http, addr) = (http.clone(), addr.clone());
            pending.push(async move {
                let body = serde_json::json!({ "tickers": tickers });
                let created: serde_json::Value = http
                    .post(format!("http://{addr}/api/v1/sessions"))
                    .json(&body)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let id = created["session_id"].as_str()?.to_owned();
                let (mut ws, _) =
                    tokio_tungstenite::connect_async(format!("ws://{addr}/ws?session_id={id}")).await.ok()?;
                ws.next().await?.ok()?;
                Some(ws)
            });
        }
        match pending.next().await {
            Some(Some(ws)) => sockets.push(ws),
            Some(None) => eprintln!("a connection failed"),
            None => break,
        }
    }
    println!("holding {} idle connections for {hold} s", sockets.len());
    // Keep reading so pings are answered; nothing else arrives without a feed.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
        .collect();
    tokio::time::sleep(Duration::from_secs(hold)).await;
    for r in readers {
        r.abort();
    }
    println!("done");
}
