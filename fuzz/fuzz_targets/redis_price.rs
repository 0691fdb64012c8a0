//! Price payloads on `tickstream:px:*`, as any Redis client may publish them: the real Pub/Sub
//! decoder must not panic, and an accepted price decodes back from its own JSON unchanged.
//! Input: `<channel>\n<payload>` (no newline: the whole input is the payload on a valid channel).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream_api::Ticker;
use tickstream_redis::wire::{Bounds, ControlAuth, Incoming, decode_message, decode_price};

fuzz_target!(|data: &[u8]| {
    let (channel, payload) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => ("tickstream:px:AAPL".to_owned(), data),
    };
    let b = Bounds::DEFAULT;
    let Incoming::Price(tick) = decode_message(&channel, payload, &ControlAuth::none(), &b) else { return };
    assert!(tick.price().is_finite() && tick.price() > 0.0);
    assert!(payload.len() <= b.max_payload);
    assert!(b.ts_window.check(tick.ts_ms(), tickstream_api::now_ms()).is_ok(), "ts {} outside the window", tick.ts_ms());
    // The channel names the ticker; the payload may only agree with it.
    let symbol = channel.strip_prefix("tickstream:px:").expect("a price comes from a price channel");
    assert_eq!(Ticker::parse(symbol), Ok(tick.ticker()));
    // Round trip through the encoder every node publishes with.
    assert_eq!(decode_price(tick.ticker(), tick.json().as_bytes(), &b).as_ref(), Some(&tick));
});
