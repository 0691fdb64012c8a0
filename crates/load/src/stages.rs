//! Stages: how many virtual users should be alive at each instant, as k6's `options.stages`.
//!
//! A run starts at 0 users; each stage ramps linearly from the previous stage's target to its
//! own over its duration (a stage whose target equals the previous one holds). The reference
//! system's profiles are built in (`docs/benchmarks.md`, `shared/design/reference-system.md`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most virtual users one stage may ask for (bounded: every user may hold a socket).
pub const MAX_TARGET: u32 = 1_000_000;

/// One stage: reach `target` users over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    #[serde(with = "millis")]
    pub duration: Duration,
    pub target: u32,
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

impl FromStr for Stage {
    type Err = String;

    /// `DURATION:TARGET`, e.g. `3m:1000`, `30s:1500`, `500ms:0`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (d, t) = s.split_once(':').ok_or_else(|| format!("stage `{s}`: expected DURATION:TARGET"))?;
        let duration =
            tickstream_api::parse_duration(d).map_err(|e| format!("stage `{s}`: duration `{d}`: {e}"))?;
        let target: u32 =
            t.trim().parse().map_err(|_| format!("stage `{s}`: target `{t}` is not a count"))?;
        if target > MAX_TARGET {
            return Err(format!("stage `{s}`: target above {MAX_TARGET}"));
        }
        Ok(Stage { duration, target })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", humantime::format_duration(self.duration), self.target)
    }
}

/// The reference system's k6 profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 3m→100, 1m@100, 30s→150, 1m@150, 10s→0.
    Smoke,
    /// 3m→1000, 1m@1000, 30s→1500, 1m@1500, 10s→0.
    Spike,
    /// 5m→5000, 5m@5000 (the reference only says "5,000 reached within 5 min, held 5 min").
    Capacity,
}

impl Profile {
    pub fn stages(self) -> Vec<Stage> {
        let s = |secs: u64, target: u32| Stage { duration: Duration::from_secs(secs), target };
        match self {
            Profile::Smoke => vec![s(180, 100), s(60, 100), s(30, 150), s(60, 150), s(10, 0)],
            Profile::Spike => vec![s(180, 1000), s(60, 1000), s(30, 1500), s(60, 1500), s(10, 0)],
            Profile::Capacity => vec![s(300, 5000), s(300, 5000)],
        }
    }
}

/// A whole schedule: stages, already time-scaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub stages: Vec<Stage>,
}

impl Schedule {
    /// `stages` with every duration multiplied by `time_scale` (> 0), and targets by
    /// `users_scale` (rounded; 1.0 keeps them).
    pub fn new(stages: &[Stage], time_scale: f64, users_scale: f64) -> Self {
        let stages = stages
            .iter()
            .map(|s| Stage {
                duration: s.duration.mul_f64(time_scale.max(0.0)),
                target: ((f64::from(s.target) * users_scale).round() as u32).min(MAX_TARGET),
            })
            .collect();
        Schedule { stages }
    }

    /// A single stage that holds `users` for `duration` (reached at once).
    pub fn constant(users: u32, duration: Duration) -> Self {
        Schedule {
            stages: vec![
                Stage { duration: Duration::ZERO, target: users },
                Stage { duration, target: users },
            ],
        }
    }

    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    pub fn peak(&self) -> u32 {
        self.stages.iter().map(|s| s.target).max().unwrap_or(0)
    }

    /// Users wanted `at` into the run (fractional; the caller rounds). After the last stage,
    /// the last target.
    pub fn target_at(&self, at: Duration) -> f64 {
        let mut from = 0.0;
        let mut start = Duration::ZERO;
        for s in &self.stages {
            let end = start + s.duration;
            let to = f64::from(s.target);
            if at < end {
                let frac = (at - start).as_secs_f64() / s.duration.as_secs_f64();
                return from + (to - from) * frac;
            }
            from = to;
            start = end;
        }
        from
    }

