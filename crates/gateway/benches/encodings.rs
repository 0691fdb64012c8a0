//! The two WebSocket encodings on the watchlist workload (a client watching 50 tickers): bytes
//! per update, the server's cost to build a data message (JSON assembled from each tick's cached
//! JSON; protobuf written by hand, and what a cached per-tick protobuf would save), and a
//! client's cost to decode one (serde_json to a `Value`; prost to the generated types). It also
//! prices permessage-deflate, which tokio-tungstenite 0.29 does not implement, by compressing
//! the same messages with raw deflate as RFC 7692 would (with and without context takeover).
//!
//! `cargo bench -p tickstream-gateway --bench encodings` (sizes are printed first).

// Setup failures should abort the benchmark loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression, FlushCompress};
use prost::Message as _;
use tickstream_api::{Quote, SharedTick, Tick, Ticker};
use tickstream_gateway::encoding::binary;
use tickstream_gateway::protocol::{DataKind, data_message};

/// The watchlist: 50 tickers per client.
const WATCHLIST: usize = 50;
/// Changed tickers per message: a quiet market, a busy one, and the snapshot-sized worst case.
const BATCHES: [usize; 3] = [1, 10, 50];

/// Price-only ticks, and ticks with the full quote the simulated feed sends.
const KINDS: [(&str, bool); 2] = [("price", false), ("quote", true)];

const SYMBOLS: [&str; 10] = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "BRK.B", "TSLA", "JPM", "V"];

/// `n` ticks with realistic symbols (4–6 characters), cent prices and a current timestamp;
/// `quoted`: each with the full quote the simulated feed sends (bid/ask a cent around the price,
/// sizes, the last trade's size, the day's volume, open, high, low and previous close).
fn ticks(n: usize, round: u64, quoted: bool) -> Vec<SharedTick> {
    (0..n)
        .map(|i| {
            let symbol = format!("{}{}", SYMBOLS[i % SYMBOLS.len()], i / SYMBOLS.len());
            let cents = 10_000 + (i as u64 * 137 + round * 31) % 90_000;
            let price = cents as f64 / 100.0;
            let mut tick =
                Tick::new(Ticker::parse(&symbol).unwrap(), price, 1_764_230_400_123 + round).unwrap();
            if quoted {
                let quote = Quote {
                    bid: Some(price - 0.01),
                    ask: Some(price + 0.01),
                    bid_size: Some(300.0),
                    ask_size: Some(500.0),
                    size: Some(100.0),
                    volume: Some(1_234_500.0 + round as f64 * 100.0),
                    open: Some(price - 1.25),
                    high: Some(price + 2.5),
                    low: Some(price - 3.75),
                    prev_close: Some(price - 0.5),
                };
                tick = tick.with_quote(quote).unwrap();
            }
            Arc::new(tick)
        })
        .collect()
}

/// A WebSocket frame header for a server (unmasked) payload of `len` bytes (RFC 6455 §5.2).
fn frame_header(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// Raw deflate of one message as permessage-deflate sends it: a sync flush, minus the trailing
/// `00 00 ff ff` (RFC 7692 §7.2.1).
fn deflate(compressor: &mut Compress, msg: &[u8]) -> usize {
    let mut out = Vec::with_capacity(msg.len() + 64);
    compressor.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
    out.len().saturating_sub(4)
}

/// Bytes on the wire per update, for 200 consecutive messages of `batch` changed tickers.
fn sizes(batch: usize, quoted: bool) -> [f64; 4] {
    let rounds = 200u64;
    let mut takeover = Compress::new(Compression::default(), false);
    let (mut json, mut proto, mut json_deflate, mut json_deflate_fresh) = (0, 0, 0, 0);
    for round in 0..rounds {
        let t = ticks(batch, round, quoted);
        let j = data_message(DataKind::Prices, round + 1, &t);
        let p = binary::data_message(DataKind::Prices, round + 1, &t);
        json += j.len() + frame_header(j.len());
        proto += p.len() + frame_header(p.len());
        let d = deflate(&mut takeover, j.as_bytes());
        json_deflate += d + frame_header(d);
        let fresh = deflate(&mut Compress::new(Compression::default(), false), j.as_bytes());
        json_deflate_fresh += fresh + frame_header(fresh);
    }
    let per = |b: usize| b as f64 / (rounds as f64 * batch as f64);
    [per(json), per(proto), per(json_deflate), per(json_deflate_fresh)]
}

fn print_sizes() {
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "bytes per update on the wire (payload + frame header), 200 messages each:");
    let _ = writeln!(out, "ticks  batch  json   proto  json+deflate(takeover)  json+deflate(no takeover)");
    for (label, quoted) in KINDS {
        for batch in BATCHES {
            let [j, p, d, f] = sizes(batch, quoted);
            let _ = writeln!(out, "{label}  {batch:>5}  {j:>5.1}  {p:>5.1}  {d:>22.1}  {f:>25.1}");
        }
        let snapshot = ticks(WATCHLIST, 0, quoted);
        let j = data_message(DataKind::Snapshot, 1, &snapshot).len();
        let p = binary::data_message(DataKind::Snapshot, 1, &snapshot).len();
        let _ = writeln!(out, "{label} snapshot of {WATCHLIST}: json {j} B, proto {p} B");
    }
}

