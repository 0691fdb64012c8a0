//! Quotes and statuses end to end, against real nodes: a quote round-trips unchanged through
//! REST, Redis `PUBLISH` and the gRPC link; bad quotes and statuses are refused with their codes;
//! a record replaces the previous one whole; a quiet ticker turns `stale` within
//! `--stale-after` plus the sweep interval and `live` on its next update; halts reach every
//! watcher on one node and across nodes.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use common::cluster::{EdgeNode, EngineNode, Redis};
use common::{WAIT, eventually, next_json, server};

/// Every field of the tick schema.
fn full_quote(ticker: &str, price: f64) -> Value {
    json!({
        "ticker": ticker, "price": price, "ts": tickstream_api::now_ms(),
        "bid": price - 0.05, "ask": price + 0.05, "bid_size": 300.0, "ask_size": 200.0,
        "size": 100.0, "volume": 1_250_000.0, "open": 187.5, "high": 190.25, "low": 186.75,
        "prev_close": 188.0,
    })
}

/// Reads until a `type` message that mentions `ticker`; returns it.
async fn until<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, kind: &str, ticker: &str) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let field = if kind == "status" { "statuses" } else { "prices" };
    loop {
        let msg = next_json(ws).await;
        if msg["type"] == kind
            && let Some(item) = msg[field].as_array().and_then(|a| a.iter().find(|p| p["ticker"] == ticker))
        {
            return item.clone();
        }
    }
}

async fn status_of<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, ticker: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    until(ws, "status", ticker).await["status"].as_str().expect("status").to_owned()
}

#[tokio::test]
async fn quotes_round_trip_through_rest_and_replace_the_previous_record_whole() {
    let s = server(&[]).await;
    let sent = full_quote("AAPL", 189.25);
    assert_eq!(s.post("/api/v1/prices", sent.clone()).await.0, StatusCode::ACCEPTED);
    let id = s.create(&["AAPL"]).await;
    let (mut ws, snapshot) = s.ws(&id).await;
    assert_eq!(snapshot["prices"][0], sent, "every field, unchanged, and nothing else");
    // A partial record: fields it leaves out are gone from the ticker's latest record.
    let partial = json!({"ticker": "AAPL", "price": 189.5, "ts": tickstream_api::now_ms(), "bid": 189.4});
    assert_eq!(s.post("/api/v1/prices", partial.clone()).await.0, StatusCode::ACCEPTED);
    assert_eq!(until(&mut ws, "prices", "AAPL").await, partial);
    let (_, again) = s.ws(&s.create(&["AAPL"]).await).await;
    assert_eq!(again["prices"][0], partial, "the cache holds the same whole record");
    assert!(!again.to_string().contains("null"), "no nulls on the wire");
}

#[tokio::test]
async fn bad_quotes_and_statuses_are_refused_with_specific_codes() {
    let s = server(&[]).await;
    let refused = async |path: &str, body: Value| {
        let (status, body) = s.post(path, body).await;
        (status.as_u16(), body["error"]["code"].as_str().unwrap_or_default().to_owned())
    };
    let p = "/api/v1/prices";
    for (body, code) in [
        (json!({"ticker": "A", "price": 1.0, "bid": -0.01}), "invalid_quote"),
        (json!({"ticker": "A", "price": 1.0, "volume": -5.0}), "invalid_quote"),
        (json!({"ticker": "A", "price": 1.0, "bid": 2.0, "ask": 1.0}), "crossed_quote"),
        (json!({"ticker": "A", "price": 1.0, "status": "stale"}), "invalid_status"),
        (json!({"ticker": "A", "price": 1.0, "bidd": 1.0}), "invalid_request"),
        (json!({"ticker": "A", "price": 1.0, "ask": "1.0"}), "invalid_request"),
    ] {
        assert_eq!(refused(p, body.clone()).await, (400, code.to_owned()), "{body}");
    }
    // A batch is refused whole: the good first item is not published either.
    let batch =
        json!([{"ticker": "GOOD", "price": 1.0}, {"ticker": "A", "price": 1.0, "bid": 3.0, "ask": 2.0}]);
    assert_eq!(refused(p, batch).await.1, "crossed_quote");
    let st = "/api/v1/status";
    assert_eq!(refused(st, json!({"ticker": "NOPE", "status": "halted"})).await, (409, "no_price".into()));
    assert_eq!(refused(st, json!({"ticker": "A", "status": "live"})).await, (400, "invalid_status".into()));
    assert_eq!(refused(st, json!({"ticker": "A"})).await, (400, "invalid_request".into()));
    assert_eq!(refused(st, json!([])).await, (400, "invalid_request".into()));
    assert_eq!(
        refused(st, json!({"ticker": "no way", "status": "halted"})).await,
        (400, "invalid_ticker".into())
    );
    let (_, v) = s.get("/api/v1/tickers").await;
    assert_eq!(v["tickers"], json!([]), "nothing was published by the refused requests");
}

