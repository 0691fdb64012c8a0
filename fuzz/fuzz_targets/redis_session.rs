//! Session records (`tickstream:session:<id>`), which anyone with Redis access can overwrite:
//! the real decoder must not panic, accepts only valid records, and an accepted record
//! round-trips through the encoder unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream_api::{SessionId, Ticker};
use tickstream_redis::wire::{decode_session, encode_session};

fuzz_target!(|data: &[u8]| {
    let id = SessionId::random();
    let Some(record) = decode_session(id, data) else { return };
    assert_eq!(record.id, id);
    assert!(!record.tickers.is_empty());
    for t in &record.tickers {
        assert_eq!(Ticker::parse(t.as_str()).as_ref(), Ok(t));
    }
    assert!(record.max_rate_hz.is_none_or(|hz| hz.is_finite() && hz > 0.0));
    assert_eq!(decode_session(id, encode_session(&record).as_bytes()), Some(record));
});
