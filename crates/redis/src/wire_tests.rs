//! Tests of `wire.rs`: the formats, their bounds and control-message signatures.

use std::time::Duration;

use super::*;

fn t(s: &str) -> Ticker {
    Ticker::parse(s).unwrap()
}

/// The default bounds with any `ts` accepted, for the tests about the format itself.
const LAX: Bounds = Bounds {
    ts_window: TsWindow { max_future: Duration::from_secs(5), max_age: Duration::MAX },
    ..Bounds::DEFAULT
};
const NO_AUTH: ControlAuth = ControlAuth { key: None };

#[test]
fn price_payloads_from_external_producers() {
    let tick = decode_price(t("AAPL"), br#"{"ticker":"AAPL","price":189.25,"ts":5}"#, &LAX).unwrap();
    assert_eq!((tick.price(), tick.ts_ms()), (189.25, 5));
    // ticker and ts may be left out; the channel names the ticker, the receiver stamps ts.
    let tick = decode_price(t("AAPL"), br#"{"price":1.5}"#, &LAX).unwrap();
    assert!(tick.ts_ms() > 0);
    assert_eq!(tick.json(), format!(r#"{{"ticker":"AAPL","price":1.5,"ts":{}}}"#, tick.ts_ms()));
    for bad in
        [&br#"{"ticker":"MSFT","price":1}"#[..], br#"{"price":-1}"#, b"189.25", b"", br#"{"price":"1"}"#]
    {
        assert!(decode_price(t("AAPL"), bad, &LAX).is_none(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn a_tick_decodes_back_from_its_own_json() {
    let tick = Tick::new(t("BRK.B"), 0.1 + 0.2, 1_764_230_400_123).unwrap();
    assert_eq!(decode_price(t("BRK.B"), tick.json().as_bytes(), &LAX), Some(tick));
}

#[test]
fn quoted_and_halted_records_decode_back_from_their_own_json_and_bad_quotes_are_refused() {
    let quote = Quote {
        bid: Some(189.2),
        ask: Some(189.3),
        bid_size: Some(300.0),
        ask_size: Some(200.0),
        size: Some(100.0),
        volume: Some(1.25e6),
        open: Some(187.0),
        high: Some(190.0),
        low: Some(186.5),
        prev_close: Some(188.0),
    };
    let tick = Tick::new(t("AAPL"), 189.25, 7).unwrap().with_quote(quote).unwrap();
    assert_eq!(decode_price(t("AAPL"), tick.json().as_bytes(), &LAX), Some(tick.clone()));
    let halted = tick.with_trading_status(Some(TradingStatus::Halted));
    assert_eq!(decode_price(t("AAPL"), halted.json().as_bytes(), &LAX), Some(halted));
    for bad in [
        &br#"{"price":1,"bid":-1}"#[..],
        br#"{"price":1,"bid":2,"ask":1}"#,
        br#"{"price":1,"volume":"many"}"#,
        br#"{"price":1,"status":"stale"}"#,
        br#"{"price":1,"status":"live"}"#,
    ] {
        assert!(decode_price(t("A"), bad, &LAX).is_none(), "{}", String::from_utf8_lossy(bad));
    }
    let partial = decode_price(t("A"), br#"{"price":1,"ts":3,"bid":0.5}"#, &LAX).unwrap();
    assert_eq!(partial.quote(), &Quote { bid: Some(0.5), ..Quote::EMPTY });
}

#[test]
fn messages_are_classified_by_channel() {
    let price = decode_message("tickstream:px:aapl", br#"{"price":2,"ts":7}"#, &NO_AUTH, &LAX);
    assert_eq!(price, Incoming::Price(Tick::new(t("AAPL"), 2.0, 7).unwrap()));
    assert_eq!(
        decode_message("tickstream:px:not a ticker", br#"{"price":2}"#, &NO_AUTH, &LAX),
        Incoming::Invalid
    );
    assert_eq!(decode_message("tickstream:px:AAPL", b"{", &NO_AUTH, &LAX), Incoming::Invalid);
    assert_eq!(decode_message("tickstream:ctl", b"[]", &NO_AUTH, &LAX), Incoming::Invalid);
    assert_eq!(decode_message("elsewhere", br#"{"price":2}"#, &NO_AUTH, &LAX), Incoming::Other);
    let ctl = ControlMessage { node: "n1".into(), ended: Some("x".into()), attached: None };
    assert_eq!(
        decode_message("tickstream:ctl", encode_control(&ctl, &NO_AUTH).as_bytes(), &NO_AUTH, &LAX),
        Incoming::Control(ctl)
    );
}

#[test]
fn control_messages_round_trip_and_omit_what_is_absent() {
    let msg = ControlMessage { node: "ab".into(), ended: None, attached: Some("s\"1".into()) };
    let json = encode_control(&msg, &NO_AUTH);
    assert_eq!(json, r#"{"node":"ab","attached":"s\"1"}"#);
    assert_eq!(decode_control(json.as_bytes(), &NO_AUTH, &LAX), Some(msg));
    assert_eq!(decode_control(br#"{"ended":"x"}"#, &NO_AUTH, &LAX), None, "node is required");
    assert_eq!(
        decode_control(br#"{"node":"n","ended":null}"#, &NO_AUTH, &LAX),
        Some(ControlMessage { node: "n".into(), ended: None, attached: None })
    );
}

#[test]
fn records_round_trip_and_bad_ones_are_absent() {
    let id = SessionId::random();
    let rec = SessionRecord {
        id,
        tickers: vec![t("AAPL"), t("BRK.B")],
        max_rate_hz: Some(2.5),
        created_at_ms: 1_764_230_400_123,
        state: SessionState::Streaming,
        owner: Some("alice".into()),
    };
    assert_eq!(decode_session(id, encode_session(&rec).as_bytes(), &LAX), Some(rec));
    // A record written before owners existed (or with auth off) still decodes, ownerless.
    let old = decode_session(id, br#"{"tickers":["A"],"created_at_ms":1,"state":"pending"}"#, &LAX);
    assert_eq!(old.map(|r| r.owner), Some(None));
    for bad in [
        "",
        "{}",
        r#"{"tickers":[],"created_at_ms":1,"state":"pending"}"#,
        r#"{"tickers":["not a ticker"],"created_at_ms":1,"state":"pending"}"#,
        r#"{"tickers":["A"],"created_at_ms":1,"state":"sleeping"}"#,
        r#"{"tickers":["A"],"created_at_ms":1,"state":"pending","max_rate_hz":-1}"#,
    ] {
        assert_eq!(decode_session(id, bad.as_bytes(), &LAX), None, "{bad}");
    }
}

#[test]
fn redis_input_is_held_to_the_rest_bounds() {
    let b = Bounds::DEFAULT;
    let now = now_ms();
    let at = |ts: u64| format!(r#"{{"price":1,"ts":{ts}}}"#);
    assert!(decode_price(t("A"), at(now).as_bytes(), &b).is_some());
    for ts in [u64::MAX, now + 60_000, 1, now - 86_400_000 - 60_000] {
        assert!(decode_price(t("A"), at(ts).as_bytes(), &b).is_none(), "ts {ts} accepted");
    }
    // From the cache an old price is fine (a quiet ticker), a future one is not.
    assert!(decode_cached_price(t("A"), at(1).as_bytes(), &b).is_some());
    assert!(decode_cached_price(t("A"), at(u64::MAX).as_bytes(), &b).is_none());
    let padded = format!(r#"{{"price":1,"pad":"{}"}}"#, "x".repeat(b.max_payload));
    assert!(decode_price(t("A"), padded.as_bytes(), &b).is_none(), "over the size bound");

    let id = SessionId::random();
    let record = |tickers: usize, rate: &str| {
        let names: Vec<String> = (0..tickers).map(|i| format!("\"T{i}\"")).collect();
        format!(
            r#"{{"tickers":[{}],"created_at_ms":1,"state":"pending","max_rate_hz":{rate}}}"#,
            names.join(",")
        )
    };
    assert!(decode_session(id, record(100, "2.5").as_bytes(), &b).is_some());
    for (n, rate) in [(1, "1e-300"), (1, "0.001"), (1, "1e9"), (101, "1"), (5000, "1")] {
        assert!(decode_session(id, record(n, rate).as_bytes(), &b).is_none(), "{n} tickers at {rate} Hz");
    }
}

#[test]
fn control_messages_are_signed_and_forgeries_refused() {
    let auth = ControlAuth::with_secret(b"s3cret\n");
    let other = ControlAuth::with_secret(b"another");
    let msg = ControlMessage { node: "n1".into(), ended: Some("x".into()), attached: None };
    let signed = encode_control(&msg, &auth);
    assert_eq!(signed.len(), SIG_HEX + 1 + encode_control(&msg, &NO_AUTH).len());
    assert_eq!(decode_control(signed.as_bytes(), &auth, &LAX), Some(msg.clone()));
    assert_eq!(decode_control(signed.as_bytes(), &other, &LAX), None, "another secret");
    assert_eq!(decode_control(encode_control(&msg, &NO_AUTH).as_bytes(), &auth, &LAX), None, "unsigned");
    let tampered = signed.replace(r#""ended":"x""#, r#""ended":"y""#);
    assert_eq!(decode_control(tampered.as_bytes(), &auth, &LAX), None, "body changed");
    assert_eq!(decode_control(signed.as_bytes(), &NO_AUTH, &LAX), None, "signed but no secret here");
    assert!(!ControlAuth::with_secret(b" \n").is_signed(), "a blank secret is no secret");
    assert!(!format!("{auth:?}").contains("s3cret"));
    for junk in [&b""[..], b".", &[b'0'; 65], &[0xff; 80]] {
        assert_eq!(decode_control(junk, &auth, &LAX), None);
    }
}
