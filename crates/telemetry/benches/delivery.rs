//! The delivery-latency histogram under two writers, as on a gateway's two runtime threads:
//! every update observed on its own (what each socket task did per update before) against
//! [`Metrics::observe_delivery`], which batches a message's updates into one flush.
//!
//! `cargo bench -p tickstream-telemetry --bench delivery`

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickstream_telemetry::Metrics;
use tokio::time::Instant;

/// Writers at once: the two cores of the machine the figures come from.
const WRITERS: u64 = 2;

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new();
    let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
        .unwrap_or(u64::MAX);
    let mut group = c.benchmark_group("delivery_latency");
    // Updates per message: one hot ticker, a small watchlist, the 50-ticker watchlist's ~20.
    for per_message in [1_usize, 4, 20] {
        let published: Vec<u64> = (0..per_message as u64).map(|i| now_ms - 3 - i % 40).collect();
        group.throughput(Throughput::Elements(per_message as u64 * WRITERS));
        let mut run = |name: &str, observe: &(dyn Fn() + Sync)| {
            group.bench_function(BenchmarkId::new(name, per_message), |b| {
                b.iter_custom(|iters| two_writers(iters, observe));
            });
        };
        run("each", &|| {
            let now = now_ms as f64;
            for &ts in &published {
                metrics.delivery_latency.observe(black_box((now - ts as f64).max(0.0) / 1e3));
            }
        });
        run("batched", &|| metrics.observe_delivery(black_box(&published).iter().copied()));
    }
    group.finish();
}

/// `iters` messages on each of [`WRITERS`] threads at once; the wall time of the slower.
fn two_writers(iters: u64, observe: &(dyn Fn() + Sync)) -> Duration {
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|_| {
                s.spawn(move || {
                    let start = Instant::now();
                    for _ in 0..iters {
                        observe();
                    }
                    start.elapsed()
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap_or_default()).max().unwrap_or_default()
    })
}

criterion_group!(benches, bench);
criterion_main!(benches);
