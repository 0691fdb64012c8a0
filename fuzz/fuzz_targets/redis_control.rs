//! Control messages on `tickstream:ctl`, which any Redis client may publish: the real decoder
//! (alone and through the Pub/Sub dispatcher) must not panic, and an accepted message
//! round-trips through the encoder unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream_api::SessionId;
use tickstream_redis::wire::{Incoming, decode_control, decode_message, encode_control};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_control(data);
    match decode_message("tickstream:ctl", data) {
        Incoming::Control(msg) => assert_eq!(Some(&msg), decoded.as_ref()),
        Incoming::Invalid => assert!(decoded.is_none()),
        other => panic!("a control-channel message decoded as {other:?}"),
    }
    let Some(msg) = decoded else { return };
    assert_eq!(decode_control(encode_control(&msg).as_bytes()).as_ref(), Some(&msg));
    // The ids it names are checked by the receiver; that check must not panic either.
    for id in [&msg.ended, &msg.attached].into_iter().flatten() {
        if let Some(parsed) = SessionId::parse(id) {
            assert_eq!(SessionId::parse(&parsed.to_string()), Some(parsed));
        }
    }
});
