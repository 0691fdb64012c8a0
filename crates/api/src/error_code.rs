//! Every error code a client can receive, in one enum: the HTTP JSON errors
//! (`{"error":{"code":…}}`), the WebSocket `error` messages, and the tag that carries a service
//! error across gRPC (`tickstream-error` metadata). One list, so the three cannot drift apart; a
//! test in the binary crate checks that the README's "Error codes" table lists exactly these.
//!
//! The HTTP status of each code is the gateway's business (`tickstream_gateway::error`); the
//! WebSocket close codes are a different thing (a connection's end, not a refused request) and
//! live in `tickstream_gateway::close`.

use std::fmt;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident => $text:literal,)*) => {
        /// A documented error code (README "Error codes").
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the README's order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The snake_case text clients see.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }

            /// The code for a text, if it is one of ours.
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// A session or a `subscribe` with no tickers.
    EmptyTickers => "empty_tickers",
    /// More tickers than `--max-tickers-per-session`.
    TooManyTickers => "too_many_tickers",
    /// A symbol that is not 1–12 characters of `A–Z 0–9 . -`.
    InvalidTicker => "invalid_ticker",
    /// `max_rate_hz` outside its range.
    InvalidMaxRate => "invalid_max_rate",
    /// A body or message that is not JSON.
    InvalidJson => "invalid_json",
    /// JSON of the wrong shape (missing or mistyped fields).
    InvalidRequest => "invalid_request",
    /// A body that could not be read (for example a broken chunked encoding).
    InvalidBody => "invalid_body",
    /// A body over the route's limit.
    PayloadTooLarge => "payload_too_large",
    /// A body whose `Content-Type` is not `application/json`.
    UnsupportedMediaType => "unsupported_media_type",
    /// `--max-sessions` reached.
    SessionLimitReached => "session_limit_reached",
    /// An unknown, expired or deleted session.
    SessionNotFound => "session_not_found",
    /// A price that is not finite and > 0.
    InvalidPrice => "invalid_price",
    /// A publish with no prices.
    EmptyPrices => "empty_prices",
    /// A publish of more than 10,000 prices.
    TooManyPrices => "too_many_prices",
    /// `--max-symbols` distinct tickers already known.
    SymbolLimitReached => "symbol_limit_reached",
    /// No such route.
    NotFound => "not_found",
    /// A known route with another method.
    MethodNotAllowed => "method_not_allowed",
    /// A request whose body and handling took longer than `--http-header-timeout`.
    RequestTimeout => "request_timeout",
    /// `GET /ws` without `session_id`.
    MissingSessionId => "missing_session_id",
    /// `GET /ws` that is not a version 13 WebSocket upgrade.
    WebsocketUpgradeRequired => "websocket_upgrade_required",
    /// A WebSocket upgrade with a bad `Sec-WebSocket-Key`.
    InvalidHandshake => "invalid_handshake",
    /// `--max-connections` WebSockets already open.
    TooManyConnections => "too_many_connections",
    /// The node is shutting down.
    ShuttingDown => "shutting_down",
    /// The engine (or its broker or session store) cannot serve the request now; retry.
    Unavailable => "unavailable",
    /// A WebSocket message without a string `type`, or with a bad field.
    InvalidMessage => "invalid_message",
    /// A WebSocket message of a type the server does not know.
    UnknownType => "unknown_type",
    /// No token, or a token that is malformed, badly signed, expired or for another issuer or
    /// audience (`WWW-Authenticate: Bearer`).
    Unauthorized => "unauthorized",
    /// A valid token without the scope the request needs.
    Forbidden => "forbidden",
    /// A cross-origin request or WebSocket handshake from an `Origin` not in `--allowed-origins`.
    OriginNotAllowed => "origin_not_allowed",
    /// A price whose `ts` is outside the accepted window.
    InvalidTs => "invalid_ts",
    /// The client is over one of its limits (`Retry-After` says when to try again).
    RateLimited => "rate_limited",
    /// A quote field (`bid`, `ask`, sizes, `volume`, `open`, `high`, `low`, `prev_close`) that
    /// is not a finite number of at least zero.
    InvalidQuote => "invalid_quote",
    /// A quote whose `bid` is above its `ask`.
    CrossedQuote => "crossed_quote",
    /// A status that is not `halted` or `resumed`.
    InvalidStatus => "invalid_status",
    /// A status for a ticker that has no price yet.
    NoPrice => "no_price",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl crate::ServiceError {
    /// The code a client receives for this error, on every path (HTTP, WebSocket, gRPC).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::SessionNotFound => ErrorCode::SessionNotFound,
            Self::NoTickers => ErrorCode::EmptyTickers,
            Self::TooManyTickers { .. } => ErrorCode::TooManyTickers,
            Self::InvalidRate { .. } => ErrorCode::InvalidMaxRate,
            Self::SessionLimit { .. } => ErrorCode::SessionLimitReached,
            Self::SymbolLimit { .. } => ErrorCode::SymbolLimitReached,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_and_is_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert!(c.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{c}");
        }
        assert_eq!(ErrorCode::parse("no_tickers"), None);
    }
}
