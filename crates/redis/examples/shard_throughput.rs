//! Broker-path throughput over one or more Redis shards: how many price messages per second a
//! node's `RedisBroker` receives, decodes and hands to its sink, with publishers saturating
//! every shard.
//!
//! ```sh
//! cargo run --release -p tickstream-redis --example shard_throughput -- \
//!     redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003 [tickers] [secs]
//! ```
//!
//! Subscribes `tickers` tickers (default 600) through the broker, then runs two pipelining
//! publishers per shard, each publishing only tickers of its shard (by the shard map), for
//! `secs` seconds (default 5) after a one-second warm-up, and prints the price messages/s the
//! node read from its shards, and those its sink was handed (fewer when the fan-out conflated). `scripts/shard-bench` starts the servers and runs it A/B.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tickstream_api::{SharedTick, Tick, Ticker, now_ms};
use tickstream_broker::{Broker, TickSink};
use tickstream_redis::{RedisBroker, RedisConfig, channel_for, shards::shard_of, split_urls};
use tickstream_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

// The binary's allocator (`crates/tickstream/src/main.rs`), so the node's path costs what it
// costs there.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Commands per pipeline round trip.
const PIPELINE: usize = 256;
const PUBLISHERS_PER_SHARD: usize = 2;

#[derive(Default)]
struct Count(AtomicU64);

impl TickSink for Count {
    fn deliver(&self, _tick: &SharedTick) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = args.first().ok_or("usage: shard_throughput <redis urls> [tickers] [secs]")?;
    let tickers: usize = args.get(1).map_or(Ok(600), |s| s.parse())?;
    let secs: u64 = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let urls = split_urls(list);

    let metrics = Metrics::new();
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let config = RedisConfig { max_symbols: tickers.max(1), ..RedisConfig::new(list) };
    let broker = RedisBroker::start(config, Arc::clone(&metrics), &tracker, shutdown.clone())?;
    let count = Arc::new(Count::default());
    broker.attach(count.clone());
    let all: Vec<Ticker> = (0..tickers).map(|i| Ticker::parse(&format!("B{i}"))).collect::<Result<_, _>>()?;
    for &t in &all {
        broker.subscribe(t);
    }
    while broker.active_subscriptions() < all.len() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stop = CancellationToken::new();
    let published = Arc::new(AtomicU64::new(0));
    // The publishers run on a runtime (and thread) of their own, so they compete with the node's
    // read loops as another process would, not inside the node's runtime.
    let publisher_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut jobs = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let mine: Vec<Ticker> = all.iter().copied().filter(|&t| shard_of(t, urls.len()) == i).collect();
        for p in 0..PUBLISHERS_PER_SHARD {
            jobs.push((url.clone(), mine.clone(), p));
        }
    }
    let publishers = {
        let (stop, published) = (stop.clone(), Arc::clone(&published));
        std::thread::spawn(move || {
            publisher_runtime.block_on(async move {
                let tasks: Vec<_> = jobs
                    .into_iter()
                    .map(|(url, mine, p)| {
                        tokio::spawn(publish(url, mine, p, stop.clone(), Arc::clone(&published)))
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let read = || metrics.broker_messages.with_label_values(&["price"]).get();
    let (r0, c0, p0) = (read(), count.0.load(Ordering::Relaxed), published.load(Ordering::Relaxed));
    let started = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (r1, c1, p1) = (read(), count.0.load(Ordering::Relaxed), published.load(Ordering::Relaxed));
    stop.cancel();
    let _ = tokio::task::spawn_blocking(move || publishers.join()).await;
    let conflated = metrics.redis_fanout_conflated.get();
    // A subscriber that falls behind past Redis' `client-output-buffer-limit pubsub` is cut off
    // by Redis and reconnects: an overload, not a throughput.
    let reconnects: u64 = (0..urls.len())
        .map(|i| metrics.redis_shard_reconnects.with_label_values(&[&i.to_string()]).get())
        .sum();
    println!(
        "shards={} tickers={tickers} received_per_s={:.0} delivered_per_s={:.0} published_per_s={:.0} \
         fanout_conflated={conflated} reconnects={reconnects}",
        urls.len(),
        (r1 - r0) as f64 / elapsed,
        (c1 - c0) as f64 / elapsed,
        (p1 - p0) as f64 / elapsed,
    );
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Publishes `mine` round-robin in pipelines until `stop`.
async fn publish(
    url: String,
    mine: Vec<Ticker>,
    start: usize,
    stop: CancellationToken,
    published: Arc<AtomicU64>,
) {
    let Ok(client) = redis::Client::open(url.as_str()) else { return };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
    // Named once: the publishers share the node's two cores, so what they spend is the node's.
    let channels: Vec<String> = mine.iter().map(|&t| channel_for(t)).collect();
    let mut n = start;
    while !stop.is_cancelled() && !mine.is_empty() {
        let ts = now_ms();
        let mut pipe = redis::pipe();
        for _ in 0..PIPELINE {
            let i = n % mine.len();
            n += 1;
            let price = 100.0 + (n % 1000) as f64 / 100.0;
            if let Ok(tick) = Tick::new(mine[i], price, ts) {
                pipe.cmd("PUBLISH").arg(&channels[i]).arg(tick.json()).ignore();
            }
        }
        if pipe.query_async::<()>(&mut conn).await.is_err() {
            break;
        }
        published.fetch_add(PIPELINE as u64, Ordering::Relaxed);
    }
}
