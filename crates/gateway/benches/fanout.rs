//! The fan-out path without sockets: publish → per-session conflation → the connection's drain
//! → the data message the writer sends. Only the socket write itself is left out.
//!
//! `cargo bench -p tickstream-gateway --bench fanout`

// Setup failures should abort the benchmark loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::{FutureExt, StreamExt};
use tickstream_api::{MonitoringService, SessionEvent, StartRequest, Tick, Ticker};
use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig, Updates};
use tickstream_gateway::protocol::{DataKind, data_message};
use tickstream_telemetry::Metrics;

/// An engine with `sessions` attached sessions, each watching `per_session` of `universe`
/// tickers, and their update streams.
fn setup(
    rt: &tokio::runtime::Runtime,
    sessions: usize,
    per_session: usize,
    universe: usize,
) -> (Engine, Vec<Updates>, Vec<Ticker>) {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(universe + 1, metrics.clone()));
    let config = EngineConfig { max_sessions: sessions + 1, ..EngineConfig::default() };
    let engine = Engine::new(config, broker, metrics);
    let tickers: Vec<Ticker> = (0..universe).map(|i| Ticker::parse(&format!("T{i}")).unwrap()).collect();
    let streams = rt.block_on(async {
        let mut streams = Vec::with_capacity(sessions);
        for s in 0..sessions {
            let watched = (0..per_session).map(|k| tickers[(s * 7 + k) % universe]).collect();
            let id = engine
                .start_monitoring(StartRequest { tickers: watched, max_rate_hz: None, owner: None })
                .await
                .unwrap()
                .id;
            let mut updates = engine.stream_price_updates(id).await.unwrap();
            updates.next().await.unwrap(); // snapshot
            streams.push(updates);
        }
        streams
    });
    (engine, streams, tickers)
}

/// Drains every stream that has something and builds its message, as the writers would.
fn drain(streams: &mut [Updates], seq: u64) -> usize {
    let mut bytes = 0;
    for s in streams.iter_mut() {
        if let Some(Some(SessionEvent::Prices(ticks))) = s.next().now_or_never() {
            bytes += black_box(data_message(DataKind::Prices, seq, &ticks)).len();
        }
    }
    bytes
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("fanout");
    // One hot ticker watched by every session: a publish reaches N sessions, each then drained
    // and encoded. Throughput = delivered ticker updates.
    for sessions in [1_000usize, 10_000] {
        let (engine, mut streams, tickers) = setup(&rt, sessions, 1, 1);
        group.throughput(Throughput::Elements(sessions as u64));
        let mut price = 1.0;
        let mut seq = 1;
        group.bench_with_input(
            BenchmarkId::new("one_ticker_publish_drain_encode", sessions),
            &sessions,
            |b, _| {
                b.iter(|| {
                    price += 0.01;
                    seq += 1;
                    rt.block_on(engine.publish(vec![Tick::new(tickers[0], price, 1).unwrap()])).unwrap();
                    drain(&mut streams, seq)
                })
            },
        );
    }
    // A realistic mix: 10,000 sessions × 5 of 500 tickers; a batch of 500 updates (every ticker
    // once) is published, then every session drained. Throughput = delivered ticker updates.
    let (engine, mut streams, tickers) = setup(&rt, 10_000, 5, 500);
    group.throughput(Throughput::Elements(10_000 * 5));
    let mut price = 1.0;
    let mut seq = 1;
    group.bench_function("10k_sessions_5_of_500_tickers_batch", |b| {
        b.iter(|| {
            price += 0.01;
            seq += 1;
            let batch = tickers.iter().map(|&t| Tick::new(t, price, 1).unwrap()).collect();
            rt.block_on(engine.publish(batch)).unwrap();
            drain(&mut streams, seq)
        })
    });
    // Conflation only: the readers are stalled, so each publish is a map overwrite per session.
    let (engine, _stalled, tickers) = setup(&rt, 10_000, 1, 1);
    rt.block_on(engine.publish(vec![Tick::new(tickers[0], 1.0, 1).unwrap()])).unwrap();
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("one_ticker_10k_stalled_readers_conflate", |b| {
        b.iter(|| {
            price += 0.01;
            rt.block_on(engine.publish(vec![Tick::new(tickers[0], price, 1).unwrap()])).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
