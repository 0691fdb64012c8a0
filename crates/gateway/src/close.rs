//! WebSocket close codes: every way a connection ends, typed, documented (README "Close codes")
//! and counted in `tickstream_ws_disconnects_total{code}`.

/// A close code the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the server is shutting down; reconnect soon.
    GoingAway,
    /// 1002: the client broke the WebSocket protocol (for example an unmasked frame).
    ProtocolError,
    /// 1003: the client sent a binary frame; the protocol is JSON text.
    Unsupported,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidData,
    /// 1008: the client sent messages faster than the inbound limit.
    PolicyViolation,
    /// 1009: a frame or message over the size limit (4 KiB).
    TooBig,
    /// 1011: the engine stream failed or ended unexpectedly.
    InternalError,
    /// 1013: no engine can serve the session now (all unreachable); reconnect with backoff.
    TryAgainLater,
    /// 4008: a write did not complete within the write timeout (client not reading).
    SlowClient,
    /// 4401: the connection's token expired and no fresh one was sent over the socket.
    TokenExpired,
    /// 4404: the session was deleted or expired.
    SessionEnded,
    /// 4408: nothing received within the heartbeat timeout.
    HeartbeatTimeout,
    /// 4409: a newer connection for the same session replaced this one.
    Replaced,
}

impl CloseCode {
    /// Every code the server sends (README "Close codes" lists these, plus 1000 and 1006).
    pub const ALL: &'static [CloseCode] = &[
        Self::GoingAway,
        Self::ProtocolError,
        Self::Unsupported,
        Self::InvalidData,
        Self::PolicyViolation,
        Self::TooBig,
        Self::InternalError,
        Self::TryAgainLater,
        Self::SlowClient,
        Self::TokenExpired,
        Self::SessionEnded,
        Self::HeartbeatTimeout,
        Self::Replaced,
    ];

    pub fn code(self) -> u16 {
        match self {
            Self::GoingAway => 1001,
            Self::ProtocolError => 1002,
            Self::Unsupported => 1003,
            Self::InvalidData => 1007,
            Self::PolicyViolation => 1008,
            Self::TooBig => 1009,
            Self::InternalError => 1011,
            Self::TryAgainLater => 1013,
            Self::SlowClient => 4008,
            Self::TokenExpired => 4401,
            Self::SessionEnded => 4404,
            Self::HeartbeatTimeout => 4408,
            Self::Replaced => 4409,
        }
    }

    /// The close frame's reason text (kept short: a close payload holds at most 123 bytes).
    pub fn reason(self) -> &'static str {
        match self {
            Self::GoingAway => "server shutting down",
            Self::ProtocolError => "protocol error",
            Self::Unsupported => "binary frames are not supported",
            Self::InvalidData => "invalid UTF-8",
            Self::PolicyViolation => "too many messages",
            Self::TooBig => "message too big",
            Self::InternalError => "internal error",
            Self::TryAgainLater => "no engine available",
            Self::SlowClient => "write timed out",
            Self::TokenExpired => "token expired",
            Self::SessionEnded => "session ended",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::Replaced => "replaced by a newer connection",
        }
    }
}

/// How a connection ended, for the disconnect metric's `code` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server closed with this code.
    Server(CloseCode),
    /// The client sent a close frame with this code (`None`: no code, shown as 1005).
    Client(Option<u16>),
    /// The TCP connection was lost without a close frame (shown as 1006).
    Lost,
}

impl Ending {
    /// The metric label: the close code as a number. Client codes outside 1000–1015 are folded
    /// into `other`, so a client cannot grow the label set.
    pub fn label(self) -> String {
        match self {
            Self::Server(c) => c.code().to_string(),
            Self::Client(None) => "1005".into(),
            Self::Client(Some(c)) if (1000..=1015).contains(&c) => c.to_string(),
            Self::Client(Some(_)) => "other".into(),
            Self::Lost => "1006".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(Ending::Server(CloseCode::Replaced).label(), "4409");
        assert_eq!(Ending::Client(Some(1001)).label(), "1001");
        assert_eq!(Ending::Client(Some(4321)).label(), "other");
        assert_eq!(Ending::Client(None).label(), "1005");
        assert_eq!(Ending::Lost.label(), "1006");
    }
}
