//! Pass/fail thresholds over a run's results, as k6's `thresholds`: `p99_latency<50ms`,
//! `availability>=99.9`. Any violated threshold makes `tickstream load` exit with 1.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::results::{Results, Verdict};

/// What a threshold measures; latencies compare in milliseconds, rates per second, ratios in %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// End-to-end latency (`ts` → received) percentiles and maximum.
    P50Latency,
    P90Latency,
    P99Latency,
    MaxLatency,
    /// Session creation (flow 1) latency p99.
    SessionP99,
    /// WebSocket connect (TCP + handshake) latency p99.
    ConnectP99,
    /// Flows that completed without error, in %.
    Availability,
    /// Session creations that succeeded, in %.
    SessionSuccess,
    /// WebSocket connections that succeeded, in %.
    WsSuccess,
    /// Total errors (count).
    Errors,
    PeakSockets,
    /// Ticker updates and messages received per second over the measured window.
    UpdatesPerS,
    MessagesPerS,
}

const METRICS: &[(&str, Metric)] = &[
    ("p50_latency", Metric::P50Latency),
    ("p90_latency", Metric::P90Latency),
    ("p99_latency", Metric::P99Latency),
    ("max_latency", Metric::MaxLatency),
    ("session_p99", Metric::SessionP99),
    ("connect_p99", Metric::ConnectP99),
    ("availability", Metric::Availability),
    ("session_success", Metric::SessionSuccess),
    ("ws_success", Metric::WsSuccess),
    ("errors", Metric::Errors),
    ("peak_sockets", Metric::PeakSockets),
    ("updates_per_s", Metric::UpdatesPerS),
    ("messages_per_s", Metric::MessagesPerS),
];

impl Metric {
    fn is_latency(self) -> bool {
        matches!(
            self,
            Metric::P50Latency
                | Metric::P90Latency
                | Metric::P99Latency
                | Metric::MaxLatency
                | Metric::SessionP99
                | Metric::ConnectP99
        )
    }

    fn is_percent(self) -> bool {
        matches!(self, Metric::Availability | Metric::SessionSuccess | Metric::WsSuccess)
    }

    fn name(self) -> &'static str {
        METRICS.iter().find(|(_, m)| *m == self).map_or("?", |(n, _)| n)
    }

    /// The metric's value in `r` (ms for latencies, % for ratios); `None` when the run has no
    /// data for it (no update received, no flow, no attempt): an empty histogram's 0 ms or an
    /// empty ratio's 100 % would pass any threshold while measuring nothing.
    pub fn value(self, r: &Results) -> Option<f64> {
        let latency = |p: &crate::hist::Percentiles, v: f64| (p.count > 0).then_some(v);
        match self {
            Metric::P50Latency => latency(&r.e2e, r.e2e.p50_ms),
            Metric::P90Latency => latency(&r.e2e, r.e2e.p90_ms),
            Metric::P99Latency => latency(&r.e2e, r.e2e.p99_ms),
            Metric::MaxLatency => latency(&r.e2e, r.e2e.max_ms),
            Metric::SessionP99 => latency(&r.session_latency, r.session_latency.p99_ms),
            Metric::ConnectP99 => latency(&r.connect_latency, r.connect_latency.p99_ms),
            Metric::Availability => (r.flows > 0).then(|| r.availability_pct()),
            Metric::SessionSuccess => pct(r.sessions_ok, r.sessions_ok + r.sessions_failed),
            Metric::WsSuccess => pct(r.ws_ok, r.ws_ok + r.ws_failed),
            Metric::Errors => Some(r.errors_total() as f64),
            Metric::PeakSockets => Some(r.peak_sockets as f64),
            Metric::UpdatesPerS => Some(r.updates_per_s()),
            Metric::MessagesPerS => Some(r.messages_per_s()),
        }
    }
}

fn pct(ok: u64, all: u64) -> Option<f64> {
    (all > 0).then(|| ok as f64 * 100.0 / all as f64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
        }
    }

    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Eq => (value - limit).abs() < 1e-9,
        }
    }
}

