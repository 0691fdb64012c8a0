//! The binary subprotocol `tickstream.v1.proto`: server messages as `WsServerMessage` and client
//! messages as `WsClientMessage` (crates/proto/proto/tickstream.proto), one per binary frame.
//!
//! Data messages, the hot path, are written by hand with prost's wire primitives straight into
//! one buffer sized in advance: building the generated `WsData` would allocate a `String` per
//! ticker per session. Every other message is rare and goes through the generated types. The
//! tests decode both with the generated types, so the hand encoder cannot drift from the schema.

use bytes::Bytes;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tickstream_api::{
    ErrorCode, SharedStatus, SharedTick, Tick, TickerStatus, TradingStatus, normalize_tickers,
};
use tickstream_proto as pb;

use super::Reply;
use crate::protocol::{ClientMessage, DataKind, ProtocolError};

// Field numbers, as in tickstream.proto.
const SERVER_SNAPSHOT: u32 = 1;
const SERVER_PRICES: u32 = 2;
const DATA_SEQ: u32 = 1;
const DATA_PRICES: u32 = 2;
const PRICE_TICKER: u32 = 1;
const PRICE_PRICE: u32 = 2;
const PRICE_TS: u32 = 3;
/// The quote's fields are 4–13, in `Quote::FIELDS` order; the producer's trading status 14.
const PRICE_FIRST_QUOTE: u32 = 4;
const PRICE_TRADING: u32 = 14;

/// The key of a field (its number and wire type): one byte for field numbers below 16.
const fn key(tag: u32, wire: WireType) -> u8 {
    ((tag << 3) | wire as u32) as u8
}

/// Appends a varint through a stack buffer: one `extend_from_slice` rather than a push per byte.
fn put_varint(mut value: u64, buf: &mut Vec<u8>) {
    let mut bytes = [0u8; 10];
    let mut n = 0;
    while value >= 0x80 {
        bytes[n] = (value as u8 & 0x7f) | 0x80;
        value >>= 7;
        n += 1;
    }
    bytes[n] = value as u8;
    buf.extend_from_slice(&bytes[..=n]);
}

/// Appends one `prices` entry of a `WsData`: its key, its length and the `Price`. Zero values
/// are left out, as proto3 does (`ts` 0 only; a price is always positive); the quote fields and
/// the trading status only when present (they are `optional`), like the JSON.
fn put_price(tick: &Tick, buf: &mut Vec<u8>) {
    // Once per tick: `Ticker::as_str` checks UTF-8 each time, and it was 30% of this
    // function's profile when called twice (once to size the message, once to write it).
    let ticker = tick.ticker();
    let name = ticker.as_str().as_bytes();
    let ts = tick.ts_ms();
    let ts_len = if ts == 0 { 0 } else { key_len(PRICE_TS) + encoded_len_varint(ts) };
    let quote = tick.quote().fields();
    let quote_len = quote.iter().filter(|(_, v)| v.is_some()).count() * 9;
    let trading = tick.trading_status().map(trading_status);
    let trading_len = trading.map_or(0, |t| 1 + encoded_len_varint(t as u64));
    let len = key_len(PRICE_TICKER)
        + encoded_len_varint(name.len() as u64)
        + name.len()
        + 1
        + 8
        + ts_len
        + quote_len
        + trading_len;
    buf.push(key(DATA_PRICES, WireType::LengthDelimited));
    put_varint(len as u64, buf);
    buf.push(key(PRICE_TICKER, WireType::LengthDelimited));
    put_varint(name.len() as u64, buf);
    buf.extend_from_slice(name);
    buf.push(key(PRICE_PRICE, WireType::SixtyFourBit));
    buf.extend_from_slice(&tick.price().to_le_bytes());
    if ts != 0 {
        buf.push(key(PRICE_TS, WireType::Varint));
        put_varint(ts, buf);
    }
    for (tag, (_, value)) in (PRICE_FIRST_QUOTE..).zip(quote) {
        if let Some(value) = value {
            buf.push(key(tag, WireType::SixtyFourBit));
            buf.extend_from_slice(&value.to_le_bytes());
        }
    }
    if let Some(t) = trading {
        buf.push(key(PRICE_TRADING, WireType::Varint));
        put_varint(t as u64, buf);
    }
}

fn trading_status(t: TradingStatus) -> i32 {
    ticker_status(match t {
        TradingStatus::Halted => TickerStatus::Halted,
        TradingStatus::Resumed => TickerStatus::Resumed,
    })
}

fn ticker_status(s: TickerStatus) -> i32 {
    let status = match s {
        TickerStatus::Live => pb::TickerStatus::Live,
        TickerStatus::Stale => pb::TickerStatus::Stale,
        TickerStatus::Halted => pb::TickerStatus::Halted,
        TickerStatus::Resumed => pb::TickerStatus::Resumed,
    };
    status as i32
}

