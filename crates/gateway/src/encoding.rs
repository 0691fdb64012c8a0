//! The encoding of a WebSocket's messages, chosen once in the handshake and passed to the
//! connection loop: JSON text frames (the default, `protocol`) or the binary subprotocol
//! `tickstream.v1.proto` (one protobuf message per binary frame, [`binary`]).
//!
//! Every server message goes through one of three functions, [`Encoding::data`] for a data
//! message, [`Encoding::status`] for a status message and [`Encoding::reply`] for everything
//! else ([`Reply`]), each a `match` with one arm per message kind and encoding: a new message
//! kind is one arm in each. The connection loop and
//! its request queue only ever see encoding-neutral values; the SSE stream (`sse`) reuses the
//! JSON arm.

use axum::http::{HeaderMap, HeaderValue, header};
use tickstream_api::{ErrorCode, SharedStatus, SharedTick, Ticker};
use tokio_tungstenite::tungstenite::Message;

use crate::protocol::{self, DataKind};

pub mod binary;

/// The `Sec-WebSocket-Protocol` token of the binary subprotocol.
pub const PROTO_SUBPROTOCOL: &str = "tickstream.v1.proto";
/// The token of the JSON protocol, for clients that name it explicitly (it is the default).
pub const JSON_SUBPROTOCOL: &str = "tickstream.v1.json";

/// How one WebSocket's messages are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// JSON text frames (README "WebSocket protocol").
    #[default]
    Json,
    /// `tickstream.v1.proto`: `WsServerMessage` / `WsClientMessage` in binary frames.
    Proto,
}

/// A server message other than data: the answer to a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The answer to an app `ping`, stamped when answered (ms since the Unix epoch).
    Pong(u64),
    /// A refreshed token was accepted; the socket stays open until then (ms since the epoch).
    Authenticated(u64),
    /// The session's whole ticker set after a change.
    Subscribed(Vec<Ticker>),
    /// A refused request.
    Error(ErrorCode, String),
}

impl Encoding {
    /// The client's choice, from the `Sec-WebSocket-Protocol` values it offers (RFC 6455
    /// §4.2.2): `tickstream.v1.proto` wins over `tickstream.v1.json` whatever their order, and
    /// the second value is the header the `101` must echo (`None`: the client offered no known
    /// protocol, or none at all, and gets JSON with no `Sec-WebSocket-Protocol` in the answer,
    /// as the RFC has it; a browser that insisted on another protocol then fails the socket).
    pub fn negotiate(headers: &HeaderMap) -> (Self, Option<HeaderValue>) {
        let offered = || {
            headers
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
        };
        if offered().any(|p| p == PROTO_SUBPROTOCOL) {
            (Self::Proto, Some(HeaderValue::from_static(PROTO_SUBPROTOCOL)))
        } else if offered().any(|p| p == JSON_SUBPROTOCOL) {
            (Self::Json, Some(HeaderValue::from_static(JSON_SUBPROTOCOL)))
        } else {
            (Self::Json, None)
        }
    }

    /// The data message `seq` of `ticks`.
    pub fn data(self, kind: DataKind, seq: u64, ticks: &[SharedTick]) -> Message {
        match self {
            Self::Json => Message::text(protocol::data_message(kind, seq, ticks)),
            Self::Proto => Message::binary(binary::data_message(kind, seq, ticks)),
        }
    }

    /// The status message `seq` of `statuses`.
    pub fn status(self, seq: u64, statuses: &[SharedStatus]) -> Message {
        match self {
            Self::Json => Message::text(protocol::status_message(seq, statuses)),
            Self::Proto => Message::binary(binary::status_message(seq, statuses)),
        }
    }

    /// A reply to a client request.
    pub fn reply(self, reply: &Reply) -> Message {
        match self {
            Self::Json => Message::text(json_reply(reply)),
            Self::Proto => Message::binary(binary::reply(reply)),
        }
    }
}

/// A reply as the JSON protocol writes it.
pub fn json_reply(reply: &Reply) -> String {
    match reply {
        Reply::Pong(ts) => protocol::pong(*ts),
        Reply::Authenticated(at) => protocol::authenticated(*at),
        Reply::Subscribed(tickers) => protocol::subscribed(tickers),
        Reply::Error(code, message) => protocol::error(*code, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(values: &[&str]) -> (Encoding, Option<String>) {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(v).unwrap());
        }
        let (encoding, echo) = Encoding::negotiate(&headers);
        (encoding, echo.map(|v| v.to_str().unwrap().to_owned()))
    }

    #[test]
    fn negotiates_the_subprotocol() {
        assert_eq!(offer(&[]), (Encoding::Json, None));
        assert_eq!(offer(&["chat, superchat"]), (Encoding::Json, None));
        assert_eq!(offer(&["tickstream.v1.json"]), (Encoding::Json, Some(JSON_SUBPROTOCOL.into())));
        let proto = (Encoding::Proto, Some(PROTO_SUBPROTOCOL.into()));
        assert_eq!(offer(&["tickstream.v1.proto"]), proto);
        assert_eq!(offer(&["tickstream.v1.json, tickstream.v1.proto"]), proto);
        assert_eq!(offer(&["x", "tickstream.v1.proto"]), proto);
        // Tokens are case-sensitive (RFC 6455 §4.1).
        assert_eq!(offer(&["TICKSTREAM.V1.PROTO"]), (Encoding::Json, None));
    }

    #[test]
    fn json_replies_are_the_protocol_messages() {
        assert_eq!(json_reply(&Reply::Pong(9)), protocol::pong(9));
        assert_eq!(json_reply(&Reply::Authenticated(7)), protocol::authenticated(7));
        let e = Reply::Error(ErrorCode::InvalidJson, "no".into());
        assert_eq!(json_reply(&e), protocol::error(ErrorCode::InvalidJson, "no"));
        assert!(Encoding::Json.reply(&Reply::Pong(1)).is_text());
        assert!(Encoding::Proto.reply(&Reply::Pong(1)).is_binary());
    }
}
