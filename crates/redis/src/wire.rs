//! The wire forms of everything tickstream keeps in Redis, and their decoders.
//!
//! Anyone with access to Redis can write these (external producers publish prices; a stray
//! client can publish on the control channel or overwrite a session key), so every decoder takes
//! raw bytes, never panics, and returns `None` for anything malformed: a bad value is treated as
//! absent, never trusted halfway. The fuzz targets in `fuzz/` run these exact functions.
//!
//! Redis input is outside input: every decoder applies the same bounds as the REST API
//! ([`Bounds`]: payload size, `ts` window, rate-cap range, tickers per session), and control
//! messages carry an HMAC-SHA256 when the cluster has a secret ([`ControlAuth`]).
//!
//! Sits below the broker, subscriber and store modules, which only move bytes in and out.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tickstream_api::{SessionId, SessionState, Tick, Ticker, TsWindow, now_ms};
use tickstream_broker::SessionRecord;

use crate::keys;

/// The limits Redis input is held to: those of the REST API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Largest price payload, control message or session record, in bytes.
    pub max_payload: usize,
    /// The `ts` a price may carry (`TsWindow::DEFAULT`, as `POST /api/v1/prices`).
    pub ts_window: TsWindow,
    /// Most tickers in a session record (`--max-tickers-per-session`).
    pub max_tickers: usize,
    /// The accepted `max_rate_hz` range (the engine's `MIN_RATE_HZ..=MAX_RATE_HZ`).
    pub min_rate_hz: f64,
    pub max_rate_hz: f64,
}

impl Bounds {
    /// 64 KiB, as the largest session body; the rate range of `tickstream_engine`.
    pub const DEFAULT: Self = Self {
        max_payload: 64 * 1024,
        ts_window: TsWindow::DEFAULT,
        max_tickers: 100,
        min_rate_hz: 0.01,
        max_rate_hz: 1000.0,
    };
}

impl Default for Bounds {
    fn default() -> Self {
        Self::DEFAULT
    }
}

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
/// non-positive or non-numeric price, a `ts` outside the window, a payload over the size bound,
/// or anything else malformed is `None`.
///
/// The encoder is [`Tick::json`], which this decodes back to the same tick.
pub fn decode_price(ticker: Ticker, payload: &[u8], bounds: &Bounds) -> Option<Tick> {
    let now = now_ms();
    let tick = decode_price_unchecked_age(ticker, payload, bounds, now)?;
    bounds.ts_window.check(tick.ts_ms(), now).ok().map(|()| tick)
}

/// Like [`decode_price`] for a value read from the last-value cache: there a price may be old
/// (a quiet ticker keeps its Friday close over a weekend), so only the future side of the
/// window applies.
pub fn decode_cached_price(ticker: Ticker, payload: &[u8], bounds: &Bounds) -> Option<Tick> {
    decode_price_unchecked_age(ticker, payload, bounds, now_ms())
}

fn decode_price_unchecked_age(ticker: Ticker, payload: &[u8], bounds: &Bounds, now: u64) -> Option<Tick> {
    if payload.len() > bounds.max_payload {
        return None;
    }
    let msg: PriceMessage<'_> = serde_json::from_slice(payload).ok()?;
    if msg.ticker.is_some_and(|t| !t.eq_ignore_ascii_case(ticker.as_str())) {
        return None;
    }
    let ts = msg.ts.unwrap_or(now);
    let future_ms = u64::try_from(bounds.ts_window.max_future.as_millis()).unwrap_or(u64::MAX);
    if ts > now.saturating_add(future_ms) {
        return None;
    }
    Tick::new(ticker, msg.price, ts).ok()
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

/// The cluster secret control messages are signed with (`--cluster-secret-file`), or none.
///
/// With a secret, a control message is `<64 hex digits of HMAC-SHA256(secret, json)>.<json>`
/// and anything else (unsigned, forged, signed with another secret) is refused. Without one,
/// it is the bare JSON (and signed messages are refused: the nodes disagree on the secret).
#[derive(Clone, Default)]
pub struct ControlAuth {
    key: Option<Vec<u8>>,
}

impl std::fmt::Debug for ControlAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("ControlAuth").field("signed", &self.key.is_some()).finish()
    }
}

