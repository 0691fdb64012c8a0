//! The binary subprotocol `tickstream.v1.proto`: server messages as `WsServerMessage` and client
//! messages as `WsClientMessage` (crates/proto/proto/tickstream.proto), one per binary frame.
//!
//! Data messages, the hot path, are written by hand with prost's wire primitives straight into
//! one buffer sized in advance: building the generated `WsData` would allocate a `String` per
//! ticker per session. Every other message is rare and goes through the generated types. The
//! tests decode both with the generated types, so the hand encoder cannot drift from the schema.

use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tickstream_api::{ErrorCode, SharedTick, Tick, normalize_tickers};
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

/// Length of one encoded `Price` (without its key and length prefix). Zero values are left
/// out, as proto3 does (`ts` 0 only; a price is always positive).
fn price_len(tick: &Tick) -> usize {
    let ticker = tick.ticker();
    let name = ticker.as_str().len();
    let ts = tick.ts_ms();
    let ts_len = if ts == 0 { 0 } else { key_len(PRICE_TS) + encoded_len_varint(ts) };
    key_len(PRICE_TICKER) + encoded_len_varint(name as u64) + name + key_len(PRICE_PRICE) + 8 + ts_len
}

fn put_price(tick: &Tick, len: usize, buf: &mut Vec<u8>) {
    encode_key(DATA_PRICES, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
    let ticker = tick.ticker();
    let name = ticker.as_str().as_bytes();
    encode_key(PRICE_TICKER, WireType::LengthDelimited, buf);
    encode_varint(name.len() as u64, buf);
    buf.extend_from_slice(name);
    encode_key(PRICE_PRICE, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&tick.price().to_le_bytes());
    if tick.ts_ms() != 0 {
        encode_key(PRICE_TS, WireType::Varint, buf);
        encode_varint(tick.ts_ms(), buf);
    }
}

/// `WsServerMessage { snapshot | prices: WsData { seq, prices } }`, in one allocation of the
/// exact size.
pub fn data_message(kind: DataKind, seq: u64, ticks: &[SharedTick]) -> Vec<u8> {
    let tag = match kind {
        DataKind::Snapshot => SERVER_SNAPSHOT,
        DataKind::Prices => SERVER_PRICES,
    };
    let prices: usize = ticks
        .iter()
        .map(|t| {
            let len = price_len(t);
            key_len(DATA_PRICES) + encoded_len_varint(len as u64) + len
        })
        .sum();
    let seq_len = if seq == 0 { 0 } else { key_len(DATA_SEQ) + encoded_len_varint(seq) };
    let data_len = seq_len + prices;
    let mut buf = Vec::with_capacity(key_len(tag) + encoded_len_varint(data_len as u64) + data_len);
    encode_key(tag, WireType::LengthDelimited, &mut buf);
    encode_varint(data_len as u64, &mut buf);
    if seq != 0 {
        encode_key(DATA_SEQ, WireType::Varint, &mut buf);
        encode_varint(seq, &mut buf);
    }
    for tick in ticks {
        put_price(tick, price_len(tick), &mut buf);
    }
    buf
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
