//! The outcome of a run: counts, histograms and a per-second timeline. This is what `--out`
//! writes, what a worker process prints for its parent, and what the summary and the HTML
//! report are drawn from. Worker results merge by adding counts and histograms.
//!
//! One file (a little over 400 lines) on purpose: the types, their merge and their JSON form are
//! one contract with the worker protocol, and reading them apart invites a field merged wrongly.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::hist::{Hist, Percentiles};
use crate::stages::Schedule;

/// Format version of the JSON.
pub const VERSION: u32 = 1;

/// One second of the run (summed over workers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the start, at the end of the interval.
    pub t_s: f64,
    pub stage: usize,
    pub target: u64,
    pub users: u64,
    pub sockets: u64,
    pub messages: u64,
    pub updates: u64,
    pub errors: u64,
    pub sessions: u64,
    /// End-to-end latency of this interval's updates.
    pub e2e: Percentiles,
    /// The interval's e2e histogram (V2, base64), so merged samples get true percentiles.
    pub e2e_hist: String,
}

/// What the generator itself cost (one entry per process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorCost {
    pub peak_rss_bytes: u64,
    pub start_rss_bytes: u64,
    pub cpu_s: f64,
    pub peak_sockets: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub version: u32,
    pub target: String,
    pub peer: String,
    pub workers: u32,
    pub started_at_ms: u64,
    pub duration_s: f64,
    /// Seconds excluded from rates and e2e latency at the start (`--warmup`).
    pub warmup_s: f64,
    pub schedule: Schedule,
    pub tickers_per_vu: usize,
    pub abrupt: bool,
    /// Flows started (session + WebSocket, including retries) and those that ended in error.
    pub flows: u64,
    pub flows_failed: u64,
    pub sessions_ok: u64,
    pub sessions_failed: u64,
    pub ws_ok: u64,
    pub ws_failed: u64,
    /// Received in the whole run.
    pub messages: u64,
    pub updates: u64,
    /// Received after the warm-up (the rates' numerators).
    pub measured_messages: u64,
    pub measured_updates: u64,
    pub published: u64,
    pub publish_failed: u64,
    /// Ticks not sent because `MAX_IN_FLIGHT` publish requests were already waiting.
    #[serde(default)]
    pub publish_skipped: u64,
    pub errors: BTreeMap<String, u64>,
    pub peak_users: u64,
    pub peak_sockets: u64,
    pub session_latency: Percentiles,
    pub connect_latency: Percentiles,
    pub e2e: Percentiles,
    pub session_hist: Hist,
    pub connect_hist: Hist,
    pub e2e_hist: Hist,
    pub timeline: Vec<Sample>,
    pub generator: Vec<GeneratorCost>,
    #[serde(default)]
    pub thresholds: Vec<Verdict>,
}

/// The outcome of one threshold on one run (computed by `crate::threshold`, carried here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub threshold: String,
    /// `None`: the run measured nothing for this metric, which fails the threshold.
    pub value: Option<f64>,
    pub passed: bool,
}

impl Results {
    pub fn empty() -> Self {
        Results {
            version: VERSION,
            target: String::new(),
            peer: "tickstream".into(),
            workers: 1,
            started_at_ms: 0,
            duration_s: 0.0,
            warmup_s: 0.0,
            schedule: Schedule { stages: Vec::new() },
            tickers_per_vu: 0,
            abrupt: false,
            flows: 0,
            flows_failed: 0,
            sessions_ok: 0,
            sessions_failed: 0,
            ws_ok: 0,
            ws_failed: 0,
            messages: 0,
            updates: 0,
            measured_messages: 0,
            measured_updates: 0,
            published: 0,
            publish_failed: 0,
            publish_skipped: 0,
            errors: BTreeMap::new(),
            peak_users: 0,
            peak_sockets: 0,
            session_latency: Percentiles::default(),
            connect_latency: Percentiles::default(),
            e2e: Percentiles::default(),
            session_hist: Hist::new(),
            connect_hist: Hist::new(),
            e2e_hist: Hist::new(),
            timeline: Vec::new(),
            generator: Vec::new(),
            thresholds: Vec::new(),
        }
    }

    pub fn set_e2e(&mut self, h: Hist) {
        self.e2e = h.percentiles();
        self.e2e_hist = h;
    }

    /// Recomputes the percentile summaries from the histograms.
    pub fn refresh_percentiles(&mut self) {
        self.session_latency = self.session_hist.percentiles();
        self.connect_latency = self.connect_hist.percentiles();
        self.e2e = self.e2e_hist.percentiles();
    }

