//! The WebSocket wire protocol: parsing client messages and encoding server messages.
//!
//! Pure functions over strings, so every rule is unit-tested without a socket. Data messages are
//! assembled from each tick's pre-encoded JSON (see `Tick::json`): no per-session serialisation.

use std::fmt::Write as _;

use serde_json::Value;
use tickstream_api::{ErrorCode, SharedStatus, SharedTick, Ticker, normalize_tickers};

/// A message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Ping,
    Subscribe(Vec<Ticker>),
    Unsubscribe(Vec<Ticker>),
    /// A fresh token, to keep the socket open past the current one's expiry.
    Auth(String),
}

/// Why a client message was refused; sent back as `{"type":"error",...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// Parses one text frame.
///
/// # Errors
/// `invalid_json`, `invalid_message` (no string `type`, or a bad `tickers` field),
/// `unknown_type`, `empty_tickers`, `invalid_ticker`.
pub fn parse_client(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ProtocolError::new(ErrorCode::InvalidJson, format!("message is not valid JSON: {e}")))?;
    let kind = value.get("type").and_then(Value::as_str).ok_or_else(|| {
        ProtocolError::new(ErrorCode::InvalidMessage, "message needs a string field \"type\"")
    })?;
    match kind {
        "ping" => Ok(ClientMessage::Ping),
        "subscribe" => Ok(ClientMessage::Subscribe(tickers_field(&value)?)),
        "unsubscribe" => Ok(ClientMessage::Unsubscribe(tickers_field(&value)?)),
        "auth" => match value.get("token").and_then(Value::as_str) {
            Some(token) => Ok(ClientMessage::Auth(token.to_owned())),
            None => Err(ProtocolError::new(ErrorCode::InvalidMessage, "\"token\" must be a string")),
        },
        other => Err(ProtocolError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type {:?}; expected ping, subscribe, unsubscribe or auth",
                other.chars().take(32).collect::<String>()
            ),
        )),
    }
}

fn tickers_field(value: &Value) -> Result<Vec<Ticker>, ProtocolError> {
    let bad = || ProtocolError::new(ErrorCode::InvalidMessage, "\"tickers\" must be an array of strings");
    let items = value.get("tickers").and_then(Value::as_array).ok_or_else(bad)?;
    let symbols = items.iter().map(Value::as_str).collect::<Option<Vec<&str>>>().ok_or_else(bad)?;
    if symbols.is_empty() {
        return Err(ProtocolError::new(ErrorCode::EmptyTickers, "\"tickers\" must not be empty"));
    }
    normalize_tickers(&symbols).map_err(|e| ProtocolError::new(ErrorCode::InvalidTicker, e.to_string()))
}

/// Kind of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    Snapshot,
    Prices,
}

/// `{"type":"snapshot"|"prices","seq":N,"prices":[...]}`.
///
/// Allocated at its exact length: the message becomes the frame's `Bytes`, and `Bytes` takes a
/// `Vec` whose capacity is larger than its length only by allocating a shared header beside it
/// (one more allocation and an atomic drop per frame; `bytes::shared_drop` was 2 % of the
/// one-ticker fan-out's CPU).
pub fn data_message(kind: DataKind, seq: u64, ticks: &[SharedTick]) -> String {
    let kind = match kind {
        DataKind::Snapshot => "snapshot",
        DataKind::Prices => "prices",
    };
    let body = list_len(ticks.iter().map(|t| t.json().len()));
    let mut out = String::with_capacity(
        r#"{"type":""#.len()
            + kind.len()
            + r#"","seq":"#.len()
            + digits(seq)
            + r#","prices":["#.len()
            + body
            + 2,
    );
    // Writing to a String cannot fail.
    let _ = write!(out, r#"{{"type":"{kind}","seq":{seq},"prices":["#);
    for (i, tick) in ticks.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(tick.json());
    }
    out.push_str("]}");
    out
}

