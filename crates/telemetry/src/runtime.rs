//! The tokio runtime's own figures as `tickstream_runtime_*` metrics: a Prometheus collector
//! that reads [`tokio::runtime::RuntimeMetrics`] at scrape time, so it needs no task of its own
//! and costs nothing between scrapes. [`crate::Metrics::observe_runtime`] registers it in a
//! node's registry; each role calls that when it builds its metrics, on the runtime
//! [`build_runtime`] made.
//!
//! Stable metrics: workers, alive tasks, global queue depth, and per worker busy time, park count
//! and parked-now. With `--cfg tokio_unstable` (the workspace's `.cargo/config.toml` sets it)
//! also: per worker steals, polls and local queue depth; remote schedules and budget-forced
//! yields; and two histograms summed over the workers — how long one poll of a task ran
//! (`poll_time`: a long poll holds up every task queued behind it on that worker) and how long a
//! woken task waited before it was polled (`schedule_latency`: the time an update spends ready
//! but not yet running). The histograms cost two clock reads per poll (tens of nanoseconds
//! against ~20 µs of work per WebSocket frame) and are on by default.

use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use tokio::runtime::{Handle, RuntimeMetrics};

/// The multi-thread runtime every role runs on: tokio's defaults (every driver; one worker per
/// core unless `worker_threads` says otherwise) plus, with `tokio_unstable`, the poll-time and
/// schedule-latency histograms.
///
/// # Errors
/// When the OS refuses the runtime's threads or its I/O driver.
pub fn build_runtime(worker_threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    #[cfg(tokio_unstable)]
    {
        use tokio::runtime::{HistogramConfiguration, LogHistogram};
        // Log buckets from 16 µs to ~4 s, two per power of two (at most 50% error): ~36
        // buckets, enough to tell a 100 µs poll from a 10 ms one and a 1 ms wait from 1 s.
        let buckets = || {
            HistogramConfiguration::log(
                LogHistogram::builder()
                    .min_value(Duration::from_micros(16))
                    .max_value(Duration::from_secs(4))
                    .precision_exact(1)
                    .build(),
            )
        };
        builder
            .enable_metrics_poll_time_histogram()
            .metrics_poll_time_histogram_configuration(buckets())
            .enable_metrics_schedule_latency_histogram()
            .metrics_schedule_latency_histogram_configuration(buckets());
    }
    builder.build()
}

/// Reads a runtime's metrics on every `collect`.
#[derive(Debug)]
pub(crate) struct RuntimeCollector {
    handle: Handle,
    descs: Vec<Desc>,
}

/// Name, help, type, and whether the metric has a sample per worker.
const FAMILIES: &[(&str, &str, MetricType, bool)] = &[
    ("tickstream_runtime_workers", "Worker threads of the tokio runtime", MetricType::GAUGE, false),
    (
        "tickstream_runtime_alive_tasks",
        "Tasks alive in the tokio runtime (spawned, not yet finished), every kind",
        MetricType::GAUGE,
        false,
    ),
    (
        "tickstream_runtime_global_queue_depth",
        "Tasks waiting in the runtime's global (injection) queue",
        MetricType::GAUGE,
        false,
    ),
    (
        "tickstream_runtime_worker_busy_seconds_total",
        "Time a worker thread spent running tasks; its rate is the worker's busy ratio",
        MetricType::COUNTER,
        true,
    ),
    (
        "tickstream_runtime_worker_parks_total",
        "Times a worker thread parked (ran out of work and waited for events)",
        MetricType::COUNTER,
        true,
    ),
    (
        "tickstream_runtime_worker_parked",
        "1 while a worker thread is parked (idle), 0 while it runs",
        MetricType::GAUGE,
        true,
    ),
];

