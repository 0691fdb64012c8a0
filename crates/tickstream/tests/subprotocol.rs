//! The binary subprotocol `tickstream.v1.proto` against a real `serve`: negotiated in the
//! handshake (and echoed), every server message one `WsServerMessage` per binary frame with the
//! same content as the JSON socket of a twin session, client messages accepted as binary
//! protobuf or JSON text, and JSON still the default.

mod common;

use futures::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::Value;
use tickstream_proto as pb;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use common::{IDLE, Server, Ws, next_json, send_text, server};

/// What a message says, whatever its encoding (prices sorted by ticker).
#[derive(Debug, PartialEq)]
enum Content {
    Data { kind: String, seq: u64, prices: Vec<(String, f64, u64)> },
    Subscribed(Vec<String>),
    Error(String, String),
    Pong,
}

fn from_json(v: &Value) -> Content {
    match v["type"].as_str().expect("type") {
        "snapshot" | "prices" => {
            let mut prices: Vec<_> = v["prices"]
                .as_array()
                .expect("prices")
                .iter()
                .map(|p| {
                    (
                        p["ticker"].as_str().unwrap().to_owned(),
                        p["price"].as_f64().unwrap(),
                        p["ts"].as_u64().unwrap(),
                    )
                })
                .collect();
            prices.sort_by(|a, b| a.0.cmp(&b.0));
            Content::Data {
                kind: v["type"].as_str().unwrap().into(),
                seq: v["seq"].as_u64().unwrap(),
                prices,
            }
        }
        "subscribed" => Content::Subscribed(
            v["tickers"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect(),
        ),
        "error" => Content::Error(v["code"].as_str().unwrap().into(), v["message"].as_str().unwrap().into()),
        "pong" => Content::Pong,
        other => panic!("unexpected {other}"),
    }
}

fn from_binary(bytes: &[u8]) -> Content {
    use pb::ws_server_message::Message as M;
    let data = |kind: &str, d: pb::WsData| {
        let mut prices: Vec<_> = d.prices.into_iter().map(|p| (p.ticker, p.price, p.ts_ms)).collect();
        prices.sort_by(|a, b| a.0.cmp(&b.0));
        Content::Data { kind: kind.into(), seq: d.seq, prices }
    };
    match pb::WsServerMessage::decode(bytes).expect("a WsServerMessage").message.expect("one field set") {
        M::Snapshot(d) => data("snapshot", d),
        M::Prices(d) => data("prices", d),
        M::Subscribed(s) => Content::Subscribed(s.tickers),
        M::Error(e) => Content::Error(e.code, e.message),
        M::Pong(_) => Content::Pong,
        M::Authenticated(_) | M::Status(_) => panic!("no auth and no status here"),
    }
}

async fn binary_ws(s: &Server, id: &str, offer: &'static str) -> (Ws, Option<String>) {
    let mut req = s.ws_url(id).into_client_request().expect("request");
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(offer));
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("handshake");
    let chosen = resp.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
    (ws, chosen)
}

async fn next_binary(ws: &mut Ws) -> Content {
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("no error");
        match msg {
            Message::Binary(b) => return from_binary(&b),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

fn client_frame(m: pb::ws_client_message::Message) -> Message {
    Message::binary(pb::WsClientMessage { message: Some(m) }.encode_to_vec())
}

#[tokio::test]
async fn the_binary_stream_carries_what_the_json_stream_carries() {
    use pb::ws_client_message::Message as C;
    let s = server(&[]).await;
    s.publish(&[("AAPL", 1.25), ("MSFT", 300.5), ("NVDA", 7.0)]).await;
    let (json_id, bin_id) = (s.create(&["AAPL", "MSFT"]).await, s.create(&["AAPL", "MSFT"]).await);
    let (mut json, snapshot) = s.ws(&json_id).await;
    let (mut bin, chosen) = binary_ws(&s, &bin_id, "tickstream.v1.json, tickstream.v1.proto").await;
    assert_eq!(chosen.as_deref(), Some("tickstream.v1.proto"));
    assert_eq!(next_binary(&mut bin).await, from_json(&snapshot));

    // Live prices, one ticker per publish so both sessions see the same batches.
    for (i, (t, p)) in [("AAPL", 2.5), ("MSFT", 1e-9), ("AAPL", 123_456.789)].into_iter().enumerate() {
        s.publish(&[(t, p)]).await;
        let want = from_json(&next_json(&mut json).await);
        assert_eq!(next_binary(&mut bin).await, want, "round {i}");
    }

    // Requests: binary protobuf on one, JSON on the other; the same replies.
    send_text(&mut json, r#"{"type":"subscribe","tickers":["nvda"]}"#).await;
    let sub = C::Subscribe(pb::WsTickers { tickers: vec!["nvda".into()] });
    bin.send(client_frame(sub)).await.expect("send");
    for _ in 0..2 {
        // The reply, then the added ticker's snapshot.
        assert_eq!(next_binary(&mut bin).await, from_json(&next_json(&mut json).await));
    }
    send_text(&mut json, r#"{"type":"unsubscribe","tickers":["no way"]}"#).await;
    let bad = C::Unsubscribe(pb::WsTickers { tickers: vec!["no way".into()] });
    bin.send(client_frame(bad)).await.expect("send");
    let error = next_binary(&mut bin).await;
    assert!(matches!(&error, Content::Error(code, _) if code == "invalid_ticker"), "{error:?}");
    assert_eq!(error, from_json(&next_json(&mut json).await));

    // JSON text is accepted on the binary socket too; the reply is still binary.
    send_text(&mut bin, r#"{"type":"ping"}"#).await;
    assert_eq!(next_binary(&mut bin).await, Content::Pong);
    bin.send(client_frame(C::Ping(pb::WsPing {}))).await.expect("send");
    assert_eq!(next_binary(&mut bin).await, Content::Pong);
    // Garbage in a binary frame is refused with an error, not a close.
    bin.send(Message::binary(vec![0xff, 0xff])).await.expect("send");
    assert!(matches!(next_binary(&mut bin).await, Content::Error(code, _) if code == "invalid_message"));

    drop((json, bin));
    s.delete_session(&json_id).await;
    s.delete_session(&bin_id).await;
    s.wait_for(IDLE).await;
}

#[tokio::test]
async fn json_stays_the_default_and_binary_frames_on_it_close_1003() {
    let s = server(&[]).await;
    let id = s.create(&["AAPL"]).await;
    // An explicit JSON choice is echoed; an unknown one is not, and the client refuses.
    let (mut ws, chosen) = binary_ws(&s, &id, "tickstream.v1.json").await;
    assert_eq!(chosen.as_deref(), Some("tickstream.v1.json"));
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    ws.send(Message::binary(vec![1, 2, 3])).await.expect("send");
    assert_eq!(common::close_code(&mut ws).await, 1003);
    let mut req = s.ws_url(&id).into_client_request().expect("request");
    req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    assert!(tokio_tungstenite::connect_async(req).await.is_err(), "the server chose no protocol");
}
