//! Exponential backoff with jitter, for every retry loop in tickstream (Redis reconnects, engine
//! failover, the load generator's failed flows).
//!
//! Jitter matters more than the curve: after a Redis restart or an engine loss, thousands of
//! loops start retrying at the same instant, and without it they stay in lock-step.

use std::ops::Range;
use std::time::Duration;

use rand::Rng;

/// Delays `base · 2ⁿ`, capped at `max`, each multiplied by a random factor from `jitter`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Range<f64>,
    attempt: u32,
}

impl Backoff {
    /// Doubling from `base` to `max`, with a factor in [0.5, 1.0) ("equal jitter": never less
    /// than half the nominal delay, never more than it).
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max, jitter: 0.5..1.0, attempt: 0 }
    }

    /// The same curve with another jitter range; `jitter` must be non-empty and non-negative.
    pub fn with_jitter(mut self, jitter: Range<f64>) -> Self {
        debug_assert!(jitter.start >= 0.0 && jitter.start < jitter.end);
        self.jitter = jitter;
        self
    }

    /// The nominal (un-jittered) delay of the next attempt.
    pub fn nominal(&self) -> Duration {
        self.base.saturating_mul(1u32 << self.attempt.min(20)).min(self.max)
    }

    /// The delay to wait before the next attempt; each call doubles the nominal delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.nominal().mul_f64(rand::rng().random_range(self.jitter.clone()));
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// After a success: the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_within_the_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let nominal = [100, 200, 400, 800, 1000, 1000];
        for ms in nominal {
            let d = b.next_delay();
            let n = Duration::from_millis(ms);
            assert!(d >= n / 2 && d < n, "{d:?} outside [{:?}, {n:?})", n / 2);
        }
        b.reset();
        assert_eq!(b.nominal(), Duration::from_millis(100));
    }

    #[test]
    fn custom_jitter_and_no_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX).with_jitter(1.0..1.5);
        for _ in 0..100 {
            let _ = b.next_delay();
        }
        assert!(b.next_delay() >= Duration::from_secs(1 << 20));
    }
}
