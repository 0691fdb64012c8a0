//! Opens N sessions with one idle WebSocket each and holds them, so the server's memory per
//! idle connection can be read from outside (`ps -o rss`). A stopgap until `tickstream load`.
//!
//! `cargo run --release --example idle_connections -- 127.0.0.1:8080 10000 30 [AAPL,MSFT|random:5]`
//! (address, connections, seconds to hold, tickers per session: a list shared by every session,
//! or `random:K` from the first 500 of the simulated universe). With a feed running it also
//! prints the client-side latency (`now - ts`) of the updates it received.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:8080".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let hold: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(30);
    // `random:K`: each session watches K tickers drawn from the first 500 of the simulated
    // universe (spread fan-out); a comma list: every session watches the same tickers.
    let spec = args.get(4).cloned().unwrap_or_else(|| "AAPL,MSFT,NVDA,AMZN,GOOGL".into());
    let universe: Vec<String> = tickstream_feed::universe(500).iter().map(|t| t.to_string()).collect();
    let pick = move || -> Vec<String> {
        match spec.strip_prefix("random:").and_then(|k| k.parse::<usize>().ok()) {
            Some(k) => rand::seq::index::sample(&mut rand::rng(), universe.len(), k)
                .into_iter()
                .map(|i| universe[i].clone())
                .collect(),
            None => spec.split(',').map(str::to_owned).collect(),
        }
    };
    let http = reqwest::Client::new();
    let mut sockets = Vec::with_capacity(n);
    let mut pending = FuturesUnordered::new();
    let mut started = 0;
    while sockets.len() < n {
        while started < n && pending.len() < 128 {
            started += 1;
            let (http, addr, tickers) = (http.clone(), addr.clone(), pick());
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
    // Keep reading so pings are answered; with a feed running, also record `now - ts` per update.
    let latencies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let latencies = latencies.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
                        let now = tickstream_api::now_ms();
                        let mut found = Vec::new();
                        for part in text.split("\"ts\":").skip(1) {
                            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
                            if let Ok(ts) = digits.parse::<u64>() {
                                found.push(now.saturating_sub(ts));
                            }
                        }
                        latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(found);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(hold)).await;
    for r in readers {
        r.abort();
    }
    let mut l = latencies.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    l.sort_unstable();
    if !l.is_empty() {
        let q = |p: f64| l[((l.len() - 1) as f64 * p) as usize];
        println!(
            "client-side latency over {} updates: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            l.len(),
            q(0.5),
            q(0.9),
            q(0.99),
            l[l.len() - 1]
        );
    }
    println!("done");
}
