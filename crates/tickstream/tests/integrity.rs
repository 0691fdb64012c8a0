//! Price integrity and Redis input, against the real binary and a real `redis-server`: the `ts`
//! window and unknown fields on the REST API, newest-wins across two racing nodes, invalid
//! session records and forged control messages refused without a panic, and a price written
//! while a node was not subscribed (Redis restarting) still reaching its open socket.

mod common;

use std::time::Duration;

use common::cluster::{EdgeNode, Redis, eventually, metric};
use common::{next_json, server};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn now() -> u64 {
    tickstream_api::now_ms()
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = http.post(format!("{base}{path}")).json(&body).send().await.expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ready(http: &reqwest::Client, node: &EdgeNode) {
    eventually("node ready", || async {
        http.get(format!("{}/healthz", node.base)).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

async fn create(http: &reqwest::Client, node: &EdgeNode, tickers: &[&str]) -> String {
    let (status, body) = post(http, &node.base, "/api/v1/sessions", json!({ "tickers": tickers })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["session_id"].as_str().expect("id").to_owned()
}

async fn connect(node: &EdgeNode, id: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url(id)).await.expect("ws connects");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    ws
}

/// Reads until a message carries `ticker` at `price`; returns every `ts` of `ticker` seen.
async fn until_price(ws: &mut Ws, ticker: &str, price: f64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let msg = next_json(ws).await;
        for p in msg["prices"].as_array().into_iter().flatten().filter(|p| p["ticker"] == ticker) {
            seen.push(p["ts"].as_u64().expect("ts"));
            if p["price"].as_f64() == Some(price) {
                return seen;
            }
        }
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn rest_refuses_bad_ts_unknown_fields_and_punctuation_symbols() {
    let s = server(&[]).await;
    let (status, body) = s.post("/api/v1/prices", json!({"ticker": "A", "price": 1, "ts": u64::MAX})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_ts"), "{body}");
    let (status, body) =
        s.post("/api/v1/prices", json!({"ticker": "A", "price": 1, "ts": now() + 60_000})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_ts"));
    let (status, body) = s.post("/api/v1/prices", json!({"ticker": "A", "price": 1, "ts": 1})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_ts"));
    let (status, body) = s.post("/api/v1/prices", json!({"ticker": "A", "price": 1, "tss": 1})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"), "{body}");
    let (status, body) = s.post("/api/v1/sessions", json!({"tickers": ["A"], "max_rate": 1})).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_request"), "{body}");
    for junk in ["---", "."] {
        let (status, body) = s.post("/api/v1/prices", json!({"ticker": junk, "price": 1})).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_ticker"), "{junk}");
        let (status, body) = s.post("/api/v1/sessions", json!({"tickers": [junk]})).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "invalid_ticker"), "{junk}");
    }
    // An older ts never replaces a newer price (in-memory broker).
    let t = now();
    let (status, _) = s.post("/api/v1/prices", json!({"ticker": "A", "price": 2, "ts": t})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = s.post("/api/v1/prices", json!({"ticker": "A", "price": 1, "ts": t - 1000})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "accepted, then dropped as stale");
    assert_eq!(s.counter("tickstream_updates_stale_total").await, 1);
    let id = s.create(&["A"]).await;
    let (_ws, snapshot) = s.ws(&id).await;
    assert_eq!(snapshot["prices"], json!([{"ticker": "A", "price": 2.0, "ts": t}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_never_leave_an_older_price() {
    let redis = Redis::start().await;
    let (a, b) = (EdgeNode::serve(&redis, &[]), EdgeNode::serve(&redis, &[]));
    let http = reqwest::Client::new();
    ready(&http, &a).await;
    ready(&http, &b).await;
    let id = create(&http, &a, &["RACE"]).await;
    let mut ws = connect(&a, &id).await;
    let base = now();
    // Two writers, each sending its ts in a shuffled order, one node each.
    let writer = |node: String, offsets: Vec<u64>| {
        let http = http.clone();
        tokio::spawn(async move {
            for off in offsets {
                let body = json!({"ticker": "RACE", "price": 1.0 + off as f64, "ts": base + off});
                let r = http.post(format!("{node}/api/v1/prices")).json(&body).send().await.expect("post");
                assert_eq!(r.status(), StatusCode::ACCEPTED);
            }
        })
    };
    let mut evens: Vec<u64> = (0..200).step_by(2).collect();
    let mut odds: Vec<u64> = (1..200).step_by(2).collect();
    evens.reverse();
    odds.rotate_left(50);
    let (wa, wb) = (writer(a.base.clone(), evens), writer(b.base.clone(), odds));
    wa.await.expect("writer a");
    wb.await.expect("writer b");
    // The cache holds the newest, whatever order the writes landed in.
    let cached: String = redis::cmd("HGET")
        .arg("tickstream:last")
        .arg("RACE")
        .query_async(&mut redis.conn().await)
        .await
        .expect("HGET");
    let cached: Value = serde_json::from_str(&cached).expect("json");
    assert_eq!(cached["ts"], base + 199);
    // The socket sees ts only go up, and ends on the newest.
    let seen = until_price(&mut ws, "RACE", 200.0).await;
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ts went back: {seen:?}");
    let stale = metric(&a.base, "tickstream_updates_stale_total").await
        + metric(&b.base, "tickstream_updates_stale_total").await;
    let published = metric(&a.base, "tickstream_updates_published_total").await
        + metric(&b.base, "tickstream_updates_published_total").await;
    assert!(stale > 0, "the shuffled orders must have produced stale ticks");
    assert_eq!(stale + published, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_records_and_forged_control_messages_are_refused() {
    let redis = Redis::start().await;
    let dir = std::env::temp_dir().join(format!("tickstream-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret = dir.join("cluster.secret");
    std::fs::write(&secret, "correct horse battery staple\n").expect("secret");
    let secret = secret.to_str().expect("utf-8");
    let (a, b) = (
        EdgeNode::serve(&redis, &["--cluster-secret-file", secret]),
        EdgeNode::serve(&redis, &["--cluster-secret-file", secret]),
    );
    let http = reqwest::Client::new();
    ready(&http, &a).await;
    ready(&http, &b).await;
    let mut conn = redis.conn().await;

    // Records written by someone else: a rate that once panicked attach, and 5,000 tickers.
    let many: Vec<String> = (0..5000).map(|i| format!("T{i}")).collect();
    let records = [
        json!({"tickers": ["A"], "created_at_ms": 1, "state": "pending", "max_rate_hz": 1e-300}),
        json!({"tickers": many, "created_at_ms": 1, "state": "pending"}),
    ];
    for record in records {
        let id = format!("{:032x}", rand::random::<u128>());
        let _: () = redis::cmd("SET")
            .arg(format!("tickstream:session:{id}"))
            .arg(record.to_string())
            .query_async(&mut conn)
            .await
            .expect("SET");
        let r = http.get(format!("{}/api/v1/sessions/{id}", a.base)).send().await.expect("get");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        // Attaching does not adopt it either (and does not panic the node).
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(a.ws_url(&id)).await {
            assert_ne!(next_json(&mut ws).await["type"], "snapshot");
        }
        ready(&http, &a).await;
    }

    // A streaming session on A; an unsigned "ended" for it is refused and counted.
    let id = create(&http, &a, &["CTL"]).await;
    let mut ws = connect(&a, &id).await;
    let invalid_before = metric(&a.base, "tickstream_broker_messages_total{kind=\"invalid\"}").await;
    for forged in [
        json!({"node": "intruder", "ended": id}).to_string(),
        format!("{}.{}", "0".repeat(64), json!({"node": "intruder", "ended": id})),
    ] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("tickstream:ctl")
            .arg(forged)
            .query_async(&mut conn)
            .await
            .expect("PUBLISH");
    }
    eventually("forged control messages counted", || async {
        metric(&a.base, "tickstream_broker_messages_total{kind=\"invalid\"}").await >= invalid_before + 2
    })
    .await;
    let t = now();
    let (status, _) =
        post(&http, &b.base, "/api/v1/prices", json!({"ticker": "CTL", "price": 7, "ts": t})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    until_price(&mut ws, "CTL", 7.0).await;
    // A signed one (B ends the session) still works.
    let r = http.delete(format!("{}/api/v1/sessions/{id}", b.base)).send().await.expect("delete");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(common::close_code(&mut ws).await, 4404);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_written_while_redis_restarts_reaches_the_open_socket() {
    let mut redis = Redis::start().await;
    let a = EdgeNode::serve(&redis, &[]);
    let http = reqwest::Client::new();
    ready(&http, &a).await;
    let id = create(&http, &a, &["MISS", "KEPT"]).await;
    let mut ws = connect(&a, &id).await;
    let t = now();
    let (status, _) =
        post(&http, &a.base, "/api/v1/prices", json!({"ticker": "KEPT", "price": 1, "ts": t})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    until_price(&mut ws, "KEPT", 1.0).await;

    redis.kill();
    // Long enough for the node's reconnect backoff to reach its cap.
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await;
    // Written into the cache while the node is (most likely) not subscribed yet; the PUBLISH
    // reaches it only if it already is. Either way the socket must get it.
    let tick = json!({"ticker": "MISS", "price": 2.5, "ts": now()}).to_string();
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("HSET")
        .arg("tickstream:last")
        .arg("MISS")
        .arg(&tick)
        .query_async(&mut conn)
        .await
        .expect("HSET");
    let _: i64 = redis::cmd("PUBLISH")
        .arg("tickstream:px:MISS")
        .arg(&tick)
        .query_async(&mut conn)
        .await
        .expect("PUBLISH");
    tokio::time::timeout(Duration::from_secs(10), until_price(&mut ws, "MISS", 2.5))
        .await
        .expect("the price written during the restart reached the socket");
    // And the node re-wrote the price it held into the empty cache.
    eventually("last price restored", || async {
        let v: Option<String> = redis::cmd("HGET")
            .arg("tickstream:last")
            .arg("KEPT")
            .query_async(&mut redis.conn().await)
            .await
            .unwrap_or(None);
        v.is_some_and(|v| v.contains(&format!("\"ts\":{t}")))
    })
    .await;
    assert_eq!(metric(&a.base, "tickstream_ws_disconnects_total").await, 0, "no socket closed");
}
