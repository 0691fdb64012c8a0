//! Both user flows and the whole REST + WebSocket contract, against a real server.

mod common;

use std::time::Duration;

use common::{IDLE, close_code, next_json, send_text, server, tickers_of};
use futures::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

#[tokio::test]
async fn both_flows_snapshot_then_live_prices() {
    let s = server(&[]).await;
    s.publish(&[("AAPL", 189.25)]).await;
    let (status, created) = s.post("/api/v1/sessions", json!({"tickers": ["aapl", "MSFT", "AAPL"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["tickers"], json!(["AAPL", "MSFT"]));
    assert_eq!(created["expires_in_s"], 60);
    let id = created["session_id"].as_str().unwrap();
    assert_eq!(id.len(), 32, "128 bits as hex");

    let (status, info) = s.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["state"], "pending");
    assert_eq!(info["tickers"], json!(["AAPL", "MSFT"]));
    assert!(info["created_at"].as_str().unwrap().ends_with('Z'));

    let (mut ws, snapshot) = s.ws(id).await;
    assert_eq!(snapshot["seq"], 1);
    assert_eq!(
        snapshot["prices"],
        json!([{"ticker": "AAPL", "price": 189.25, "ts": snapshot["prices"][0]["ts"]}])
    );
    assert_eq!(s.get(&format!("/api/v1/sessions/{id}")).await.1["state"], "streaming");

    let (status, _) =
        s.post("/api/v1/prices", json!({"ticker": "MSFT", "price": 420.5, "ts": 1_764_230_400_123u64})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let live = next_json(&mut ws).await;
    assert_eq!(
        live,
        json!({"type": "prices", "seq": 2, "prices": [{"ticker": "MSFT", "price": 420.5, "ts": 1_764_230_400_123u64}]})
    );

    // ts defaults to the server's clock.
    s.publish(&[("AAPL", 190.0)]).await;
    let live = next_json(&mut ws).await;
    let ts = live["prices"][0]["ts"].as_u64().unwrap();
    assert!(ts.abs_diff(tickstream_api::now_ms()) < 10_000);
    assert_eq!(live["seq"], 3);

    ws.close(None).await.unwrap();
    assert_eq!(s.counter("tickstream_updates_delivered_total").await, 3);
    assert_eq!(s.get(&format!("/api/v1/sessions/{id}")).await.1["state"], "detached");
}

#[tokio::test]
async fn a_price_reaches_every_watcher_and_no_other() {
    let s = server(&[]).await;
    let a = s.create(&["AAPL"]).await;
    let b = s.create(&["AAPL", "MSFT"]).await;
    let c = s.create(&["MSFT"]).await;
    let (mut wa, _) = s.ws(&a).await;
    let (mut wb, _) = s.ws(&b).await;
    let (mut wc, _) = s.ws(&c).await;
    s.publish(&[("MSFT", 1.0)]).await;
    s.publish(&[("AAPL", 2.0)]).await;
    // Had MSFT leaked to A, it would arrive before AAPL.
    assert_eq!(tickers_of(&next_json(&mut wa).await), ["AAPL"]);
    assert_eq!(tickers_of(&next_json(&mut wc).await), ["MSFT"]);
    let mut seen_b = tickers_of(&next_json(&mut wb).await);
    if seen_b.len() == 1 {
        seen_b.extend(tickers_of(&next_json(&mut wb).await));
    }
    seen_b.sort();
    assert_eq!(seen_b, ["AAPL", "MSFT"]);
    s.publish(&[("MSFT", 3.0)]).await;
    assert_eq!(next_json(&mut wc).await["prices"][0]["price"], 3.0, "C never saw AAPL");
}

#[tokio::test]
async fn subscribe_and_unsubscribe_on_the_fly() {
    let s = server(&[]).await;
    s.publish(&[("GOOG", 150.0)]).await;
    let id = s.create(&["AAPL"]).await;
    let (mut ws, _) = s.ws(&id).await;
    send_text(&mut ws, r#"{"type":"subscribe","tickers":["goog","NVDA"]}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"type": "subscribed", "tickers": ["AAPL", "GOOG", "NVDA"]}));
    let snap = next_json(&mut ws).await;
    assert_eq!((snap["type"].as_str(), snap["seq"].as_u64()), (Some("snapshot"), Some(2)));
    assert_eq!(tickers_of(&snap), ["GOOG"]);
    assert_eq!(s.gauges().await.broker_subscriptions, 3);

    send_text(&mut ws, r#"{"type":"unsubscribe","tickers":["AAPL"]}"#).await;
    assert_eq!(next_json(&mut ws).await["tickers"], json!(["GOOG", "NVDA"]));
    assert_eq!(s.gauges().await.broker_subscriptions, 2);
    s.publish(&[("AAPL", 1.0)]).await;
    s.publish(&[("NVDA", 2.0)]).await;
    assert_eq!(tickers_of(&next_json(&mut ws).await), ["NVDA"]);
    assert_eq!(s.get(&format!("/api/v1/sessions/{id}")).await.1["tickers"], json!(["GOOG", "NVDA"]));

    let too_many: Vec<String> = (0..101).map(|i| format!("T{i}")).collect();
    send_text(&mut ws, &json!({"type": "subscribe", "tickers": too_many}).to_string()).await;
    assert_eq!(next_json(&mut ws).await["code"], "too_many_tickers");
}

#[tokio::test]
async fn a_second_connection_replaces_the_first_with_4409() {
    let s = server(&[]).await;
    let id = s.create(&["AAPL"]).await;
    let (mut old, _) = s.ws(&id).await;
    let (mut new, _) = s.ws(&id).await;
    assert_eq!(close_code(&mut old).await, 4409);
    s.publish(&[("AAPL", 5.0)]).await;
    assert_eq!(next_json(&mut new).await["prices"][0]["price"], 5.0);
    s.wait_for(common::Gauges { ws_connections: 1, sessions: 1, broker_subscriptions: 1, tasks: 2 }).await;
    assert_eq!(s.counter("tickstream_ws_disconnects_total{code=\"4409\"}").await, 1);
}

#[tokio::test]
async fn delete_closes_the_socket_with_4404() {
    let s = server(&[]).await;
    let id = s.create(&["AAPL"]).await;
    let (mut ws, _) = s.ws(&id).await;
    assert_eq!(s.delete(&format!("/api/v1/sessions/{id}")).await, StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut ws).await, 4404);
    assert_eq!(s.delete(&format!("/api/v1/sessions/{id}")).await, StatusCode::NOT_FOUND);
    let (status, body) = s.get(&format!("/api/v1/sessions/{id}")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("session_not_found")));
    s.wait_for(IDLE).await;
}

#[tokio::test]
async fn bad_rest_input_gets_specific_json_errors() {
    let s = server(&["--max-tickers-per-session", "3"]).await;
    let long: Vec<String> = (0..20_000).map(|i| format!("T{i}")).collect();
    /// method, path, content type, body, expected status, expected error code
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, String, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/api/v1/sessions",
            Some("application/json"),
            r#"{"tickers":[]}"#.into(),
            400,
            "empty_tickers",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Some("application/json"),
            r#"{"tickers":["A","B","C","D"]}"#.into(),
            400,
            "too_many_tickers",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Some("application/json"),
            r#"{"tickers":["AAPL","no way"]}"#.into(),
            400,
            "invalid_ticker",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Some("application/json"),
            r#"{"tickers":["ABCDEFGHIJKLM"]}"#.into(),
            400,
            "invalid_ticker",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Some("application/json"),
            r#"{"tickers":["A"],"max_rate_hz":0}"#.into(),
            400,
            "invalid_max_rate",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Some("application/json"),
            r#"{"tickers":"AAPL"}"#.into(),
            400,
            "invalid_request",
        ),
        ("POST", "/api/v1/sessions", Some("application/json"), r#"{}"#.into(), 400, "invalid_request"),
        (
            "POST",
            "/api/v1/sessions",
            Some("application/json"),
            r#"{"tickers":["A"]"#.into(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/sessions",
            Some("text/plain"),
            r#"{"tickers":["A"]}"#.into(),
            415,
            "unsupported_media_type",
        ),
        ("POST", "/api/v1/sessions", None, r#"{"tickers":["A"]}"#.into(), 415, "unsupported_media_type"),
        (
            "POST",
            "/api/v1/sessions",
            Some("application/json"),
            json!({"tickers": long}).to_string(),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/prices",
            Some("application/json"),
            r#"{"ticker":"AAPL","price":-1}"#.into(),
            400,
            "invalid_price",
        ),
        (
            "POST",
            "/api/v1/prices",
            Some("application/json"),
            r#"{"ticker":"AAPL","price":0}"#.into(),
            400,
            "invalid_price",
        ),
        (
            "POST",
            "/api/v1/prices",
            Some("application/json"),
            r#"{"ticker":"AAPL","price":1e999}"#.into(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/v1/prices",
            Some("application/json"),
            r#"{"ticker":"AAPL","price":"1"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/v1/prices",
            Some("application/json"),
            r#"[{"ticker":"AAPL","price":1},{"ticker":"A B","price":1}]"#.into(),
            400,
            "invalid_ticker",
        ),
        ("POST", "/api/v1/prices", Some("application/json"), r#"[]"#.into(), 400, "empty_prices"),
        ("POST", "/api/v1/prices", Some("application/json"), r#"42"#.into(), 400, "invalid_request"),
        (
            "GET",
            "/api/v1/sessions/0123456789abcdef0123456789abcdef",
            None,
            String::new(),
            404,
            "session_not_found",
        ),
        ("GET", "/api/v1/sessions/not-an-id", None, String::new(), 404, "session_not_found"),
        ("DELETE", "/api/v1/sessions/not-an-id", None, String::new(), 404, "session_not_found"),
        ("GET", "/nope", None, String::new(), 404, "not_found"),
        ("GET", "/api/v1/nope", None, String::new(), 404, "not_found"),
        ("PUT", "/api/v1/sessions", None, String::new(), 405, "method_not_allowed"),
        ("GET", "/api/v1/prices", None, String::new(), 405, "method_not_allowed"),
        ("POST", "/healthz", None, String::new(), 405, "method_not_allowed"),
        ("GET", "/ws", None, String::new(), 400, "missing_session_id"),
    ];
    for (method, path, ctype, body, status, code) in cases {
        let mut req = s.http.request(method.parse().unwrap(), s.url(path)).body(body.clone());
        if let Some(ct) = ctype {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        let got_status = resp.status().as_u16();
        let got: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (got_status, got["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {}: {got}",
            body.chars().take(60).collect::<String>()
        );
        assert!(got["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // A rejected batch publishes nothing.
    assert_eq!(s.counter("tickstream_updates_published_total").await, 0);
    let (status, body) = s.get("/healthz").await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn bad_websocket_input() {
    let s = server(&[]).await;
    // Unknown session: refused before upgrading, with the JSON error.
    let err = s.try_connect("0123456789abcdef0123456789abcdef").await.unwrap_err();
    let tungstenite::Error::Http(resp) = err else { panic!("expected HTTP refusal, got {err}") };
    assert_eq!(resp.status(), 404);
    let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "session_not_found");
    // A plain GET on /ws is no handshake.
    let id = s.create(&["AAPL"]).await;
    let plain = s.http.get(s.url(&format!("/ws?session_id={id}"))).send().await.unwrap();
    assert!(plain.status().is_client_error());
    assert_eq!(plain.json::<Value>().await.unwrap()["error"]["code"], "websocket_upgrade_required");

    // Malformed and unknown messages: an error message, and the socket stays open.
    let (mut ws, _) = s.ws(&id).await;
    for (text, code) in [
        ("{oops", "invalid_json"),
        (r#"{"type":"nap"}"#, "unknown_type"),
        (r#"{"tickers":[]}"#, "invalid_message"),
    ] {
        send_text(&mut ws, text).await;
        let e = next_json(&mut ws).await;
        assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some(code)));
    }
    send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    // Over 4 KiB: 1009.
    send_text(&mut ws, &"x".repeat(5000)).await;
    assert_eq!(close_code(&mut ws).await, 1009);
    // Binary: 1003.
    let (mut ws, _) = s.ws(&id).await;
    ws.send(Message::Binary(vec![0u8; 8].into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1003);
    s.wait_for(common::Gauges { sessions: 1, broker_subscriptions: 1, ..IDLE }).await;
}

#[tokio::test]
async fn max_rate_hz_caps_messages_per_second() {
    let s = server(&[]).await;
    let (status, body) = s.post("/api/v1/sessions", json!({"tickers": ["AAPL"], "max_rate_hz": 5})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["max_rate_hz"], 5.0);
    let (mut ws, _) = s.ws(body["session_id"].as_str().unwrap()).await;
    let publisher = {
        let http = s.http.clone();
        let url = s.url("/api/v1/prices");
        tokio::spawn(async move {
            for i in 1..=60 {
                let body = json!({"ticker": "AAPL", "price": f64::from(i)});
                http.post(&url).json(&body).send().await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let start = tokio::time::Instant::now();
    let mut messages = 0;
    let mut last_price = 0.0;
    while last_price < 60.0 {
        let m = next_json(&mut ws).await;
        messages += 1;
        last_price = m["prices"][0]["price"].as_f64().unwrap();
    }
    publisher.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    // 60 updates over >= 1.2 s reach the client in at most 5 messages per second (+1 for the
    // first, which leaves at once), and the last price always arrives.
    assert!(f64::from(messages) <= secs * 5.0 + 1.5, "{messages} messages in {secs:.2} s");
    assert!(messages >= 3, "conflated, not starved: {messages}");
}

#[tokio::test]
async fn tickers_lists_the_symbols_that_have_a_price_sorted() {
    let s = server(&[]).await;
    let (status, body) = s.get("/api/v1/tickers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"tickers": [], "truncated": false}), "a --no-feed node knows no prices yet");
    s.publish(&[("MSFT", 420.5), ("AAPL", 189.25), ("BRK.B", 410.0)]).await;
    let (status, body) = s.get("/api/v1/tickers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"tickers": ["AAPL", "BRK.B", "MSFT"], "truncated": false}));
    let r = s.http.post(s.url("/api/v1/tickers")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_price_board_is_served_at_root_self_contained() {
    let s = server(&[]).await;
    let r = s.http.get(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.starts_with("<!doctype html>"), "{}", &page[..40]);
    // Works offline: nothing is fetched from elsewhere, and no file besides the page itself.
    for external in ["http://", "https://", "//cdn", " src=", "<link rel=\"stylesheet\""] {
        assert!(!page.contains(external), "the page references {external:?}");
    }
    // It speaks the documented API.
    for route in ["/api/v1/sessions", "/api/v1/tickers", "/ws?session_id="] {
        assert!(page.contains(route), "the page does not use {route}");
    }
    let r = s.http.head(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s.http.post(s.url("/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}