/// `METRIC OP VALUE[UNIT]`; the value is normalised to the metric's unit (ms, %, count).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub metric: Metric,
    pub op: Op,
    pub limit: f64,
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let at = s.find(['<', '>', '=']).ok_or_else(|| format!("threshold `{s}`: expected METRIC<VALUE"))?;
        let (name, rest) = s.split_at(at);
        let metric = METRICS.iter().find(|(n, _)| *n == name.trim()).map(|(_, m)| *m).ok_or_else(|| {
            let names: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
            format!("threshold `{s}`: unknown metric `{}` (one of {})", name.trim(), names.join(", "))
        })?;
        let (op, value) = [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("<", Op::Lt), (">", Op::Gt)]
            .iter()
            .find_map(|(sym, op)| rest.strip_prefix(sym).map(|v| (*op, v.trim())))
            .ok_or_else(|| format!("threshold `{s}`: expected one of < <= > >= =="))?;
        let (number, unit) =
            value.split_at(value.find(|c: char| c.is_ascii_alphabetic() || c == '%').unwrap_or(value.len()));
        let number: f64 =
            number.trim().parse().map_err(|_| format!("threshold `{s}`: `{value}` is not a number"))?;
        if !number.is_finite() {
            return Err(format!("threshold `{s}`: `{value}` is not a finite number"));
        }
        let limit = match (metric.is_latency(), metric.is_percent(), unit.trim()) {
            (true, _, "ms" | "") => number,
            (true, _, "us" | "µs") => number / 1000.0,
            (true, _, "s") => number * 1000.0,
            (_, true, "%" | "") => number,
            (false, false, "") => number,
            (_, _, u) => return Err(format!("threshold `{s}`: unit `{u}` does not fit {}", metric.name())),
        };
        Ok(Threshold { metric, op, limit })
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.metric.is_latency() {
            "ms"
        } else if self.metric.is_percent() {
            "%"
        } else {
            ""
        };
        write!(f, "{}{}{}{unit}", self.metric.name(), self.op.symbol(), self.limit)
    }
}

impl Threshold {
    pub fn evaluate(&self, r: &Results) -> Verdict {
        let value = self.metric.value(r);
        let passed = value.is_some_and(|v| self.op.holds(v, self.limit));
        Verdict { threshold: self.to_string(), value, passed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::Hist;

    fn t(s: &str) -> Threshold {
        s.parse().unwrap()
    }

    #[test]
    fn parses_units_and_operators() {
        assert_eq!(t("p99_latency<50ms"), Threshold { metric: Metric::P99Latency, op: Op::Lt, limit: 50.0 });
        assert_eq!(t("p99_latency < 0.5s").limit, 500.0);
        assert_eq!(t("max_latency<=250us").limit, 0.25);
        assert_eq!(
            t("availability>=99.9"),
            Threshold { metric: Metric::Availability, op: Op::Ge, limit: 99.9 }
        );
        assert_eq!(t("availability>=99.9%").limit, 99.9);
        assert_eq!(t("errors==0").op, Op::Eq);
        assert_eq!(t("peak_sockets>1000").op, Op::Gt);
        assert_eq!(t("p99_latency<50ms").to_string(), "p99_latency<50ms");
        for bad in [
            "p99_latency",
            "latency<5",
            "p99_latency<fast",
            "availability>=5ms",
            "errors<3s",
            "p99_latency!5",
            "p99_latency<NaN",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluates_against_results() {
        let mut r = Results::empty();
        let mut h = Hist::new();
        for us in 1..=1000 {
            h.record_us(us * 100); // 0.1 .. 100 ms
        }
        r.set_e2e(h);
        r.flows = 1000;
        r.flows_failed = 2;
        assert!(!t("p99_latency<50ms").evaluate(&r).passed);
        assert!(t("p99_latency<100ms").evaluate(&r).passed);
        assert!(t("p50_latency<=51ms").evaluate(&r).passed);
        let v = t("availability>=99.9").evaluate(&r);
        assert!(!v.passed && (v.value.unwrap() - 99.8).abs() < 1e-9, "{v:?}");
        assert!(t("availability>=99.8").evaluate(&r).passed);
        assert!(t("errors==0").evaluate(&r).passed, "no error kinds were recorded");
    }

    #[test]
    fn a_run_that_measured_nothing_fails_its_thresholds() {
        // No update received, no flow, no attempt: an empty histogram reads 0 ms and an empty
        // ratio 100 %, which would pass anything.
        let r = Results::empty();
        for rule in
            ["p99_latency<10ms", "max_latency<1s", "availability>=99.9", "session_p99<1s", "ws_success>=99"]
        {
            let v = t(rule).evaluate(&r);
            assert!(!v.passed && v.value.is_none(), "{rule}: {v:?}");
        }
        assert!(t("errors==0").evaluate(&r).passed, "a count of zero is a measurement");
    }
}