/// The families only `tokio_unstable` builds have (same shape as [`FAMILIES`]).
#[cfg(tokio_unstable)]
const UNSTABLE_FAMILIES: &[(&str, &str, MetricType, bool)] = &[
    (
        "tickstream_runtime_worker_steals_total",
        "Tasks a worker stole from another worker's queue (work moving between threads)",
        MetricType::COUNTER,
        true,
    ),
    ("tickstream_runtime_worker_polls_total", "Task polls a worker ran", MetricType::COUNTER, true),
    (
        "tickstream_runtime_worker_local_queue_depth",
        "Tasks waiting in a worker's local run queue",
        MetricType::GAUGE,
        true,
    ),
    (
        "tickstream_runtime_remote_schedules_total",
        "Tasks woken from outside the runtime's workers (other threads, timers fired off-worker)",
        MetricType::COUNTER,
        false,
    ),
    (
        "tickstream_runtime_budget_forced_yields_total",
        "Times a task was made to yield because it used up its cooperative budget",
        MetricType::COUNTER,
        false,
    ),
];
#[cfg(not(tokio_unstable))]
const UNSTABLE_FAMILIES: &[(&str, &str, MetricType, bool)] = &[];

/// Histograms summed over the workers: name, help. Unstable-only.
const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "tickstream_runtime_poll_time_seconds",
        "How long one poll of a task ran; a long poll delays every task queued behind it on its worker",
    ),
    (
        "tickstream_runtime_schedule_latency_seconds",
        "How long a woken task waited in a run queue before a worker polled it",
    ),
];

impl RuntimeCollector {
    /// # Errors
    /// Never with the static names above; `Desc::new` validates them.
    pub(crate) fn new(handle: Handle) -> prometheus::Result<Self> {
        let scalars = FAMILIES.iter().chain(UNSTABLE_FAMILIES).map(|(name, help, _, per_worker)| {
            let labels = if *per_worker { vec!["worker".to_owned()] } else { Vec::new() };
            Desc::new((*name).to_owned(), (*help).to_owned(), labels, Default::default())
        });
        let histograms = HISTOGRAMS.iter().map(|(name, help)| {
            Desc::new((*name).to_owned(), (*help).to_owned(), Vec::new(), Default::default())
        });
        let descs = scalars.chain(histograms).collect::<prometheus::Result<Vec<_>>>()?;
        Ok(Self { handle, descs })
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let rt = self.handle.metrics();
        let workers = rt.num_workers();
        let mut families: Vec<MetricFamily> = FAMILIES
            .iter()
            .chain(UNSTABLE_FAMILIES)
            .map(|&(name, help, kind, per_worker)| {
                let samples: Vec<Metric> = if per_worker {
                    (0..workers)
                        .map(|w| {
                            let mut m = sample(kind, worker_value(&rt, name, w));
                            let mut label = LabelPair::default();
                            label.set_name("worker".to_owned());
                            label.set_value(w.to_string());
                            m.set_label(vec![label]);
                            m
                        })
                        .collect()
                } else {
                    vec![sample(kind, runtime_value(&rt, name))]
                };
                family(name, help, kind, samples)
            })
            .collect();
        for &(name, help) in HISTOGRAMS {
            if let Some(h) = histogram(&rt, name) {
                families.push(family(name, help, MetricType::HISTOGRAM, vec![h]));
            }
        }
        families
    }
}

fn family(name: &str, help: &str, kind: MetricType, samples: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(samples);
    family
}

fn sample(kind: MetricType, value: f64) -> Metric {
    let mut m = Metric::default();
    if kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(value);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
    }
    m
}

fn runtime_value(rt: &RuntimeMetrics, name: &str) -> f64 {
    match name {
        "tickstream_runtime_workers" => rt.num_workers() as f64,
        "tickstream_runtime_alive_tasks" => rt.num_alive_tasks() as f64,
        #[cfg(all(tokio_unstable, target_has_atomic = "64"))]
        "tickstream_runtime_remote_schedules_total" => rt.remote_schedule_count() as f64,
        #[cfg(all(tokio_unstable, target_has_atomic = "64"))]
        "tickstream_runtime_budget_forced_yields_total" => rt.budget_forced_yield_count() as f64,
        "tickstream_runtime_global_queue_depth" => rt.global_queue_depth() as f64,
        _ => 0.0,
    }
}