#[tokio::test]
async fn a_quiet_ticker_turns_stale_within_stale_after_plus_the_sweep_and_live_on_its_next_update() {
    let stale_after = Duration::from_millis(400);
    let s = server(&["--stale-after", "400ms"]).await;
    s.publish(&[("Q", 1.0)]).await;
    let (mut ws, _) = s.ws(&s.create(&["Q"]).await).await;
    let started = Instant::now();
    let stale = until(&mut ws, "status", "Q").await;
    let waited = started.elapsed();
    assert_eq!(stale["status"], "stale", "{stale}");
    // Counted from when the node started watching Q (just before the snapshot); one sweep
    // every 40 ms, plus scheduling slack on a loaded machine.
    assert!(waited <= stale_after + Duration::from_millis(40 + 250), "stale after {waited:?}");
    assert!(waited >= stale_after - Duration::from_millis(60), "too early: {waited:?}");
    assert!(stale["ts"].as_u64().is_some());
    s.publish(&[("Q", 2.0)]).await;
    assert_eq!(status_of(&mut ws, "Q").await, "live");
    // The snapshot of a new session says the status of each ticker that is not live.
    tokio::time::sleep(stale_after * 2).await;
    let (mut other, snapshot) = s.ws(&s.create(&["Q"]).await).await;
    assert_eq!(snapshot["prices"][0]["price"], 2.0);
    let after = next_json(&mut other).await;
    assert_eq!(after["type"], "status", "right after the snapshot: {after}");
    assert_eq!(
        after["statuses"],
        json!([{"ticker": "Q", "status": "stale", "ts": after["statuses"][0]["ts"]}])
    );
    assert_eq!(after["seq"], 2, "status messages are numbered with the data messages");
}

#[tokio::test]
async fn a_halt_reaches_every_watcher_on_one_node() {
    let s = server(&[]).await;
    s.publish(&[("H", 5.0)]).await;
    let mut watchers = Vec::new();
    for _ in 0..3 {
        watchers.push(s.ws(&s.create(&["H", "OTHER"]).await).await.0);
    }
    let (status, body) = s
        .post(
            "/api/v1/status",
            json!([{"ticker": "H", "status": "halted"}, {"ticker": "OTHER", "status": "halted"}]),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body, json!({"accepted": 1, "no_price": ["OTHER"]}));
    for ws in &mut watchers {
        assert_eq!(status_of(ws, "H").await, "halted");
        let record = until(ws, "prices", "H").await;
        assert_eq!((record["price"].as_f64(), record["status"].as_str()), (Some(5.0), Some("halted")));
    }
    assert_eq!(
        s.post("/api/v1/status", json!({"ticker": "H", "status": "resumed"})).await.0,
        StatusCode::ACCEPTED
    );
    for ws in &mut watchers {
        assert_eq!(status_of(ws, "H").await, "resumed");
    }
}

/// Two `serve` nodes on one Redis: a halt published on one reaches watchers on the other, and a
/// producer's raw `PUBLISH` with a quote and a status arrives field for field.
#[tokio::test]
async fn halts_and_quotes_cross_nodes_through_redis() {
    let redis = Redis::start().await;
    let a = EdgeNode::serve(&redis, &[]);
    let b = EdgeNode::serve(&redis, &[]);
    a.publish(&[("X", 10.0)]).await;
    let (mut on_b, snapshot) = b.ws(&b.create(&["X", "RAW"]).await).await;
    assert_eq!(snapshot["prices"][0]["price"], 10.0);
    assert_eq!(
        a.post("/api/v1/status", json!({"ticker": "X", "status": "halted"})).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(status_of(&mut on_b, "X").await, "halted");
    // A late watcher on B learns the halt from the record in the shared cache.
    let (mut late, snapshot) = b.ws(&b.create(&["X"]).await).await;
    assert_eq!(snapshot["prices"][0]["status"], "halted", "{snapshot}");
    assert_eq!(status_of(&mut late, "X").await, "halted");
    let mut raw = full_quote("RAW", 42.0);
    raw["status"] = json!("resumed");
    redis.publish("RAW", &raw.to_string()).await;
    let got = until(&mut on_b, "prices", "RAW").await;
    assert_eq!(got, raw, "a producer's record, field for field");
}

/// Through the gRPC link (gateway → engine): a quote published on the gateway and a halt
/// published on Redis reach the gateway's socket unchanged, and so do a resume and a halt
/// `POST`ed to the gateway (`PublishStatus`).
#[tokio::test]
async fn quotes_and_statuses_cross_the_grpc_link() {
    let redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &[]);
    let gw = EdgeNode::gateway(&[&engine], &[]);
    eventually(WAIT, "gateway ready", async || gw.get("/healthz").await.0, |&s| s == StatusCode::OK).await;
    let sent = full_quote("G", 77.0);
    assert_eq!(gw.post("/api/v1/prices", sent.clone()).await.0, StatusCode::ACCEPTED);
    let (mut ws, snapshot) = gw.ws(&gw.create(&["G"]).await).await;
    assert_eq!(snapshot["prices"][0], sent);
    let mut halted = full_quote("G", 77.5);
    halted["status"] = json!("halted");
    redis.publish("G", &halted.to_string()).await;
    assert_eq!(status_of(&mut ws, "G").await, "halted");
    assert_eq!(until(&mut ws, "prices", "G").await, halted);
    let (status, body) = gw
        .post(
            "/api/v1/status",
            json!([{"ticker": "G", "status": "resumed"}, {"ticker": "NONE", "status": "halted"}]),
        )
        .await;
    assert_eq!((status, &body), (StatusCode::ACCEPTED, &json!({"accepted": 1, "no_price": ["NONE"]})));
    assert_eq!(status_of(&mut ws, "G").await, "resumed");
    let (status, body) = gw.post("/api/v1/status", json!({"ticker": "G", "status": "halted"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(status_of(&mut ws, "G").await, "halted");
    // The record carries it too (which price is the store's last value: a raw Redis `PUBLISH`
    // does not write it).
    assert_eq!(until(&mut ws, "prices", "G").await["status"], "halted");
    let refused = gw.post("/api/v1/status", json!({"ticker": "NONE", "status": "halted"})).await;
    assert_eq!((refused.0.as_u16(), refused.1["error"]["code"].as_str()), (409, Some("no_price")));
}