const SIG_HEX: usize = 64;

impl ControlAuth {
    /// No secret: control messages are bare JSON (protect the channel with Redis ACLs).
    pub fn none() -> Self {
        Self { key: None }
    }

    /// Signs and checks with `secret` (leading and trailing whitespace of a file is not part
    /// of it). An empty secret is no secret.
    pub fn with_secret(secret: &[u8]) -> Self {
        let secret = secret.trim_ascii();
        Self { key: (!secret.is_empty()).then(|| secret.to_vec()) }
    }

    pub fn is_signed(&self) -> bool {
        self.key.is_some()
    }

    fn mac(key: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }
}

/// Encodes a control message, signed when `auth` has a secret.
pub fn encode_control(msg: &ControlMessage, auth: &ControlAuth) -> String {
    let json = serde_json::to_string(msg).unwrap_or_default();
    match &auth.key {
        None => json,
        Some(key) => {
            let mut mac = ControlAuth::mac(key);
            mac.update(json.as_bytes());
            let sig: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
            format!("{sig}.{json}")
        }
    }
}

/// Parses a control message; `None` if malformed, over the size bound, or not signed as `auth`
/// requires. Its session ids are checked by the receiver (`SessionId::parse`), so a message
/// naming no valid session does nothing.
pub fn decode_control(payload: &[u8], auth: &ControlAuth, bounds: &Bounds) -> Option<ControlMessage> {
    if payload.len() > bounds.max_payload {
        return None;
    }
    let json = match &auth.key {
        None => payload,
        Some(key) => {
            let (sig, json) = (payload.get(..SIG_HEX)?, payload.get(SIG_HEX + 1..)?);
            if payload.get(SIG_HEX) != Some(&b'.') {
                return None;
            }
            let sig = decode_hex(sig)?;
            let mut mac = ControlAuth::mac(key);
            mac.update(json);
            // Constant-time comparison.
            mac.verify_slice(&sig).ok()?;
            json
        }
    };
    serde_json::from_slice(json).ok()
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16).and_then(|d| u8::try_from(d).ok());
    hex.chunks(2).map(|p| Some(digit(*p.first()?)? << 4 | digit(*p.get(1)?)?)).collect()
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
pub fn decode_message(channel: &str, payload: &[u8], auth: &ControlAuth, bounds: &Bounds) -> Incoming {
    if let Some(symbol) = channel.strip_prefix(keys::PRICE_CHANNEL_PREFIX) {
        match Ticker::parse(symbol).ok().and_then(|t| decode_price(t, payload, bounds)) {
            Some(tick) => Incoming::Price(tick),
            None => Incoming::Invalid,
        }
    } else if channel == keys::CONTROL_CHANNEL {
        decode_control(payload, auth, bounds).map_or(Incoming::Invalid, Incoming::Control)
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
}

/// Encodes a session record (its id is the key, not part of the value).
pub fn encode_session(record: &SessionRecord) -> String {
    let wire = SessionWire {
        tickers: record.tickers.iter().map(|t| t.as_str().to_owned()).collect(),
        max_rate_hz: record.max_rate_hz,
        created_at_ms: record.created_at_ms,
        state: record.state.as_str().to_owned(),
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// Parses a stored record of session `id`; `None` for anything malformed: over the size bound,
/// no tickers or more than `bounds.max_tickers`, an invalid ticker, an unknown state, a rate cap
/// outside the engine's range (`1e-300` Hz once made attach panic in `Duration::from_secs_f64`).
pub fn decode_session(id: SessionId, bytes: &[u8], bounds: &Bounds) -> Option<SessionRecord> {
    if bytes.len() > bounds.max_payload {
        return None;
    }
    let wire: SessionWire = serde_json::from_slice(bytes).ok()?;
    if wire.tickers.is_empty() || wire.tickers.len() > bounds.max_tickers {
        return None;
    }
    let tickers = wire.tickers.iter().map(|t| Ticker::parse(t).ok()).collect::<Option<Vec<_>>>()?;
    let state = SessionState::ALL.into_iter().find(|s| s.as_str() == wire.state)?;
    let rate_ok = wire
        .max_rate_hz
        .is_none_or(|hz| hz.is_finite() && (bounds.min_rate_hz..=bounds.max_rate_hz).contains(&hz));
    rate_ok.then_some(SessionRecord {
        id,
        tickers,
        max_rate_hz: wire.max_rate_hz,
        created_at_ms: wire.created_at_ms,
        state,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn t(s: &str) -> Ticker {
        Ticker::parse(s).unwrap()
    }

    /// The default bounds with any `ts` accepted, for the tests about the format itself.
    const LAX: Bounds = Bounds {
        ts_window: TsWindow { max_future: Duration::from_secs(5), max_age: Duration::MAX },
        ..Bounds::DEFAULT
    };
    const NO_AUTH: ControlAuth = ControlAuth { key: None };

    #[test]
    fn price_payloads_from_external_producers() {
        let tick = decode_price(t("AAPL"), br#"{"ticker":"AAPL","price":189.25,"ts":5}"#, &LAX).unwrap();
        assert_eq!((tick.price(), tick.ts_ms()), (189.25, 5));
        // ticker and ts may be left out; the channel names the ticker, the receiver stamps ts.
        let tick = decode_price(t("AAPL"), br#"{"price":1.5}"#, &LAX).unwrap();
        assert!(tick.ts_ms() > 0);
        assert_eq!(tick.json(), format!(r#"{{"ticker":"AAPL","price":1.5,"ts":{}}}"#, tick.ts_ms()));
        for bad in
            [&br#"{"ticker":"MSFT","price":1}"#[..], br#"{"price":-1}"#, b"189.25", b"", br#"{"price":"1"}"#]
        {
            assert!(decode_price(t("AAPL"), bad, &LAX).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_tick_decodes_back_from_its_own_json() {
        let tick = Tick::new(t("BRK.B"), 0.1 + 0.2, 1_764_230_400_123).unwrap();
        assert_eq!(decode_price(t("BRK.B"), tick.json().as_bytes(), &LAX), Some(tick));
    }

    #[test]
    fn messages_are_classified_by_channel() {
        let price = decode_message("tickstream:px:aapl", br#"{"price":2,"ts":7}"#, &NO_AUTH, &LAX);
        assert_eq!(price, Incoming::Price(Tick::new(t("AAPL"), 2.0, 7).unwrap()));
        assert_eq!(
            decode_message("tickstream:px:not a ticker", br#"{"price":2}"#, &NO_AUTH, &LAX),
            Incoming::Invalid
        );
        assert_eq!(decode_message("tickstream:px:AAPL", b"{", &NO_AUTH, &LAX), Incoming::Invalid);
        assert_eq!(decode_message("tickstream:ctl", b"[]", &NO_AUTH, &LAX), Incoming::Invalid);
        assert_eq!(decode_message("elsewhere", br#"{"price":2}"#, &NO_AUTH, &LAX), Incoming::Other);
        let ctl = ControlMessage { node: "n1".into(), ended: Some("x".into()), attached: None };
        assert_eq!(
            decode_message("tickstream:ctl", encode_control(&ctl, &NO_AUTH).as_bytes(), &NO_AUTH, &LAX),
            Incoming::Control(ctl)
        );
    }

    #[test]
    fn control_messages_round_trip_and_omit_what_is_absent() {
        let msg = ControlMessage { node: "ab".into(), ended: None, attached: Some("s\"1".into()) };
        let json = encode_control(&msg, &NO_AUTH);
        assert_eq!(json, r#"{"node":"ab","attached":"s\"1"}"#);
        assert_eq!(decode_control(json.as_bytes(), &NO_AUTH, &LAX), Some(msg));
        assert_eq!(decode_control(br#"{"ended":"x"}"#, &NO_AUTH, &LAX), None, "node is required");
        assert_eq!(
            decode_control(br#"{"node":"n","ended":null}"#, &NO_AUTH, &LAX),
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
        };
        assert_eq!(decode_session(id, encode_session(&rec).as_bytes(), &LAX), Some(rec));
        for bad in [
            "",
            "{}",
            r#"{"tickers":[],"created_at_ms":1,"state":"pending"}"#,
            r#"{"tickers":["not a ticker"],"created_at_ms":1,"state":"pending"}"#,
            r#"{"tickers":["A"],"created_at_ms":1,"state":"sleeping"}"#,
            r#"{"tickers":["A"],"created_at_ms":1,"state":"pending","max_rate_hz":-1}"#,
        ] {
            assert_eq!(decode_session(id, bad.as_bytes(), &LAX), None, "{bad}");
        }
    }

    #[test]
    fn redis_input_is_held_to_the_rest_bounds() {
        let b = Bounds::DEFAULT;
        let now = now_ms();
        let at = |ts: u64| format!(r#"{{"price":1,"ts":{ts}}}"#);
        assert!(decode_price(t("A"), at(now).as_bytes(), &b).is_some());
        for ts in [u64::MAX, now + 60_000, 1, now - 86_400_000 - 60_000] {
            assert!(decode_price(t("A"), at(ts).as_bytes(), &b).is_none(), "ts {ts} accepted");
        }
        // From the cache an old price is fine (a quiet ticker), a future one is not.
        assert!(decode_cached_price(t("A"), at(1).as_bytes(), &b).is_some());
        assert!(decode_cached_price(t("A"), at(u64::MAX).as_bytes(), &b).is_none());
        let padded = format!(r#"{{"price":1,"pad":"{}"}}"#, "x".repeat(b.max_payload));
        assert!(decode_price(t("A"), padded.as_bytes(), &b).is_none(), "over the size bound");

        let id = SessionId::random();
        let record = |tickers: usize, rate: &str| {
            let names: Vec<String> = (0..tickers).map(|i| format!("\"T{i}\"")).collect();
            format!(
                r#"{{"tickers":[{}],"created_at_ms":1,"state":"pending","max_rate_hz":{rate}}}"#,
                names.join(",")
            )
        };
        assert!(decode_session(id, record(100, "2.5").as_bytes(), &b).is_some());
        for (n, rate) in [(1, "1e-300"), (1, "0.001"), (1, "1e9"), (101, "1"), (5000, "1")] {
            assert!(decode_session(id, record(n, rate).as_bytes(), &b).is_none(), "{n} tickers at {rate} Hz");
        }
    }

    #[test]
    fn control_messages_are_signed_and_forgeries_refused() {
        let auth = ControlAuth::with_secret(b"s3cret\n");
        let other = ControlAuth::with_secret(b"another");
        let msg = ControlMessage { node: "n1".into(), ended: Some("x".into()), attached: None };
        let signed = encode_control(&msg, &auth);
        assert_eq!(signed.len(), SIG_HEX + 1 + encode_control(&msg, &NO_AUTH).len());
        assert_eq!(decode_control(signed.as_bytes(), &auth, &LAX), Some(msg.clone()));
        assert_eq!(decode_control(signed.as_bytes(), &other, &LAX), None, "another secret");
        assert_eq!(decode_control(encode_control(&msg, &NO_AUTH).as_bytes(), &auth, &LAX), None, "unsigned");
        let tampered = signed.replace(r#""ended":"x""#, r#""ended":"y""#);
        assert_eq!(decode_control(tampered.as_bytes(), &auth, &LAX), None, "body changed");
        assert_eq!(decode_control(signed.as_bytes(), &NO_AUTH, &LAX), None, "signed but no secret here");
        assert!(!ControlAuth::with_secret(b" \n").is_signed(), "a blank secret is no secret");
        assert!(!format!("{auth:?}").contains("s3cret"));
        for junk in [&b""[..], b".", &[b'0'; 65], &[0xff; 80]] {
            assert_eq!(decode_control(junk, &auth, &LAX), None);
        }
    }
}
