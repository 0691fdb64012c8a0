//! The tokio runtime's own figures as `tickstream_runtime_*` metrics: a Prometheus collector
//! that reads [`tokio::runtime::RuntimeMetrics`] at scrape time, so it needs no task of its own
//! and costs nothing between scrapes. [`crate::Metrics::observe_runtime`] registers it in a
//! node's registry; each role calls that when it builds its metrics.
//!
//! Only tokio's stable metrics are used: workers, alive tasks, global queue depth, and per worker
//! busy time, park count and parked-now. Steal counts, poll counts, the poll-time histogram, local
//! queue depths and the blocking pool need `--cfg tokio_unstable` for the whole build, which would
//! make every build (and the shared, pre-built `target/`) differ from a plain `cargo build`; the
//! busy ratio and the global queue answer the question we have (is a worker saturated, is work
//! waiting) without it.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use tokio::runtime::Handle;

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

impl RuntimeCollector {
    /// # Errors
    /// Never with the static names above; `Desc::new` validates them.
    pub(crate) fn new(handle: Handle) -> prometheus::Result<Self> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help, _, per_worker)| {
                let labels = if *per_worker { vec!["worker".to_owned()] } else { Vec::new() };
                Desc::new((*name).to_owned(), (*help).to_owned(), labels, Default::default())
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
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
        FAMILIES
            .iter()
            .map(|&(name, help, kind, per_worker)| {
                let mut family = MetricFamily::default();
                family.set_name(name.to_owned());
                family.set_help(help.to_owned());
                family.set_field_type(kind);
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
                    let value = match name {
                        "tickstream_runtime_workers" => workers,
                        "tickstream_runtime_alive_tasks" => rt.num_alive_tasks(),
                        _ => rt.global_queue_depth(),
                    };
                    vec![sample(kind, value as f64)]
                };
                family.set_metric(samples);
                family
            })
            .collect()
    }
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

#[cfg(target_has_atomic = "64")]
fn worker_value(rt: &tokio::runtime::RuntimeMetrics, name: &str, worker: usize) -> f64 {
    match name {
        "tickstream_runtime_worker_busy_seconds_total" => rt.worker_total_busy_duration(worker).as_secs_f64(),
        "tickstream_runtime_worker_parks_total" => rt.worker_park_count(worker) as f64,
        // tokio counts parks and unparks together: an odd count means parked now.
        _ => (rt.worker_park_unpark_count(worker) % 2) as f64,
    }
}

// tokio's per-worker counters are 64-bit atomics; without them the samples read 0 rather than
// the families vanishing, so dashboards keep their series.
#[cfg(not(target_has_atomic = "64"))]
fn worker_value(_: &tokio::runtime::RuntimeMetrics, _: &str, _: usize) -> f64 {
    0.0
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
}
