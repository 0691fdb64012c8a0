//! The binary encoder against the generated decoder, and the property the subprotocol promises:
//! for the same messages, the binary stream decodes to the same content as the JSON stream.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use tickstream_api::{Quote, StatusUpdate, Tick, Ticker};

use super::*;
use crate::encoding::{Encoding, json_reply};

/// One price as a client sees it: ticker, price, ts, the quote fields (in `Quote::FIELDS`
/// order) and the producer's trading status.
type PriceContent = (String, f64, u64, Vec<Option<f64>>, Option<String>);

/// What a client sees in a message, whatever its encoding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Content {
    Data { kind: &'static str, seq: u64, prices: Vec<PriceContent> },
    Status { seq: u64, statuses: Vec<(String, String, u64)> },
    Pong(u64),
    Authenticated(u64),
    Subscribed(Vec<String>),
    Error(String, String),
}

pub(crate) fn from_json(text: &str) -> Content {
    let v: Value = serde_json::from_str(text).unwrap();
    let strings = |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    match v["type"].as_str().unwrap() {
        kind @ ("snapshot" | "prices") => Content::Data {
            kind: if kind == "snapshot" { "snapshot" } else { "prices" },
            seq: v["seq"].as_u64().unwrap(),
            prices: v["prices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["ticker"].as_str().unwrap().to_owned(),
                        p["price"].as_f64().unwrap(),
                        p["ts"].as_u64().unwrap(),
                        Quote::FIELDS.iter().map(|f| p.get(*f).map(|v| v.as_f64().unwrap())).collect(),
                        p.get("status").map(|v| v.as_str().unwrap().to_owned()),
                    )
                })
                .collect(),
        },
        "status" => Content::Status {
            seq: v["seq"].as_u64().unwrap(),
            statuses: v["statuses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let text = |k: &str| s[k].as_str().unwrap().to_owned();
                    (text("ticker"), text("status"), s["ts"].as_u64().unwrap())
                })
                .collect(),
        },
        "pong" => Content::Pong(v["ts"].as_u64().unwrap()),
        "authenticated" => Content::Authenticated(v["expires_at"].as_u64().unwrap()),
        "subscribed" => Content::Subscribed(strings(&v["tickers"])),
        "error" => Content::Error(v["code"].as_str().unwrap().into(), v["message"].as_str().unwrap().into()),
        other => panic!("unknown type {other}"),
    }
}

pub(crate) fn from_binary(bytes: &[u8]) -> Content {
    use pb::ws_server_message::Message as M;
    let status = |s: i32| pb::TickerStatus::try_from(s).unwrap().as_str_name().to_ascii_lowercase();
    let data = |kind, d: pb::WsData| Content::Data {
        kind,
        seq: d.seq,
        prices: d
            .prices
            .into_iter()
            .map(|p| {
                let quote = vec![
                    p.bid,
                    p.ask,
                    p.bid_size,
                    p.ask_size,
                    p.size,
                    p.volume,
                    p.open,
                    p.high,
                    p.low,
                    p.prev_close,
                ];
                (p.ticker, p.price, p.ts_ms, quote, p.status.map(status))
            })
            .collect(),
    };
    match pb::WsServerMessage::decode(bytes).unwrap().message.unwrap() {
        M::Snapshot(d) => data("snapshot", d),
        M::Prices(d) => data("prices", d),
        M::Pong(p) => Content::Pong(p.ts),
        M::Authenticated(a) => Content::Authenticated(a.expires_at),
        M::Subscribed(s) => Content::Subscribed(s.tickers),
        M::Error(e) => Content::Error(e.code, e.message),
        M::Status(s) => Content::Status {
            seq: s.seq,
            statuses: s.statuses.into_iter().map(|c| (c.ticker, status(c.status), c.ts_ms)).collect(),
        },
    }
}

fn tick(s: &str, p: f64, ts: u64) -> SharedTick {
    Arc::new(Tick::new(Ticker::parse(s).unwrap(), p, ts).unwrap())
}