    /// Index of the stage running `at` (the last one after the end).
    pub fn stage_at(&self, at: Duration) -> usize {
        let mut end = Duration::ZERO;
        for (i, s) in self.stages.iter().enumerate() {
            end += s.duration;
            if at < end {
                return i;
            }
        }
        self.stages.len().saturating_sub(1)
    }

    /// This worker's share of every target when `count` workers split the users: targets are
    /// divided evenly, the remainder going to the lowest indexes, so the shares always add up.
    pub fn share(&self, index: u32, count: u32) -> Self {
        let count = count.max(1);
        let stages = self
            .stages
            .iter()
            .map(|s| Stage {
                duration: s.duration,
                target: s.target / count + u32::from(index < s.target % count),
            })
            .collect();
        Schedule { stages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn parses_stages_and_rejects_bad_ones() {
        assert_eq!("3m:1000".parse::<Stage>(), Ok(Stage { duration: secs(180.0), target: 1000 }));
        assert_eq!("500ms:0".parse::<Stage>(), Ok(Stage { duration: secs(0.5), target: 0 }));
        assert!("3m".parse::<Stage>().is_err());
        assert!("soon:10".parse::<Stage>().is_err());
        assert!("1s:-3".parse::<Stage>().is_err());
        assert!("1s:2000000".parse::<Stage>().is_err());
        assert_eq!("30s:1500".parse::<Stage>().map(|s| s.to_string()), Ok("30s:1500".into()));
    }

    #[test]
    fn interpolates_linearly_from_the_previous_target() {
        let s = Schedule::new(&Profile::Spike.stages(), 1.0, 1.0);
        assert_eq!(s.total(), secs(340.0));
        assert_eq!(s.target_at(secs(0.0)), 0.0);
        assert!((s.target_at(secs(90.0)) - 500.0).abs() < 1e-9);
        assert!((s.target_at(secs(180.0)) - 1000.0).abs() < 1e-9);
        assert!((s.target_at(secs(200.0)) - 1000.0).abs() < 1e-9, "hold");
        assert!((s.target_at(secs(255.0)) - 1250.0).abs() < 1e-9, "30s ramp 1000 -> 1500");
        assert!((s.target_at(secs(335.0)) - 750.0).abs() < 1e-9, "10s ramp down");
        assert_eq!(s.target_at(secs(340.0)), 0.0);
        assert_eq!(s.target_at(secs(1e6)), 0.0);
        assert_eq!(s.stage_at(secs(0.0)), 0);
        assert_eq!(s.stage_at(secs(250.0)), 2);
        assert_eq!(s.stage_at(secs(1e6)), 4);
        assert_eq!(s.peak(), 1500);
    }

    #[test]
    fn time_scale_compresses_and_zero_length_stages_jump() {
        let s = Schedule::new(&Profile::Spike.stages(), 0.1, 1.0);
        assert_eq!(s.total(), secs(34.0));
        assert!((s.target_at(secs(9.0)) - 500.0).abs() < 1e-6);
        let c = Schedule::constant(300, secs(2.0));
        assert_eq!(c.target_at(secs(0.0)), 300.0);
        assert_eq!(c.target_at(secs(5.0)), 300.0);
        let u = Schedule::new(&Profile::Smoke.stages(), 1.0, 0.5);
        assert_eq!(u.peak(), 75);
    }

    #[test]
    fn worker_shares_add_up_to_the_whole() {
        let s = Schedule::new(&Profile::Spike.stages(), 1.0, 1.0);
        for n in [1, 3, 7] {
            let shares: Vec<_> = (0..n).map(|i| s.share(i, n)).collect();
            for (k, stage) in s.stages.iter().enumerate() {
                let sum: u32 = shares.iter().map(|sh| sh.stages[k].target).sum();
                assert_eq!(sum, stage.target);
            }
        }
    }

    #[test]
    fn capacity_reaches_5000_in_5_minutes_and_holds_5() {
        let s = Schedule::new(&Profile::Capacity.stages(), 1.0, 1.0);
        assert_eq!(s.total(), secs(600.0));
        assert!((s.target_at(secs(300.0)) - 5000.0).abs() < 1e-9);
    }
}
