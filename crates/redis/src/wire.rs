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
use tickstream_api::{Quote, SessionId, SessionState, Tick, Ticker, TradingStatus, TsWindow, now_ms};
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

/// A price payload as producers write it (README "The tick schema"); `ticker` and `ts` may be
/// left out, and so may every quote field and `status`.
#[derive(Deserialize)]
struct PriceMessage<'a> {
    #[serde(default, borrow)]
    ticker: Option<&'a str>,
    price: f64,
    #[serde(default)]
    ts: Option<u64>,
    // Listed rather than a flattened `Quote`: flattening buffers every field of every message
    // on the read loop.
    #[serde(default)]
    bid: Option<f64>,
    #[serde(default)]
    ask: Option<f64>,
    #[serde(default)]
    bid_size: Option<f64>,
    #[serde(default)]
    ask_size: Option<f64>,
    #[serde(default)]
    size: Option<f64>,
    #[serde(default)]
    volume: Option<f64>,
    #[serde(default)]
    open: Option<f64>,
    #[serde(default)]
    high: Option<f64>,
    #[serde(default)]
    low: Option<f64>,
    #[serde(default)]
    prev_close: Option<f64>,
    /// `halted` or `resumed`; anything else makes the payload invalid.
    #[serde(default, borrow)]
    status: Option<&'a str>,
}

impl PriceMessage<'_> {
    fn quote(&self) -> Quote {
        Quote {
            bid: self.bid,
            ask: self.ask,
            bid_size: self.bid_size,
            ask_size: self.ask_size,
            size: self.size,
            volume: self.volume,
            open: self.open,
            high: self.high,
            low: self.low,
            prev_close: self.prev_close,
        }
    }
}

/// Parses a price payload for `ticker` (from the channel name). External producers may omit
/// `ticker` and `ts` (the receiver then stamps the time); a `ticker` naming another symbol, a
/// non-positive or non-numeric price, a bad quote (a field not finite and >= 0, a bid above the
/// ask), a `status` other than `halted`/`resumed`, a `ts` outside the window, a payload over the
/// size bound, or anything else malformed is `None`.
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
    let trading = match msg.status {
        None => None,
        Some(s) => Some(TradingStatus::parse(s)?),
    };
    Some(Tick::new(ticker, msg.price, ts).ok()?.with_quote(msg.quote()).ok()?.with_trading_status(trading))
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
        owner: wire.owner,
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
