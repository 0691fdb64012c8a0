//! The wire forms of everything tickstream keeps in Redis, and their decoders.
//!
//! Anyone with access to Redis can write these (external producers publish prices; a stray
//! client can publish on the control channel or overwrite a session key), so every decoder takes
//! raw bytes, never panics, and returns `None` for anything malformed: a bad value is treated as
//! absent, never trusted halfway. The fuzz targets in `fuzz/` run these exact functions.
//!
//! Sits below the broker, subscriber and store modules, which only move bytes in and out.

use serde::{Deserialize, Serialize};
use tickstream_api::{SessionId, SessionState, Tick, Ticker, now_ms};
use tickstream_broker::SessionRecord;

use crate::keys;

/// A price payload as producers write it; `ticker` and `ts` may be left out.
#[derive(Deserialize)]
struct PriceMessage<'a> {
    #[serde(default, borrow)]
    ticker: Option<&'a str>,
    price: f64,
    #[serde(default)]
    ts: Option<u64>,
}

/// Parses a price payload for `ticker` (from the channel name). External producers may omit
/// `ticker` and `ts` (the receiver then stamps the time); a `ticker` naming another symbol, a
/// non-positive or non-numeric price, or anything else malformed is `None`.
///
/// The encoder is [`Tick::json`], which this decodes back to the same tick.
pub fn decode_price(ticker: Ticker, payload: &[u8]) -> Option<Tick> {
    let msg: PriceMessage<'_> = serde_json::from_slice(payload).ok()?;
    if msg.ticker.is_some_and(|t| !t.eq_ignore_ascii_case(ticker.as_str())) {
        return None;
    }
    Tick::new(ticker, msg.price, msg.ts.unwrap_or_else(now_ms)).ok()
}

/// What engines publish on [`keys::CONTROL_CHANNEL`] about sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlMessage {
    /// The sender, so a node ignores its own messages.
    pub node: String,
    /// A session the sender ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// A session the sender now streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<String>,
}

/// Encodes a control message.
pub fn encode_control(msg: &ControlMessage) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

/// Parses a control message; `None` if malformed. Its session ids are checked by the receiver
/// (`SessionId::parse`), so a message naming no valid session does nothing.
pub fn decode_control(payload: &[u8]) -> Option<ControlMessage> {
    serde_json::from_slice(payload).ok()
}

/// What arrived on the node's Pub/Sub connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A valid price on a price channel.
    Price(Tick),
    /// A well-formed control message.
    Control(ControlMessage),
    /// A price or control message that does not decode (counted, then dropped).
    Invalid,
    /// A channel that is neither (never subscribed by us; ignored).
    Other,
}

/// Classifies and decodes one Pub/Sub message from its channel name and payload.
pub fn decode_message(channel: &str, payload: &[u8]) -> Incoming {
    if let Some(symbol) = channel.strip_prefix(keys::PRICE_CHANNEL_PREFIX) {
        match Ticker::parse(symbol).ok().and_then(|t| decode_price(t, payload)) {
            Some(tick) => Incoming::Price(tick),
            None => Incoming::Invalid,
        }
    } else if channel == keys::CONTROL_CHANNEL {
        decode_control(payload).map_or(Incoming::Invalid, Incoming::Control)
    } else {
        Incoming::Other
    }
}

