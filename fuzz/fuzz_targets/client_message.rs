//! WebSocket client messages, ticker symbols and session ids: no input may panic, and accepted
//! tickers are canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream_api::{SessionId, Ticker};
use tickstream_gateway::protocol::{ClientMessage, parse_client};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(ClientMessage::Subscribe(tickers) | ClientMessage::Unsubscribe(tickers)) = parse_client(text) {
        for t in tickers {
            assert_eq!(Ticker::parse(t.as_str()), Ok(t));
        }
    }
    if let Ok(t) = Ticker::parse(text) {
        assert_eq!(t.as_str(), text.to_ascii_uppercase());
    }
    if let Some(id) = SessionId::parse(text) {
        assert_eq!(id.to_string(), text.to_ascii_lowercase());
    }
});