    /// Flows that completed without an error, in % (100 when none was attempted).
    pub fn availability_pct(&self) -> f64 {
        if self.flows == 0 {
            100.0
        } else {
            (self.flows - self.flows_failed.min(self.flows)) as f64 * 100.0 / self.flows as f64
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn measured_s(&self) -> f64 {
        (self.duration_s - self.warmup_s).max(1e-9)
    }

    pub fn updates_per_s(&self) -> f64 {
        self.measured_updates as f64 / self.measured_s()
    }

    pub fn messages_per_s(&self) -> f64 {
        self.measured_messages as f64 / self.measured_s()
    }

    /// Adds a worker's results into these (parent side of `--workers`).
    ///
    /// # Errors
    /// A timeline histogram that does not decode.
    pub fn merge(&mut self, other: &Results) -> Result<(), String> {
        self.duration_s = self.duration_s.max(other.duration_s);
        self.flows += other.flows;
        self.flows_failed += other.flows_failed;
        self.sessions_ok += other.sessions_ok;
        self.sessions_failed += other.sessions_failed;
        self.ws_ok += other.ws_ok;
        self.ws_failed += other.ws_failed;
        self.messages += other.messages;
        self.updates += other.updates;
        self.measured_messages += other.measured_messages;
        self.measured_updates += other.measured_updates;
        self.published += other.published;
        self.publish_failed += other.publish_failed;
        self.publish_skipped += other.publish_skipped;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.session_hist.add(&other.session_hist);
        self.connect_hist.add(&other.connect_hist);
        self.e2e_hist.add(&other.e2e_hist);
        self.refresh_percentiles();
        self.generator.extend_from_slice(&other.generator);
        // Timelines line up by second: workers start within milliseconds of each other.
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize_with(other.timeline.len(), Sample::default);
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(&other.timeline) {
            mine.t_s = mine.t_s.max(theirs.t_s);
            mine.stage = mine.stage.max(theirs.stage);
            mine.target += theirs.target;
            mine.users += theirs.users;
            mine.sockets += theirs.sockets;
            mine.messages += theirs.messages;
            mine.updates += theirs.updates;
            mine.errors += theirs.errors;
            mine.sessions += theirs.sessions;
            let mut h = Hist::decode(&mine.e2e_hist)?;
            h.add(&Hist::decode(&theirs.e2e_hist)?);
            mine.e2e = h.percentiles();
            mine.e2e_hist = h.encode();
        }
        // A per-second sample can miss a peak between samples; a single worker's own peak cannot
        // exceed the sum, so take the larger of the two lower bounds.
        let sampled_users = self.timeline.iter().map(|s| s.users).max().unwrap_or(0);
        let sampled_sockets = self.timeline.iter().map(|s| s.sockets).max().unwrap_or(0);
        self.peak_users = self.peak_users.max(other.peak_users).max(sampled_users);
        self.peak_sockets = self.peak_sockets.max(other.peak_sockets).max(sampled_sockets);
        Ok(())
    }

    /// The k6-like end-of-run summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let p = |p: &Percentiles| {
            format!("p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms", p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms)
        };
        let pct = |ok: u64, failed: u64| {
            if ok + failed == 0 { 100.0 } else { ok as f64 * 100.0 / (ok + failed) as f64 }
        };
        let line = |s: &mut String, name: &str, value: String| {
            let dots = ".".repeat(22usize.saturating_sub(name.len()));
            let _ = writeln!(s, "  {name}{dots}: {value}");
        };
        let stages: Vec<String> = self.schedule.stages.iter().map(ToString::to_string).collect();
        let _ =
            writeln!(s, "\n  tickstream load — {} ({}), {} worker(s)", self.target, self.peer, self.workers);
        line(&mut s, "stages", stages.join(" "));
        line(
            &mut s,
            "duration",
            format!("{:.1}s (warm-up {:.1}s excluded from rates and e2e)", self.duration_s, self.warmup_s),
        );
        line(
            &mut s,
            "availability",
            format!("{:.3}% ({} of {} flows failed)", self.availability_pct(), self.flows_failed, self.flows),
        );
        if self.peer == "tickstream" {
            line(
                &mut s,
                "sessions_created",
                format!(
                    "{} ok, {} failed ({:.2}%)  {}",
                    self.sessions_ok,
                    self.sessions_failed,
                    pct(self.sessions_ok, self.sessions_failed),
                    p(&self.session_latency)
                ),
            );
        }
        line(
            &mut s,
            "ws_connects",
            format!(
                "{} ok, {} failed ({:.2}%)  {}",
                self.ws_ok,
                self.ws_failed,
                pct(self.ws_ok, self.ws_failed),
                p(&self.connect_latency)
            ),
        );
        line(&mut s, "messages_received", format!("{} ({:.0}/s)", self.messages, self.messages_per_s()));
        line(&mut s, "updates_received", format!("{} ({:.0}/s)", self.updates, self.updates_per_s()));
        line(&mut s, "e2e_latency", format!("{}  (n={})", p(&self.e2e), self.e2e.count));
        if self.published + self.publish_failed > 0 {
            line(
                &mut s,
                "published",
                format!(
                    "{} ok ({:.0}/s), {} failed, {} skipped (server too slow)",
                    self.published,
                    self.published as f64 / self.duration_s.max(1e-9),
                    self.publish_failed,
                    self.publish_skipped
                ),
            );
        }
        line(&mut s, "peak", format!("{} users, {} sockets", self.peak_users, self.peak_sockets));
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        };
        line(&mut s, "errors", errors);
        for (i, g) in self.generator.iter().enumerate() {
            let per_socket = if g.peak_sockets > 0 {
                format!(
                    ", {:.1} KB per socket",
                    g.peak_rss_bytes.saturating_sub(g.start_rss_bytes) as f64
                        / g.peak_sockets as f64
                        / 1024.0
                )
            } else {
                String::new()
            };
            line(
                &mut s,
                &format!("generator[{i}]"),
                format!(
                    "peak RSS {:.1} MB{per_socket}, CPU {:.1}s ({:.0}% of one core)",
                    g.peak_rss_bytes as f64 / 1e6,
                    g.cpu_s,
                    g.cpu_s * 100.0 / self.duration_s.max(1e-9)
                ),
            );
        }
        for v in &self.thresholds {
            let mark = if v.passed { "✓" } else { "✗" };
            let value = v.value.map_or_else(|| "no data".to_owned(), |x| format!("value {x:.3}"));
            line(&mut s, "threshold", format!("{mark} {} ({value})", v.threshold));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(latency_us: u64, n: u64, sockets: u64) -> Results {
        let mut r = Results::empty();
        r.duration_s = 10.0;
        r.flows = n;
        r.sessions_ok = n;
        r.ws_ok = n;
        r.messages = n * 10;
        r.updates = n * 20;
        r.measured_updates = n * 20;
        r.peak_sockets = sockets;
        r.errors.insert("ws_closed_1011".into(), 1);
        let mut h = Hist::new();
        for _ in 0..n {
            h.record_us(latency_us);
        }
        r.set_e2e(h.clone());
        r.timeline = vec![
            Sample { t_s: 1.0, users: sockets, sockets, e2e_hist: h.encode(), ..Sample::default() },
            Sample { t_s: 2.0, users: sockets / 2, sockets: sockets / 2, ..Sample::default() },
        ];
        r
    }

    #[test]
    fn merging_adds_counts_histograms_and_timelines() {
        let mut a = worker(1_000, 990, 100);
        let b = worker(200_000, 10, 50);
        a.merge(&b).unwrap();
        assert_eq!(a.flows, 1000);
        assert_eq!(a.updates, 20_000);
        assert_eq!(a.errors["ws_closed_1011"], 2);
        assert_eq!(a.e2e.count, 1000);
        // The true p99 of 990 × 1 ms and 10 × 200 ms is 1 ms and the max 200 ms; averaging the
        // two workers' p99s would say ~100 ms.
        assert!(a.e2e.p99_ms < 1.01, "{:?}", a.e2e);
        assert!(a.e2e.max_ms > 199.0);
        assert_eq!(a.timeline[0].sockets, 150);
        assert_eq!(a.timeline[0].e2e.count, 1000);
        assert_eq!(a.peak_sockets, 150);
        assert!((a.updates_per_s() - 2000.0).abs() < 1e-6);
    }

    #[test]
    fn merge_survives_json_and_timelines_of_different_lengths() {
        let mut a = worker(1_000, 10, 10);
        let mut b = worker(1_000, 10, 10);
        b.timeline.push(Sample { t_s: 3.0, sockets: 7, ..Sample::default() });
        let b: Results = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.timeline.len(), 3);
        assert_eq!(a.timeline[2].sockets, 7);
        let mut bad = worker(1_000, 1, 1);
        bad.timeline[0].e2e_hist = "###".into();
        assert!(a.merge(&bad).is_err());
    }

    #[test]
    fn availability_and_summary() {
        let mut r = Results::empty();
        assert_eq!(r.availability_pct(), 100.0);
        r.flows = 22_833;
        r.flows_failed = 46;
        assert!((r.availability_pct() - 99.7985).abs() < 1e-3);
        let text = r.summary();
        assert!(text.contains("availability"), "{text}");
        assert!(text.contains("46 of 22833 flows failed"), "{text}");
    }
}