#[test]
fn data_messages_decode_with_the_generated_types() {
    let ticks = [tick("AAPL", 189.25, 1_764_230_400_123), tick("BRK.B", 1e-9, 0)];
    let bytes = data_message(DataKind::Prices, 300, &ticks);
    let none = || vec![None; 10];
    let want = Content::Data {
        kind: "prices",
        seq: 300,
        prices: vec![
            ("AAPL".into(), 189.25, 1_764_230_400_123, none(), None),
            ("BRK.B".into(), 1e-9, 0, none(), None),
        ],
    };
    assert_eq!(from_binary(&bytes), want);
    // Byte for byte what prost writes for the same message.
    let generated = pb::WsServerMessage {
        message: Some(pb::ws_server_message::Message::Prices(pb::WsData {
            seq: 300,
            prices: ticks
                .iter()
                .map(|t| pb::Price {
                    ticker: t.ticker().to_string(),
                    price: t.price(),
                    ts_ms: t.ts_ms(),
                    ..Default::default()
                })
                .collect(),
        })),
    };
    assert_eq!(bytes[..], generated.encode_to_vec()[..]);
    let empty = data_message(DataKind::Snapshot, 1, &[]);
    assert_eq!(from_binary(&empty), Content::Data { kind: "snapshot", seq: 1, prices: vec![] });
}

#[test]
fn parses_binary_client_messages() {
    use pb::ws_client_message::Message as M;
    let frame = |m: M| pb::WsClientMessage { message: Some(m) }.encode_to_vec();
    let t = |s| Ticker::parse(s).unwrap();
    assert_eq!(parse_client(&frame(M::Ping(pb::WsPing {}))), Ok(ClientMessage::Ping));
    let sub = M::Subscribe(pb::WsTickers { tickers: vec!["aapl".into(), "MSFT".into(), "AAPL".into()] });
    assert_eq!(parse_client(&frame(sub)), Ok(ClientMessage::Subscribe(vec![t("AAPL"), t("MSFT")])));
    let unsub = M::Unsubscribe(pb::WsTickers { tickers: vec!["X".into()] });
    assert_eq!(parse_client(&frame(unsub)), Ok(ClientMessage::Unsubscribe(vec![t("X")])));
    let auth = M::Auth(pb::WsAuth { token: "abc".into() });
    assert_eq!(parse_client(&frame(auth)), Ok(ClientMessage::Auth("abc".into())));
    let code = |bytes: &[u8]| parse_client(bytes).unwrap_err().code;
    assert_eq!(code(&[]), ErrorCode::InvalidMessage, "no field set");
    assert_eq!(code(&[0xff, 0xff, 0xff]), ErrorCode::InvalidMessage, "not protobuf");
    assert_eq!(code(&frame(M::Subscribe(pb::WsTickers { tickers: vec![] }))), ErrorCode::EmptyTickers);
    let bad = M::Subscribe(pb::WsTickers { tickers: vec!["no way".into()] });
    assert_eq!(code(&frame(bad)), ErrorCode::InvalidTicker);
}

/// One server message as the connection loop hands it to its encoding.
#[derive(Debug, Clone)]
enum Sent {
    Data(DataKind, u64, Vec<SharedTick>),
    Status(u64, Vec<tickstream_api::SharedStatus>),
    Reply(Reply),
}