/// The stored JSON form of a session record; documented in the README's Redis contract.
#[derive(Serialize, Deserialize)]
struct SessionWire {
    tickers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_rate_hz: Option<f64>,
    created_at_ms: u64,
    state: String,
    /// Absent with auth off and in records written before owners existed: both decode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// Encodes a session record (its id is the key, not part of the value).
pub fn encode_session(record: &SessionRecord) -> String {
    let wire = SessionWire {
        tickers: record.tickers.iter().map(|t| t.as_str().to_owned()).collect(),
        max_rate_hz: record.max_rate_hz,
        created_at_ms: record.created_at_ms,
        state: record.state.as_str().to_owned(),
        owner: record.owner.clone(),
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Parses a stored record of session `id`; `None` for anything malformed: no tickers, an
/// invalid ticker, an unknown state, a rate cap that is not a positive finite number.
pub fn decode_session(id: SessionId, bytes: &[u8]) -> Option<SessionRecord> {
    let wire: SessionWire = serde_json::from_slice(bytes).ok()?;
    let tickers = wire.tickers.iter().map(|t| Ticker::parse(t).ok()).collect::<Option<Vec<_>>>()?;
    let state = SessionState::ALL.into_iter().find(|s| s.as_str() == wire.state)?;
    let rate_ok = wire.max_rate_hz.is_none_or(|hz| hz.is_finite() && hz > 0.0);
    (!tickers.is_empty() && rate_ok).then_some(SessionRecord {
        id,
        tickers,
        max_rate_hz: wire.max_rate_hz,
        created_at_ms: wire.created_at_ms,
        state,
        owner: wire.owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Ticker {
        Ticker::parse(s).unwrap()
    }

    #[test]
    fn price_payloads_from_external_producers() {
        let tick = decode_price(t("AAPL"), br#"{"ticker":"AAPL","price":189.25,"ts":5}"#).unwrap();
        assert_eq!((tick.price(), tick.ts_ms()), (189.25, 5));
        // ticker and ts may be left out; the channel names the ticker, the receiver stamps ts.
        let tick = decode_price(t("AAPL"), br#"{"price":1.5}"#).unwrap();
        assert!(tick.ts_ms() > 0);
        assert_eq!(tick.json(), format!(r#"{{"ticker":"AAPL","price":1.5,"ts":{}}}"#, tick.ts_ms()));
        for bad in
            [&br#"{"ticker":"MSFT","price":1}"#[..], br#"{"price":-1}"#, b"189.25", b"", br#"{"price":"1"}"#]
        {
            assert!(decode_price(t("AAPL"), bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_tick_decodes_back_from_its_own_json() {
        let tick = Tick::new(t("BRK.B"), 0.1 + 0.2, 1_764_230_400_123).unwrap();
        assert_eq!(decode_price(t("BRK.B"), tick.json().as_bytes()), Some(tick));
    }

    #[test]
    fn messages_are_classified_by_channel() {
        let price = decode_message("tickstream:px:aapl", br#"{"price":2,"ts":7}"#);
        assert_eq!(price, Incoming::Price(Tick::new(t("AAPL"), 2.0, 7).unwrap()));
        assert_eq!(decode_message("tickstream:px:not a ticker", br#"{"price":2}"#), Incoming::Invalid);
        assert_eq!(decode_message("tickstream:px:AAPL", b"{"), Incoming::Invalid);
        assert_eq!(decode_message("tickstream:ctl", b"[]"), Incoming::Invalid);
        assert_eq!(decode_message("elsewhere", br#"{"price":2}"#), Incoming::Other);
        let ctl = ControlMessage { node: "n1".into(), ended: Some("x".into()), attached: None };
        assert_eq!(decode_message("tickstream:ctl", encode_control(&ctl).as_bytes()), Incoming::Control(ctl));
    }

    #[test]
    fn control_messages_round_trip_and_omit_what_is_absent() {
        let msg = ControlMessage { node: "ab".into(), ended: None, attached: Some("s\"1".into()) };
        let json = encode_control(&msg);
        assert_eq!(json, r#"{"node":"ab","attached":"s\"1"}"#);
        assert_eq!(decode_control(json.as_bytes()), Some(msg));
        assert_eq!(decode_control(br#"{"ended":"x"}"#), None, "node is required");
        assert_eq!(
            decode_control(br#"{"node":"n","ended":null}"#),
            Some(ControlMessage { node: "n".into(), ended: None, attached: None })
        );
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_absent() {
        let id = SessionId::random();
        let rec = SessionRecord {
            id,
            tickers: vec![t("AAPL"), t("BRK.B")],
            max_rate_hz: Some(2.5),
            created_at_ms: 1_764_230_400_123,
            state: SessionState::Streaming,
            owner: Some("alice".into()),
        };
        assert_eq!(decode_session(id, encode_session(&rec).as_bytes()), Some(rec));
        // A record written before owners existed (or with auth off) still decodes, ownerless.
        let old = decode_session(id, br#"{"tickers":["A"],"created_at_ms":1,"state":"pending"}"#);
        assert_eq!(old.map(|r| r.owner), Some(None));
        for bad in [
            "",
            "{}",
            r#"{"tickers":[],"created_at_ms":1,"state":"pending"}"#,
            r#"{"tickers":["not a ticker"],"created_at_ms":1,"state":"pending"}"#,
            r#"{"tickers":["A"],"created_at_ms":1,"state":"sleeping"}"#,
            r#"{"tickers":["A"],"created_at_ms":1,"state":"pending","max_rate_hz":-1}"#,
        ] {
            assert_eq!(decode_session(id, bad.as_bytes()), None, "{bad}");
        }
    }
}