fn encode(c: &mut Criterion) {
    print_sizes();
    let mut group = c.benchmark_group("encode");
    for (label, batch) in KINDS.into_iter().flat_map(|k| BATCHES.map(|b| (k, b))) {
        let t = ticks(batch, 1, label.1);
        let id = |name: &str| BenchmarkId::new(format!("{name}_{}", label.0), batch);
        // What a per-tick protobuf cache would leave to do: concatenate cached `Price` bytes.
        let cached: Vec<Vec<u8>> = t.iter().map(|t| pb_price(t).encode_length_delimited_to_vec()).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(id("json"), &t, |b, t| {
            b.iter(|| black_box(data_message(DataKind::Prices, 7, t)));
        });
        group.bench_with_input(id("proto"), &t, |b, t| {
            b.iter(|| black_box(binary::data_message(DataKind::Prices, 7, t)));
        });
        group.bench_with_input(id("proto_cached_ticks"), &cached, |b, cached| {
            b.iter(|| black_box(from_cache(cached)));
        });
        assert_eq!(from_cache(&cached)[..], binary::data_message(DataKind::Prices, 7, &t)[..], "same bytes");
        let msg = data_message(DataKind::Prices, 7, &t);
        group.bench_with_input(id("json_deflate_takeover"), &msg, |b, msg| {
            let mut compressor = Compress::new(Compression::default(), false);
            b.iter(|| black_box(deflate(&mut compressor, msg.as_bytes())));
        });
    }
    group.finish();
}

/// `WsServerMessage { prices: WsData { seq: 7, prices } }` from each tick's cached
/// length-prefixed `Price`.
fn from_cache(cached: &[Vec<u8>]) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let body = 2 + cached.iter().map(|c| 1 + c.len()).sum::<usize>();
    let mut buf = Vec::with_capacity(1 + encoded_len_varint(body as u64) + body);
    encode_key(2, WireType::LengthDelimited, &mut buf);
    encode_varint(body as u64, &mut buf);
    buf.extend_from_slice(&[0x08, 7]);
    for c in cached {
        buf.push(0x12);
        buf.extend_from_slice(c);
    }
    buf
}

fn pb_price(t: &Tick) -> tickstream_proto::Price {
    let q = t.quote();
    tickstream_proto::Price {
        ticker: t.ticker().to_string(),
        price: t.price(),
        ts_ms: t.ts_ms(),
        bid: q.bid,
        ask: q.ask,
        bid_size: q.bid_size,
        ask_size: q.ask_size,
        size: q.size,
        volume: q.volume,
        open: q.open,
        high: q.high,
        low: q.low,
        prev_close: q.prev_close,
        status: None,
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (label, batch) in KINDS.into_iter().flat_map(|k| BATCHES.map(|b| (k, b))) {
        let t = ticks(batch, 1, label.1);
        let id = |name: &str| BenchmarkId::new(format!("{name}_{}", label.0), batch);
        let json = data_message(DataKind::Prices, 7, &t);
        let proto = binary::data_message(DataKind::Prices, 7, &t);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(id("json_value"), &json, |b, json| {
            b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(json).unwrap()));
        });
        group.bench_with_input(id("proto"), &proto, |b, proto| {
            b.iter(|| black_box(tickstream_proto::WsServerMessage::decode(&proto[..]).unwrap()));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = encode, decode
}
criterion_main!(benches);
