//! Latency histograms: HDR histograms in microseconds that serialise to the standard
//! HdrHistogram V2 encoding (base64) so worker processes can hand them to their parent, which
//! adds them up — percentiles are never averaged.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour, in microseconds. Larger values are clamped to it.
const HIGHEST_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Clone, PartialEq)]
pub struct Hist(Histogram<u64>);

impl fmt::Debug for Hist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hist(n={}, p50={}us, max={}us)", self.count(), self.percentile_us(50.0), self.max_us())
    }
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

/// The summary statistics of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Hist {
    pub fn new() -> Self {
        // 1 µs .. 1 h at 3 significant digits: a fixed array of ~23,000 counters (~180 KiB), so
        // histograms are shared by shards of users, never one per socket. Values are clamped
        // into range so recording never fails.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static bounds are valid");
        Hist(h)
    }

    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, HIGHEST_US));
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The value at `q` percent (0–100), in µs; 0 when empty.
    pub fn percentile_us(&self, q: f64) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.value_at_percentile(q) }
    }

    pub fn max_us(&self) -> u64 {
        if self.0.is_empty() { 0 } else { self.0.max() }
    }

    pub fn mean_us(&self) -> f64 {
        if self.0.is_empty() { 0.0 } else { self.0.mean() }
    }

    pub fn percentiles(&self) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: self.count(),
            p50_ms: ms(self.percentile_us(50.0)),
            p90_ms: ms(self.percentile_us(90.0)),
            p99_ms: ms(self.percentile_us(99.0)),
            max_ms: ms(self.max_us()),
        }
    }

    /// Adds every value of `other` (same bounds, so this cannot fail).
    pub fn add(&mut self, other: &Hist) {
        // Both sides were built by `Hist::new`, so the ranges match; `add` only fails when the
        // other histogram holds values this one cannot, which the clamp in `record_us` excludes.
        let _ = self.0.add(&other.0);
    }

    /// Takes the recorded values out, leaving this histogram empty (for interval sampling).
    pub fn take(&mut self) -> Hist {
        let out = self.clone();
        self.0.reset();
        out
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// HdrHistogram V2 encoding, base64.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        match V2Serializer::new().serialize(&self.0, &mut buf) {
            Ok(_) => STANDARD.encode(buf),
            Err(_) => String::new(),
        }
    }

    /// # Errors
    /// Not base64, or not a V2 histogram.
    pub fn decode(s: &str) -> Result<Hist, String> {
        let mut out = Hist::new();
        if s.is_empty() {
            return Ok(out);
        }
        let bytes = STANDARD.decode(s).map_err(|e| format!("histogram: {e}"))?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| format!("histogram: {e:?}"))?;
        for v in h.iter_recorded() {
            let value = v.value_iterated_to().clamp(1, HIGHEST_US);
            let _ = out.0.record_n(value, v.count_at_value());
        }
        Ok(out)
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hist::decode(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Hist::new();
        for us in 1..=10_000 {
            h.record_us(us);
        }
        let within = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 * 0.001 + 1.0;
        assert!(within(h.percentile_us(50.0), 5_000), "{}", h.percentile_us(50.0));
        assert!(within(h.percentile_us(90.0), 9_000));
        assert!(within(h.percentile_us(99.0), 9_900));
        assert!(within(h.max_us(), 10_000));
        assert_eq!(h.count(), 10_000);
        let p = h.percentiles();
        assert!((p.p99_ms - 9.9).abs() < 0.02, "{p:?}");
    }

    #[test]
    fn empty_histograms_report_zero_and_huge_values_clamp() {
        let mut h = Hist::new();
        assert_eq!(h.percentiles(), Percentiles::default());
        h.record_us(u64::MAX);
        h.record_us(0);
        assert_eq!(h.count(), 2);
        assert!(h.max_us() >= HIGHEST_US);
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_all_values() {
        // Two workers with very different latencies: averaging their p99s would say ~50 ms;
        // the true p99 of the union is in the slow worker's range.
        let (mut fast, mut slow, mut all) = (Hist::new(), Hist::new(), Hist::new());
        for i in 0..9_000 {
            fast.record_us(1_000 + i % 100);
            all.record_us(1_000 + i % 100);
        }
        for i in 0..1_000 {
            slow.record_us(100_000 + i * 10);
            all.record_us(100_000 + i * 10);
        }
        let mut merged = Hist::decode(&fast.encode()).unwrap();
        merged.add(&Hist::decode(&slow.encode()).unwrap());
        assert_eq!(merged, all);
        assert!(merged.percentile_us(99.0) > 100_000);
    }

    #[test]
    fn serde_round_trip_and_bad_input() {
        let mut h = Hist::new();
        h.record_us(42);
        h.record_us(4_200_000);
        let json = serde_json::to_string(&h).unwrap();
        let back: Hist = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert!(Hist::decode("not base64!").is_err());
        assert!(Hist::decode("AAAA").is_err());
        assert_eq!(Hist::decode("").unwrap().count(), 0);
    }
}