/// `WsServerMessage { status: WsStatus { seq, statuses } }`. Rare (a status changes at most
/// every `--stale-after`), so through the generated types.
pub fn status_message(seq: u64, statuses: &[SharedStatus]) -> Bytes {
    let statuses = statuses
        .iter()
        .map(|s| pb::StatusChange {
            ticker: s.ticker().to_string(),
            status: ticker_status(s.status()),
            ts_ms: s.ts_ms(),
        })
        .collect();
    let message = pb::ws_server_message::Message::Status(pb::WsStatus { seq, statuses });
    Bytes::from(pb::WsServerMessage { message: Some(message) }.encode_to_vec())
}

/// Room left at the front of a data message for its key and length (a varint of at most 10
/// bytes), written last, once the length is known.
const HEADER_ROOM: usize = 11;

/// `WsServerMessage { snapshot | prices: WsData { seq, prices } }` in one pass over the ticks:
/// the body is written after `HEADER_ROOM` (11) bytes, the header right-aligned into them, and
/// the result is a slice of the one buffer (no copy).
pub fn data_message(kind: DataKind, seq: u64, ticks: &[SharedTick]) -> Bytes {
    let tag = match kind {
        DataKind::Snapshot => SERVER_SNAPSHOT,
        DataKind::Prices => SERVER_PRICES,
    };
    // A `Price` with a 4-character symbol is 25 bytes plus its key and length.
    let mut buf = Vec::with_capacity(HEADER_ROOM + 11 + ticks.len() * 32);
    buf.resize(HEADER_ROOM, 0);
    if seq != 0 {
        buf.push(key(DATA_SEQ, WireType::Varint));
        put_varint(seq, &mut buf);
    }
    for tick in ticks {
        put_price(tick, &mut buf);
    }
    let data_len = (buf.len() - HEADER_ROOM) as u64;
    let mut header = Vec::with_capacity(HEADER_ROOM);
    encode_key(tag, WireType::LengthDelimited, &mut header);
    encode_varint(data_len, &mut header);
    let start = HEADER_ROOM - header.len();
    buf[start..HEADER_ROOM].copy_from_slice(&header);
    Bytes::from(buf).slice(start..)
}

/// A reply as a `WsServerMessage`.
pub fn reply(reply: &Reply) -> Vec<u8> {
    use pb::ws_server_message::Message as M;
    let message = match reply {
        Reply::Pong(ts) => M::Pong(pb::WsPong { ts: *ts }),
        Reply::Authenticated(at) => M::Authenticated(pb::WsAuthenticated { expires_at: *at }),
        Reply::Subscribed(tickers) => {
            M::Subscribed(pb::WsSubscribed { tickers: tickers.iter().map(ToString::to_string).collect() })
        }
        Reply::Error(code, message) => {
            M::Error(pb::WsError { code: code.as_str().to_owned(), message: message.clone() })
        }
    };
    pb::WsServerMessage { message: Some(message) }.encode_to_vec()
}

/// Parses one binary frame: a `WsClientMessage`.
///
/// # Errors
/// `invalid_message` (not a `WsClientMessage`, or none of its fields set), `empty_tickers`,
/// `invalid_ticker`: the codes of the JSON parser, minus `invalid_json` and `unknown_type`.
pub fn parse_client(bytes: &[u8]) -> Result<ClientMessage, ProtocolError> {
    use pb::ws_client_message::Message as M;
    let invalid = |message: String| ProtocolError { code: ErrorCode::InvalidMessage, message };
    let msg = pb::WsClientMessage::decode(bytes)
        .map_err(|e| invalid(format!("binary frame is not a tickstream.v1.WsClientMessage: {e}")))?;
    match msg.message {
        None => Err(invalid("WsClientMessage needs one of ping, subscribe, unsubscribe or auth".into())),
        Some(M::Ping(_)) => Ok(ClientMessage::Ping),
        Some(M::Subscribe(t)) => Ok(ClientMessage::Subscribe(tickers(&t.tickers)?)),
        Some(M::Unsubscribe(t)) => Ok(ClientMessage::Unsubscribe(tickers(&t.tickers)?)),
        Some(M::Auth(a)) => Ok(ClientMessage::Auth(a.token)),
    }
}

fn tickers(symbols: &[String]) -> Result<Vec<tickstream_api::Ticker>, ProtocolError> {
    if symbols.is_empty() {
        let message = "\"tickers\" must not be empty".to_owned();
        return Err(ProtocolError { code: ErrorCode::EmptyTickers, message });
    }
    normalize_tickers(symbols)
        .map_err(|e| ProtocolError { code: ErrorCode::InvalidTicker, message: e.to_string() })
}

#[cfg(test)]
mod tests;