/// `{"type":"status","seq":N,"statuses":[{"ticker":…,"status":…,"ts":…},…]}`, assembled from
/// each update's pre-encoded JSON like a data message.
pub fn status_message(seq: u64, statuses: &[SharedStatus]) -> String {
    // Exact, as `data_message`.
    let body = list_len(statuses.iter().map(|s| s.json().len()));
    let mut out = String::with_capacity(
        r#"{"type":"status","seq":"#.len() + digits(seq) + r#","statuses":["#.len() + body + 2,
    );
    // Writing to a String cannot fail.
    let _ = write!(out, r#"{{"type":"status","seq":{seq},"statuses":["#);
    for (i, s) in statuses.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(s.json());
    }
    out.push_str("]}");
    out
}

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Length of JSON items of these lengths joined by commas.
fn list_len(items: impl Iterator<Item = usize>) -> usize {
    let (count, sum) = items.fold((0usize, 0usize), |(c, s), len| (c + 1, s + len));
    sum + count.saturating_sub(1)
}

/// `{"type":"pong","ts":N}`.
pub fn pong(ts_ms: u64) -> String {
    format!(r#"{{"type":"pong","ts":{ts_ms}}}"#)
}

/// `{"type":"authenticated","expires_at":MS}`: a refreshed token was accepted; the socket now
/// stays open until `expires_at` (milliseconds since the Unix epoch).
pub fn authenticated(expires_at_ms: u64) -> String {
    format!(r#"{{"type":"authenticated","expires_at":{expires_at_ms}}}"#)
}

/// `{"type":"subscribed","tickers":[...]}`: the session's whole set.
pub fn subscribed(tickers: &[Ticker]) -> String {
    serde_json::json!({ "type": "subscribed", "tickers": tickers }).to_string()
}

/// `{"type":"error","code":...,"message":...}`.
pub fn error(code: ErrorCode, message: &str) -> String {
    serde_json::json!({ "type": "error", "code": code.as_str(), "message": message }).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tickstream_api::{StatusUpdate, Tick, TickerStatus};

    use super::*;

    fn code(text: &str) -> &'static str {
        parse_client(text).unwrap_err().code.as_str()
    }

    #[test]
    fn parses_client_messages() {
        assert_eq!(parse_client(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
        let t = |s| Ticker::parse(s).unwrap();
        assert_eq!(
            parse_client(r#"{"type":"subscribe","tickers":["aapl","MSFT","AAPL"]}"#),
            Ok(ClientMessage::Subscribe(vec![t("AAPL"), t("MSFT")]))
        );
        assert_eq!(
            parse_client(r#"{"type":"unsubscribe","tickers":["X"]}"#),
            Ok(ClientMessage::Unsubscribe(vec![t("X")]))
        );
    }

    #[test]
    fn refuses_bad_client_messages_with_codes() {
        assert_eq!(code("not json"), "invalid_json");
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code("[]"), "invalid_message");
        assert_eq!(code(r#"{"type":7}"#), "invalid_message");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"subscribe"}"#), "invalid_message");
        assert_eq!(code(r#"{"type":"subscribe","tickers":[1]}"#), "invalid_message");
        assert_eq!(code(r#"{"type":"subscribe","tickers":[]}"#), "empty_tickers");
        assert_eq!(code(r#"{"type":"subscribe","tickers":["no way"]}"#), "invalid_ticker");
    }

    /// Data and status messages are allocated at their exact length (see `data_message`), for
    /// any count of items and any `seq` width.
    #[test]
    fn data_and_status_messages_fill_their_allocation_exactly() {
        let tick = |s, p| Arc::new(Tick::new(Ticker::parse(s).unwrap(), p, 5).unwrap());
        let status = |s| Arc::new(StatusUpdate::new(Ticker::parse(s).unwrap(), TickerStatus::Halted, 5));
        let ticks = [tick("A", 1.5), tick("BRK.B", 1234.25), tick("C", 0.01)];
        let statuses = [status("A"), status("BB"), status("CCC")];
        for seq in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            for n in 0..=3 {
                for kind in [DataKind::Prices, DataKind::Snapshot] {
                    let msg = data_message(kind, seq, &ticks[..n]);
                    assert_eq!(msg.capacity(), msg.len(), "{msg}");
                }
                let msg = status_message(seq, &statuses[..n]);
                assert_eq!(msg.capacity(), msg.len(), "{msg}");
            }
        }
    }

    #[test]
    fn encodes_server_messages() {
        let tick = |s, p| Arc::new(Tick::new(Ticker::parse(s).unwrap(), p, 5).unwrap());
        let msg = data_message(DataKind::Prices, 7, &[tick("A", 1.5), tick("B", 2.0)]);
        assert_eq!(
            msg,
            r#"{"type":"prices","seq":7,"prices":[{"ticker":"A","price":1.5,"ts":5},{"ticker":"B","price":2.0,"ts":5}]}"#
        );
        let v: Value = serde_json::from_str(&data_message(DataKind::Snapshot, 1, &[])).unwrap();
        assert_eq!(v, serde_json::json!({"type":"snapshot","seq":1,"prices":[]}));
        assert_eq!(pong(9), r#"{"type":"pong","ts":9}"#);
        let halted = Arc::new(StatusUpdate::new(Ticker::parse("A").unwrap(), TickerStatus::Halted, 5));
        let stale = Arc::new(StatusUpdate::new(Ticker::parse("B").unwrap(), TickerStatus::Stale, 4));
        let v: Value = serde_json::from_str(&status_message(3, &[halted, stale])).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"status","seq":3,"statuses":[
                {"ticker":"A","status":"halted","ts":5},{"ticker":"B","status":"stale","ts":4}]})
        );
        let v: Value = serde_json::from_str(&subscribed(&[Ticker::parse("A").unwrap()])).unwrap();
        assert_eq!(v, serde_json::json!({"type":"subscribed","tickers":["A"]}));
        let v: Value = serde_json::from_str(&error(ErrorCode::InvalidJson, "say \"hi\"")).unwrap();
        assert_eq!(v["message"], "say \"hi\"");
    }
}

#[cfg(test)]
mod properties {
    use std::sync::Arc;

    use proptest::prelude::*;
    use tickstream_api::Tick;

    use super::*;

    /// README, WebSocket protocol: the codes of a refused client message (besides the engine's).
    const CLIENT_MESSAGE_CODES: &[ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::EmptyTickers,
        ErrorCode::InvalidTicker,
        ErrorCode::TooManyTickers,
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
            "[a-z]{0,12}".prop_map(Value::String),
            prop_oneof![Just("ping"), Just("subscribe"), Just("unsubscribe"), Just("type"), Just("tickers")]
                .prop_map(|s| Value::String(s.into())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (prop_oneof![Just("type".to_owned()), Just("tickers".to_owned()), "[a-z]{1,6}"], inner),
                    0..4
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Arbitrary text never panics the parser, and a refusal is one of the codes the README
        /// documents for client messages (not, say, a REST-only code leaking onto the socket).
        #[test]
        fn parse_client_is_total_on_text(s in any::<String>()) {
            if let Err(e) = parse_client(&s) {
                prop_assert!(CLIENT_MESSAGE_CODES.contains(&e.code), "{}", e.code);
            }
        }

        /// Arbitrary JSON shaped like client messages: no panic, and accepted subscriptions hold
        /// only valid, distinct tickers.
        #[test]
        fn parse_client_is_total_on_json(v in json_value()) {
            if let Ok(ClientMessage::Subscribe(t) | ClientMessage::Unsubscribe(t)) = parse_client(&v.to_string()) {
                let mut sorted = t.clone();
                sorted.sort();
                sorted.dedup();
                prop_assert_eq!(sorted.len(), t.len());
            }
        }

        /// Every data message is valid JSON with the prices it was given.
        #[test]
        fn data_messages_are_valid_json(
            ticks in prop::collection::vec(("[A-Z0-9][A-Z0-9.-]{0,11}", 1e-9f64..1e12, any::<u64>()), 0..20),
            seq in any::<u64>(),
        ) {
            let ticks: Vec<_> = ticks
                .iter()
                .map(|(s, p, ts)| Arc::new(Tick::new(Ticker::parse(s).unwrap(), *p, *ts).unwrap()))
                .collect();
            let v: Value = serde_json::from_str(&data_message(DataKind::Prices, seq, &ticks)).unwrap();
            prop_assert_eq!(v["seq"].as_u64(), Some(seq));
            let prices = v["prices"].as_array().unwrap();
            prop_assert_eq!(prices.len(), ticks.len());
            for (p, t) in prices.iter().zip(&ticks) {
                prop_assert_eq!(p["price"].as_f64(), Some(t.price()));
                prop_assert_eq!(p["ts"].as_u64(), Some(t.ts_ms()));
            }
        }
    }
}
