//! Session records (`tickstream:session:<id>`), which anyone with Redis access can overwrite:
//! the real decoder must not panic, accepts only valid records, and an accepted record
//! round-trips through the encoder unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream_api::{SessionId, Ticker};
use tickstream_redis::wire::{Bounds, decode_session, encode_session};

fuzz_target!(|data: &[u8]| {
    let id = SessionId::random();
    let b = Bounds::DEFAULT;
    let Some(record) = decode_session(id, data, &b) else { return };
    assert_eq!(record.id, id);
    assert!(!record.tickers.is_empty() && record.tickers.len() <= b.max_tickers);
    // Whatever is accepted is usable by attach: the interval it derives must not panic.
    if let Some(hz) = record.max_rate_hz {
        let _ = std::time::Duration::from_secs_f64(1.0 / hz);
    }
    for t in &record.tickers {
        assert_eq!(Ticker::parse(t.as_str()).as_ref(), Ok(t));
    }
    assert!(record.max_rate_hz.is_none_or(|hz| (b.min_rate_hz..=b.max_rate_hz).contains(&hz)));
    assert_eq!(decode_session(id, encode_session(&record).as_bytes(), &b), Some(record));
});
