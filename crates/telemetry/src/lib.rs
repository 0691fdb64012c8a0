//! Metrics and logging shared by every tickstream component.
//!
//! One [`Metrics`] per node, with its own Prometheus registry (not a process-global one), so
//! several nodes can live in one test process and each test reads exactly its own gauges.
//! Every metric of the README's table is a field here: this file is the list, except the
//! `tickstream_runtime_*` family, which `runtime` reads from tokio at scrape time once a role
//! calls [`Metrics::observe_runtime`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::Collector as _;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub mod logging;
mod runtime;

/// The counter type of the labelled families above, for callers that resolve a series once.
pub use prometheus::IntCounter;
pub use runtime::build_runtime;

/// Updates in one message from which [`Metrics::observe_delivery`] batches them.
const LOCAL_FROM: usize = 4;

/// Every metric a node exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `tickstream_sessions{state}`: sessions by state (pending, streaming, detached).
    pub sessions: IntGaugeVec,
    /// `tickstream_ws_connections`: open WebSockets.
    pub ws_connections: IntGauge,
    /// `tickstream_http_connections`: open HTTP connections (not yet upgraded, or plain REST).
    pub http_connections: IntGauge,
    /// `tickstream_tls_handshake_failures_total`: edge TLS handshakes that failed or timed out.
    pub tls_handshake_failures: IntCounter,
    /// `tickstream_broker_subscriptions`: tickers this node subscribes to at the broker.
    pub broker_subscriptions: IntGauge,
    /// `tickstream_updates_published_total`: ticks published through this node's broker.
    pub updates_published: IntCounter,
    /// `tickstream_updates_stale_total`: ticks dropped because the ticker already holds a newer
    /// one (an older `ts` never replaces a newer price).
    pub updates_stale: IntCounter,
    /// `tickstream_updates_delivered_total`: ticker updates written to sockets.
    pub updates_delivered: IntCounter,
    /// `tickstream_updates_conflated_total`: pending updates replaced by a newer one before delivery.
    pub updates_conflated: IntCounter,
    /// `tickstream_ws_messages_sent_total`: WebSocket text messages written.
    pub ws_messages_sent: IntCounter,
    /// `tickstream_ws_direct_writes_total`: of those, prices the fan-out wrote straight to an
    /// idle socket (`--direct-writes`).
    pub ws_direct_writes: IntCounter,
    /// `tickstream_ws_disconnects_total{code}`: ended WebSockets by close code.
    pub ws_disconnects: IntCounterVec,
    /// `tickstream_delivery_latency_seconds`: publish `ts` → written to the socket, per update.
    pub delivery_latency: Histogram,
    /// `tickstream_session_create_seconds`: time to create a session (REST handler).
    pub session_create: Histogram,
    /// `tickstream_tasks{kind}`: live tasks by kind, the leak detector.
    pub tasks: IntGaugeVec,
    /// `tickstream_broker_messages_total{kind}`: Redis Pub/Sub messages received (price, control,
    /// invalid).
    pub broker_messages: IntCounterVec,
    /// `tickstream_engines_up`: engines a gateway can reach (gateway role).
    pub engines_up: IntGauge,
    /// `tickstream_engine_failovers_total`: streams a gateway moved to another engine.
    pub engine_failovers: IntCounter,
    /// `tickstream_redis_shard_up{shard}`: 1 while the Pub/Sub connection to Redis shard
    /// `shard` (its index in `--redis`) is up.
    pub redis_shard_up: IntGaugeVec,
    /// `tickstream_redis_shard_subscriptions{shard}`: tickers subscribed on each shard (they
    /// sum to `tickstream_broker_subscriptions`).
    pub redis_shard_subscriptions: IntGaugeVec,
    /// `tickstream_redis_shard_messages_total{shard}`: price messages received from each shard.
    pub redis_shard_messages: IntCounterVec,
    /// `tickstream_redis_shard_reconnects_total{shard}`: Pub/Sub connections re-established.
    pub redis_shard_reconnects: IntCounterVec,
    /// `tickstream_redis_fanout_conflated_total`: prices replaced by a newer one while waiting
    /// for a fan-out worker.
    pub redis_fanout_conflated: IntCounter,
    /// `tickstream_redis_fanout_dropped_total`: prices of a new ticker refused by a full fan-out
    /// worker mailbox.
    pub redis_fanout_dropped: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    ///
    /// # Panics
    /// Never in practice: metric names are static and registered once into a new registry; a
    /// failure here is a programming error caught by every test.
    #[allow(clippy::expect_used)]
    pub fn new() -> Arc<Self> {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique and valid");
        };
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let sessions = IntGaugeVec::new(Opts::new("tickstream_sessions", "Sessions by state"), &["state"])
            .expect("valid metric");
        // Start every state at 0 so dashboards and tests see the series before the first session.
        for s in ["pending", "streaming", "detached"] {
            sessions.with_label_values(&[s]).set(0);
        }
        let tasks =
            IntGaugeVec::new(Opts::new("tickstream_tasks", "Live tasks by kind (leak detector)"), &["kind"])
                .expect("valid metric");
        let latency_buckets =
            vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let m = Self {
            sessions,
            ws_connections: gauge("tickstream_ws_connections", "Open WebSocket connections"),
            http_connections: gauge(
                "tickstream_http_connections",
                "Open HTTP connections (plain REST, or before a WebSocket upgrade)",
            ),
            tls_handshake_failures: counter(
                "tickstream_tls_handshake_failures_total",
                "Edge TLS handshakes that failed or did not finish within the header timeout",
            ),
            broker_subscriptions: gauge(
                "tickstream_broker_subscriptions",
                "Tickers this node subscribes to at the broker",
            ),
            updates_published: counter(
                "tickstream_updates_published_total",
                "Ticks published through the broker by this node",
            ),
            updates_stale: counter(
                "tickstream_updates_stale_total",
                "Ticks dropped because their ticker already holds a newer one",
            ),
            updates_delivered: counter(
                "tickstream_updates_delivered_total",
                "Ticker updates written to WebSockets",
            ),
            updates_conflated: counter(
                "tickstream_updates_conflated_total",
                "Pending updates replaced by a newer price before delivery",
            ),
            ws_messages_sent: counter("tickstream_ws_messages_sent_total", "WebSocket text messages written"),
            ws_direct_writes: counter(
                "tickstream_ws_direct_writes_total",
                "WebSocket messages the fan-out wrote straight to an idle socket",
            ),
            ws_disconnects: IntCounterVec::new(
                Opts::new("tickstream_ws_disconnects_total", "Closed WebSockets by close code"),
                &["code"],
            )
            .expect("valid metric"),
            delivery_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "tickstream_delivery_latency_seconds",
                    "Publish timestamp to socket write, per ticker update",
                )
                .buckets(latency_buckets.clone()),
            )
            .expect("valid metric"),
            session_create: Histogram::with_opts(
                HistogramOpts::new("tickstream_session_create_seconds", "Time to create a session")
                    .buckets(latency_buckets),
            )
            .expect("valid metric"),
            tasks,
            broker_messages: IntCounterVec::new(
                Opts::new("tickstream_broker_messages_total", "Redis Pub/Sub messages received by kind"),
                &["kind"],
            )
            .expect("valid metric"),
            engines_up: gauge("tickstream_engines_up", "Engines this gateway can reach"),
            engine_failovers: counter(
                "tickstream_engine_failovers_total",
                "Streams moved to another engine after theirs failed",
            ),
            redis_shard_up: IntGaugeVec::new(
                Opts::new(
                    "tickstream_redis_shard_up",
                    "1 while the Pub/Sub connection to a Redis shard is up",
                ),
                &["shard"],
            )
            .expect("valid metric"),
            redis_shard_subscriptions: IntGaugeVec::new(
                Opts::new("tickstream_redis_shard_subscriptions", "Tickers subscribed on each Redis shard"),
                &["shard"],
            )
            .expect("valid metric"),
            redis_shard_messages: IntCounterVec::new(
                Opts::new(
                    "tickstream_redis_shard_messages_total",
                    "Price messages received from each Redis shard",
                ),
                &["shard"],
            )
            .expect("valid metric"),
            redis_shard_reconnects: IntCounterVec::new(
                Opts::new(
                    "tickstream_redis_shard_reconnects_total",
                    "Pub/Sub connections to each Redis shard re-established",
                ),
                &["shard"],
            )
            .expect("valid metric"),
            redis_fanout_conflated: counter(
                "tickstream_redis_fanout_conflated_total",
                "Prices replaced by a newer one while waiting for a fan-out worker",
            ),
            redis_fanout_dropped: counter(
                "tickstream_redis_fanout_dropped_total",
                "Prices of a new ticker refused by a full fan-out worker mailbox",
            ),
            registry: registry.clone(),
        };
        reg(Box::new(m.sessions.clone()));
        reg(Box::new(m.ws_connections.clone()));
        reg(Box::new(m.http_connections.clone()));
        reg(Box::new(m.tls_handshake_failures.clone()));
        reg(Box::new(m.broker_subscriptions.clone()));
        reg(Box::new(m.updates_published.clone()));
        reg(Box::new(m.updates_stale.clone()));
        reg(Box::new(m.updates_delivered.clone()));
        reg(Box::new(m.updates_conflated.clone()));
        reg(Box::new(m.ws_messages_sent.clone()));
        reg(Box::new(m.ws_direct_writes.clone()));
        reg(Box::new(m.ws_disconnects.clone()));
        reg(Box::new(m.delivery_latency.clone()));
        reg(Box::new(m.session_create.clone()));
        reg(Box::new(m.tasks.clone()));
        reg(Box::new(m.broker_messages.clone()));
        reg(Box::new(m.engines_up.clone()));
        reg(Box::new(m.engine_failovers.clone()));
        reg(Box::new(m.redis_shard_up.clone()));
        reg(Box::new(m.redis_shard_subscriptions.clone()));
        reg(Box::new(m.redis_shard_messages.clone()));
        reg(Box::new(m.redis_shard_reconnects.clone()));
        reg(Box::new(m.redis_fanout_conflated.clone()));
        reg(Box::new(m.redis_fanout_dropped.clone()));
        Arc::new(m)
    }

    /// Exports the tokio runtime behind `handle` as `tickstream_runtime_*`, read at every scrape.
    /// Each role calls it once with the runtime it runs on; a second call keeps the first
    /// runtime (the families are already registered).
    pub fn observe_runtime(&self, handle: &tokio::runtime::Handle) {
        let registered =
            runtime::RuntimeCollector::new(handle.clone()).and_then(|c| self.registry.register(Box::new(c)));
        if let Err(e) = registered {
            tracing::debug!(error = %e, "runtime metrics not registered again");
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for the text format; an error would only drop output.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Records the delivery latency of updates published at `published_ms` (ms since the
    /// epoch) and written now, in `tickstream_delivery_latency_seconds`.
    ///
    /// A message's updates go into a local histogram that reaches the shared one in one flush.
    /// Observed one by one, each update was four atomic operations on cache lines that every
    /// socket task of the node writes: `Histogram::observe` was 4 % of a gateway's CPU on the
    /// 50-ticker watchlist (`perf record`, docs/benchmarks.md). A message of a few updates
    /// observes directly: there the local histogram's allocation costs more than it saves.
    pub fn observe_delivery(&self, published_ms: impl ExactSizeIterator<Item = u64>) {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        // `ts` has millisecond resolution; clocks of external producers may run ahead.
        #[allow(clippy::cast_precision_loss)] // ms since the epoch fit f64's 52 bits
        let latency_s = |ts: u64| (now_ms - ts as f64).max(0.0) / 1e3;
        if published_ms.len() < LOCAL_FROM {
            for ts in published_ms {
                self.delivery_latency.observe(latency_s(ts));
            }
            return;
        }
        let local = self.delivery_latency.local();
        for ts in published_ms {
            local.observe(latency_s(ts));
        }
        local.flush();
    }

    /// Counts a live task of `kind` until the returned guard drops. Hold the guard inside the
    /// task's future, so every way the task ends (return, panic, abort) decrements the gauge.
    pub fn task(&self, kind: &'static str) -> GaugeGuard {
        GaugeGuard::new(&self.tasks.with_label_values(&[kind]))
    }

    /// The `tickstream_sessions` gauge for one state.
    pub fn sessions_in(&self, state: &str) -> IntGauge {
        self.sessions.with_label_values(&[state])
    }

    /// Sum of `tickstream_tasks` over every kind.
    pub fn live_tasks(&self) -> i64 {
        self.tasks
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .map(|m| m.get_gauge().get_value() as i64)
            .sum()
    }
}

/// Increments a gauge now and decrements it on drop: ties a gauge to an owner's lifetime.
#[derive(Debug)]
#[must_use = "the gauge counts only while the guard lives"]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts per bucket of the delivery histogram, cumulative as Prometheus keeps them.
    fn delivery_buckets(m: &Metrics) -> Vec<u64> {
        let mf = m.delivery_latency.collect();
        mf[0].get_metric()[0].get_histogram().get_bucket().iter().map(|b| b.cumulative_count()).collect()
    }

    /// A message of one update and one of many land the same: every update counted, each in
    /// its own latency's bucket, whether observed directly or through the local histogram.
    #[test]
    fn delivery_latency_counts_every_update_of_a_message_in_its_bucket() {
        let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
        // 1 s and 3 s ago: buckets `le=2.5` and `le=5`; a `ts` ahead of the clock counts as 0.
        let (direct, batched) = (Metrics::new(), Metrics::new());
        let published = [now - 1_000, now - 3_000, now + 60_000, now - 1_000, now - 3_000];
        for &ts in &published {
            direct.observe_delivery(std::iter::once(ts));
        }
        assert!(published.len() >= LOCAL_FROM, "the message takes the batched path");
        batched.observe_delivery(published.iter().copied());
        for m in [&direct, &batched] {
            assert_eq!(m.delivery_latency.get_sample_count(), 5);
            let sum = m.delivery_latency.get_sample_sum();
            assert!((8.0..8.5).contains(&sum), "1 + 3 + 0 + 1 + 3 s (and the test's own time): {sum}");
        }
        let buckets = delivery_buckets(&batched);
        assert_eq!(buckets, delivery_buckets(&direct));
        // le=0.0005 holds the one from the future; le=1 may or may not hold the 1 s ones (the
        // clock moved on); le=2.5 holds those three; le=5 all five.
        assert_eq!((buckets[0], buckets[11], buckets[12]), (1, 3, 5), "{buckets:?}");
    }

    #[test]
    fn guards_restore_gauges_and_render_lists_metrics() {
        let m = Metrics::new();
        {
            let _a = m.task("ws");
            let _b = m.task("sweeper");
            let _c = GaugeGuard::new(&m.ws_connections);
            assert_eq!(m.live_tasks(), 2);
            assert_eq!(m.ws_connections.get(), 1);
        }
        assert_eq!(m.live_tasks(), 0);
        assert_eq!(m.ws_connections.get(), 0);
        m.ws_disconnects.with_label_values(&["1000"]).inc();
        let text = m.render();
        for name in [
            "tickstream_sessions{state=\"pending\"} 0",
            "tickstream_ws_connections 0",
            "tickstream_broker_subscriptions",
            "tickstream_updates_published_total",
            "tickstream_updates_stale_total",
            "tickstream_updates_delivered_total",
            "tickstream_updates_conflated_total",
            "tickstream_ws_messages_sent_total",
            "tickstream_ws_direct_writes_total",
            "tickstream_ws_disconnects_total{code=\"1000\"} 1",
            "tickstream_delivery_latency_seconds_bucket",
            "tickstream_session_create_seconds_bucket",
            "tickstream_tasks{kind=\"ws\"} 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
