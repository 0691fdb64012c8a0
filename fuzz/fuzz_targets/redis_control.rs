//! Control messages on `tickstream:ctl`, which any Redis client may publish: the real decoder
//! (alone and through the Pub/Sub dispatcher) must not panic, and an accepted message
//! round-trips through the encoder unchanged — unsigned, and signed with a cluster secret (where
//! a flipped byte of a signed message must be refused).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickstream_api::SessionId;
use tickstream_redis::wire::{Bounds, ControlAuth, Incoming, decode_control, decode_message, encode_control};

fuzz_target!(|data: &[u8]| {
    let b = Bounds::DEFAULT;
    let signed = ControlAuth::with_secret(b"fuzz secret");
    for auth in [ControlAuth::none(), signed.clone()] {
        let decoded = decode_control(data, &auth, &b);
        match decode_message("tickstream:ctl", data, &auth, &b) {
            Incoming::Control(msg) => assert_eq!(Some(&msg), decoded.as_ref()),
            Incoming::Invalid => assert!(decoded.is_none()),
            other => panic!("a control-channel message decoded as {other:?}"),
        }
    }
    let Some(msg) = decode_control(data, &ControlAuth::none(), &b) else { return };
    assert_eq!(decode_control(encode_control(&msg, &ControlAuth::none()).as_bytes(), &ControlAuth::none(), &b).as_ref(), Some(&msg));
    let mut sealed = encode_control(&msg, &signed).into_bytes();
    if sealed.len() > b.max_payload {
        return;
    }
    assert_eq!(decode_control(&sealed, &signed, &b).as_ref(), Some(&msg));
    let at = data.len() % sealed.len();
    sealed[at] ^= 1;
    assert_eq!(decode_control(&sealed, &signed, &b), None, "a tampered signed message was accepted");
    // The ids it names are checked by the receiver; that check must not panic either.
    for id in [&msg.ended, &msg.attached].into_iter().flatten() {
        if let Some(parsed) = SessionId::parse(id) {
            assert_eq!(SessionId::parse(&parsed.to_string()), Some(parsed));
        }
    }
});