/// A quote with each field present or not (bid ≤ ask: both drawn, then ordered).
fn quote() -> impl Strategy<Value = Quote> {
    prop::collection::vec(prop::option::of(0.0f64..1e9), 10).prop_map(|f| {
        let (bid, ask) = match (f[0], f[1]) {
            (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
            other => other,
        };
        Quote {
            bid,
            ask,
            bid_size: f[2],
            ask_size: f[3],
            size: f[4],
            volume: f[5],
            open: f[6],
            high: f[7],
            low: f[8],
            prev_close: f[9],
        }
    })
}

/// A tick with or without a quote and a producer's trading status.
fn a_tick() -> impl Strategy<Value = SharedTick> {
    let trading = prop::option::of(prop::sample::select(tickstream_api::TradingStatus::ALL.to_vec()));
    ("[A-Z0-9][A-Z0-9.-]{0,11}", 1e-9f64..1e12, any::<u64>(), prop::option::of(quote()), trading).prop_map(
        |(s, p, ts, q, trading)| {
            let mut tick = Tick::new(Ticker::parse(&s).unwrap(), p, ts).unwrap().with_trading_status(trading);
            if let Some(q) = q {
                tick = tick.with_quote(q).unwrap();
            }
            Arc::new(tick)
        },
    )
}

fn sent() -> impl Strategy<Value = Sent> {
    let ticks = prop::collection::vec(a_tick(), 0..30);
    let status = prop::sample::select(tickstream_api::TickerStatus::ALL.to_vec());
    let statuses = prop::collection::vec(("[A-Z]{1,5}", status, any::<u64>()), 1..8).prop_map(|v| {
        v.into_iter()
            .map(|(t, s, ts)| Arc::new(StatusUpdate::new(Ticker::parse(&t).unwrap(), s, ts)))
            .collect()
    });
    let kind = prop_oneof![Just(DataKind::Snapshot), Just(DataKind::Prices)];
    let code = prop::sample::select(ErrorCode::ALL);
    prop_oneof![
        4 => (kind, any::<u64>(), ticks).prop_map(|(k, seq, t)| Sent::Data(k, seq, t)),
        1 => (any::<u64>(), statuses).prop_map(|(seq, s)| Sent::Status(seq, s)),
        1 => any::<u64>().prop_map(|ts| Sent::Reply(Reply::Pong(ts))),
        1 => any::<u64>().prop_map(|at| Sent::Reply(Reply::Authenticated(at))),
        1 => prop::collection::vec("[A-Z]{1,5}", 0..8)
            .prop_map(|s| Sent::Reply(Reply::Subscribed(s.iter().map(|t| Ticker::parse(t).unwrap()).collect()))),
        1 => (code, any::<String>()).prop_map(|(c, m)| Sent::Reply(Reply::Error(c, m))),
    ]
}

fn encoded(encoding: Encoding, msg: &Sent) -> Content {
    use tokio_tungstenite::tungstenite::Message;
    let frame = match msg {
        Sent::Data(kind, seq, ticks) => encoding.data(*kind, *seq, ticks),
        Sent::Status(seq, statuses) => encoding.status(*seq, statuses),
        Sent::Reply(r) => encoding.reply(r),
    };
    match (encoding, frame) {
        (Encoding::Json, Message::Text(t)) => from_json(&t),
        (Encoding::Proto, Message::Binary(b)) => from_binary(&b),
        (e, m) => panic!("{e:?} wrote {m:?}"),
    }
}

proptest! {
    /// The subprotocol's promise: a session's stream of messages, encoded both ways, decodes to
    /// the same content, message by message (prices exactly, as `f64`; JSON prints the shortest
    /// form that round-trips).
    #[test]
    fn binary_and_json_streams_carry_the_same_content(stream in prop::collection::vec(sent(), 1..20)) {
        for msg in &stream {
            prop_assert_eq!(encoded(Encoding::Proto, msg), encoded(Encoding::Json, msg));
        }
    }

    /// Arbitrary bytes never panic the binary parser, and a refusal uses a documented code.
    #[test]
    fn parse_client_is_total_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Err(e) = parse_client(&bytes) {
            prop_assert!(
                [ErrorCode::InvalidMessage, ErrorCode::EmptyTickers, ErrorCode::InvalidTicker].contains(&e.code)
            );
        }
    }
}

#[test]
fn json_reply_and_binary_reply_agree_on_a_sample() {
    let r = Reply::Error(ErrorCode::TooManyTickers, "at most 2".into());
    assert_eq!(from_binary(&reply(&r)), from_json(&json_reply(&r)));
}
