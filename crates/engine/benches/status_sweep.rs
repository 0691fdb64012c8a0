//! The cost of staleness detection at 100,000 watched tickers: the node's one status sweep
//! (no timer per ticker, none per session), when nothing is stale (its steady cost, paid every
//! `stale_after / 10`) and when every ticker turns stale at once (the worst sweep).
//!
//! `cargo bench -p tickstream-engine --bench status_sweep`

// Setup failures should abort the benchmark loudly.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tickstream_api::{MonitoringService, Quote, StartRequest, Tick, Ticker};
use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig};
use tickstream_telemetry::Metrics;

const TICKERS: usize = 100_000;
const PER_SESSION: usize = 100;

/// 1,000 sessions of 100 distinct tickers each: 100,000 watched tickers, each with a quoted
/// record (so each has a status to lose).
fn setup(rt: &tokio::runtime::Runtime, stale_after: Duration) -> (Engine, Vec<Ticker>) {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(TICKERS + 1, metrics.clone()));
    let config = EngineConfig {
        max_sessions: TICKERS / PER_SESSION + 1,
        max_symbols: TICKERS + 1,
        stale_after,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, broker, metrics);
    let tickers: Vec<Ticker> = (0..TICKERS).map(|i| Ticker::parse(&format!("T{i}")).unwrap()).collect();
    rt.block_on(async {
        for chunk in tickers.chunks(PER_SESSION) {
            let req = StartRequest { tickers: chunk.to_vec(), max_rate_hz: None, owner: None };
            engine.start_monitoring(req).await.unwrap();
        }
        publish_all(&engine, &tickers).await;
    });
    assert_eq!(engine.watched_tickers(), TICKERS);
    (engine, tickers)
}

async fn publish_all(engine: &Engine, tickers: &[Ticker]) {
    let quote = Quote { bid: Some(0.99), ask: Some(1.01), ..Quote::EMPTY };
    for chunk in tickers.chunks(10_000) {
        let ticks = chunk.iter().map(|&t| Tick::new(t, 1.0, 1).unwrap().with_quote(quote).unwrap()).collect();
        engine.publish(ticks).await.unwrap();
    }
}

fn sweep(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("status_sweep_100k");
    group.sample_size(20);

    let (quiet, _) = setup(&rt, Duration::from_secs(3600));
    group.bench_function("nothing_stale", |b| b.iter(|| assert_eq!(quiet.sweep_status(), 0)));
    drop(quiet);

    let stale_after = Duration::from_millis(1);
    let (engine, tickers) = setup(&rt, stale_after);
    group.bench_function("all_turn_stale", |b| {
        b.iter_batched(
            || {
                // Every ticker live again, then quiet past `stale_after`.
                rt.block_on(publish_all(&engine, &tickers));
                std::thread::sleep(stale_after * 2);
            },
            |()| assert_eq!(engine.sweep_status(), TICKERS),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, sweep);
criterion_main!(benches);