#[cfg(target_has_atomic = "64")]
fn worker_value(rt: &RuntimeMetrics, name: &str, worker: usize) -> f64 {
    match name {
        "tickstream_runtime_worker_busy_seconds_total" => rt.worker_total_busy_duration(worker).as_secs_f64(),
        "tickstream_runtime_worker_parks_total" => rt.worker_park_count(worker) as f64,
        // tokio counts parks and unparks together: an odd count means parked now.
        "tickstream_runtime_worker_parked" => (rt.worker_park_unpark_count(worker) % 2) as f64,
        #[cfg(tokio_unstable)]
        "tickstream_runtime_worker_steals_total" => rt.worker_steal_count(worker) as f64,
        #[cfg(tokio_unstable)]
        "tickstream_runtime_worker_polls_total" => rt.worker_poll_count(worker) as f64,
        #[cfg(tokio_unstable)]
        "tickstream_runtime_worker_local_queue_depth" => rt.worker_local_queue_depth(worker) as f64,
        _ => 0.0,
    }
}

// tokio's per-worker counters are 64-bit atomics; without them the samples read 0 rather than
// the families vanishing, so dashboards keep their series.
#[cfg(not(target_has_atomic = "64"))]
fn worker_value(_: &RuntimeMetrics, _: &str, _: usize) -> f64 {
    0.0
}

/// One of [`HISTOGRAMS`], summed over the workers, in seconds; `None` when the runtime does not
/// record it (a runtime not made by [`build_runtime`], or a build without `tokio_unstable`).
#[cfg(all(tokio_unstable, target_has_atomic = "64"))]
fn histogram(rt: &RuntimeMetrics, name: &str) -> Option<Metric> {
    let poll = name == "tickstream_runtime_poll_time_seconds";
    let enabled =
        if poll { rt.poll_time_histogram_enabled() } else { rt.schedule_latency_histogram_enabled() };
    if !enabled {
        return None;
    }
    let n =
        if poll { rt.poll_time_histogram_num_buckets() } else { rt.schedule_latency_histogram_num_buckets() };
    let bucket_range = |b| {
        if poll {
            rt.poll_time_histogram_bucket_range(b)
        } else {
            rt.schedule_latency_histogram_bucket_range(b)
        }
    };
    let count = |w, b| {
        if poll {
            rt.poll_time_histogram_bucket_count(w, b)
        } else {
            rt.schedule_latency_histogram_bucket_count(w, b)
        }
    };
    let mut h = Histogram::default();
    let mut cumulative = 0u64;
    // Prometheus wants the sum of observations; tokio keeps only counts, so the sum is estimated
    // from each bucket's midpoint (the open last bucket counts at its lower bound).
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(n);
    for b in 0..n {
        let in_bucket: u64 = (0..rt.num_workers()).map(|w| count(w, b)).sum();
        cumulative += in_bucket;
        let r = bucket_range(b);
        let last = b + 1 == n;
        let mid = if last { r.start.as_secs_f64() } else { (r.start + r.end).as_secs_f64() / 2.0 };
        sum += in_bucket as f64 * mid;
        if !last {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(r.end.as_secs_f64());
            bucket.set_cumulative_count(cumulative);
            out.push(bucket);
        }
    }
    h.set_bucket(out);
    h.set_sample_count(cumulative);
    h.set_sample_sum(sum);
    let mut m = Metric::default();
    m.set_histogram(h);
    Some(m)
}

#[cfg(not(all(tokio_unstable, target_has_atomic = "64")))]
fn histogram(_: &RuntimeMetrics, _: &str) -> Option<Metric> {
    None
}

#[cfg(test)]
mod tests {
    use crate::Metrics;

    #[test]
    fn a_multi_thread_runtime_is_reported_per_worker() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let m = Metrics::new();
        m.observe_runtime(rt.handle());
        // A second call is harmless: the first handle stays.
        m.observe_runtime(rt.handle());
        let tasks: Vec<_> = (0..4)
            .map(|_| rt.spawn(async { tokio::time::sleep(std::time::Duration::from_secs(30)).await }))
            .collect();
        rt.block_on(async {
            // Work on the workers, so busy time and parks move off zero.
            for _ in 0..20 {
                tokio::spawn(async { std::hint::black_box((0..100_000u64).sum::<u64>()) })
                    .await
                    .expect("task");
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        });
        let text = m.render();
        assert!(text.contains("tickstream_runtime_workers 2\n"), "{text}");
        assert!(text.contains("tickstream_runtime_alive_tasks 4\n"), "{text}");
        assert!(text.contains("tickstream_runtime_global_queue_depth 0\n"), "{text}");
        assert!(text.contains("# TYPE tickstream_runtime_worker_busy_seconds_total counter"), "{text}");
        for w in ["0", "1"] {
            for name in ["worker_busy_seconds_total", "worker_parks_total", "worker_parked"] {
                let line = format!("tickstream_runtime_{name}{{worker=\"{w}\"}} ");
                assert!(text.contains(&line), "missing {line} in\n{text}");
            }
        }
        let parks: f64 = text
            .lines()
            .filter(|l| l.starts_with("tickstream_runtime_worker_parks_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(parks > 0.0, "workers parked between the sleeps:\n{text}");
        for t in tasks {
            t.abort();
        }
    }

    /// The runtime every role runs on records both histograms and the unstable counters; a
    /// runtime that does not (a test's own) exports no histogram rather than an empty one.
    #[cfg(tokio_unstable)]
    #[test]
    fn the_role_runtime_exports_steals_polls_and_both_histograms() {
        // Sized as asked (`--worker-threads`), whatever the machine's cores.
        let rt = super::build_runtime(Some(3)).expect("runtime");
        assert_eq!(rt.metrics().num_workers(), 3);
        let m = Metrics::new();
        m.observe_runtime(rt.handle());
        let polled = |text: &str| {
            text.lines()
                .filter(|l| l.starts_with("tickstream_runtime_worker_polls_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        // Workers publish their figures when they park or at maintenance, not per poll: wait for
        // that (a loaded machine may keep them busy a while) rather than read once.
        let text = rt.block_on(async {
            for _ in 0..50 {
                tokio::spawn(async { std::hint::black_box((0..10_000u64).sum::<u64>()) })
                    .await
                    .expect("task");
            }
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let text = m.render();
                if polled(&text) >= 50.0 || tokio::time::Instant::now() > deadline {
                    return text;
                }
            }
        });
        for name in ["poll_time_seconds", "schedule_latency_seconds"] {
            assert!(text.contains(&format!("# TYPE tickstream_runtime_{name} histogram")), "{name}:\n{text}");
            let count: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("tickstream_runtime_{name}_count ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            assert!(count >= 50.0, "{name}: 50 spawned tasks were polled, count {count}:\n{text}");
            assert!(text.contains(&format!("tickstream_runtime_{name}_bucket{{le=\"+Inf\"}}")), "{text}");
        }
        for name in ["worker_steals_total", "worker_polls_total", "worker_local_queue_depth"] {
            assert!(text.contains(&format!("tickstream_runtime_{name}{{worker=\"0\"}} ")), "{name}:\n{text}");
        }
        assert!(polled(&text) >= 50.0, "polls {}", polled(&text));
        assert!(text.contains("tickstream_runtime_remote_schedules_total "), "{text}");
        assert!(text.contains("tickstream_runtime_budget_forced_yields_total "), "{text}");

        let plain = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let m = Metrics::new();
        m.observe_runtime(plain.handle());
        assert!(
            !m.render().contains("tickstream_runtime_poll_time_seconds"),
            "no histogram when not recorded"
        );
    }
}
