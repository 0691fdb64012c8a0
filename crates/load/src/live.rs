//! Counters and histograms that virtual users write while the run goes on, and the sampler
//! that turns them into one [`Sample`] per second. Users touch only atomics and one of a few
//! sharded histogram locks (one lock per received message), never a global lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::hist::Hist;
use crate::results::Sample;

/// Histogram shards: users map onto them by id, so a lock is shared by 1/SHARDS of the users.
const SHARDS: usize = 16;
/// Distinct error kinds kept; further kinds are counted as `other`.
const MAX_ERROR_KINDS: usize = 64;

#[derive(Debug, Default)]
struct Shard {
    e2e: Hist,
    session: Hist,
    connect: Hist,
}

/// Live state of one generator process.
#[derive(Debug)]
pub struct Live {
    pub users: AtomicI64,
    pub sockets: AtomicI64,
    pub peak_users: AtomicI64,
    pub peak_sockets: AtomicI64,
    pub flows: AtomicU64,
    pub flows_failed: AtomicU64,
    pub sessions_ok: AtomicU64,
    pub sessions_failed: AtomicU64,
    pub ws_ok: AtomicU64,
    pub ws_failed: AtomicU64,
    pub messages: AtomicU64,
    pub updates: AtomicU64,
    pub published: AtomicU64,
    pub publish_failed: AtomicU64,
    pub publish_skipped: AtomicU64,
    errors_total: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    shards: Vec<Mutex<Shard>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            users: AtomicI64::new(0),
            sockets: AtomicI64::new(0),
            peak_users: AtomicI64::new(0),
            peak_sockets: AtomicI64::new(0),
            flows: AtomicU64::new(0),
            flows_failed: AtomicU64::new(0),
            sessions_ok: AtomicU64::new(0),
            sessions_failed: AtomicU64::new(0),
            ws_ok: AtomicU64::new(0),
            ws_failed: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            published: AtomicU64::new(0),
            publish_failed: AtomicU64::new(0),
            publish_skipped: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

/// Counts a live socket (or user) for as long as it is held.
#[derive(Debug)]
pub struct Held<'a> {
    gauge: &'a AtomicI64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Relaxed);
    }
}

impl Live {
    fn hold<'a>(gauge: &'a AtomicI64, peak: &AtomicI64) -> Held<'a> {
        let now = gauge.fetch_add(1, Relaxed) + 1;
        peak.fetch_max(now, Relaxed);
        Held { gauge }
    }

    pub fn hold_user(&self) -> Held<'_> {
        Self::hold(&self.users, &self.peak_users)
    }

    pub fn hold_socket(&self) -> Held<'_> {
        Self::hold(&self.sockets, &self.peak_sockets)
    }

    pub fn error(&self, kind: &str) {
        self.errors_total.fetch_add(1, Relaxed);
        let mut errors = self.errors.lock();
        if let Some(n) = errors.get_mut(kind) {
            *n += 1;
        } else if errors.len() < MAX_ERROR_KINDS {
            errors.insert(kind.to_owned(), 1);
        } else {
            *errors.entry("other".to_owned()).or_default() += 1;
        }
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().clone()
    }

    pub fn session_latency(&self, user: u64, us: u64) {
        self.shards[user as usize % SHARDS].lock().session.record_us(us);
    }

    pub fn connect_latency(&self, user: u64, us: u64) {
        self.shards[user as usize % SHARDS].lock().connect.record_us(us);
    }

    /// Accounts one received text message: counts it and every `"ts":` in it, and records
    /// `now - ts` for each when `latency` (not for a connection's first message: a snapshot
    /// carries the age of the last price, not a delivery time). Returns the number of updates.
    pub fn message(&self, user: u64, text: &[u8], latency: bool) -> u64 {
        let now_us = now_us();
        let mut n = 0;
        let mut shard = None;
        for ts_ms in timestamps(text) {
            n += 1;
            if !latency {
                continue;
            }
            let lat = now_us.saturating_sub(ts_ms.saturating_mul(1000));
            shard.get_or_insert_with(|| self.shards[user as usize % SHARDS].lock()).e2e.record_us(lat);
        }
        self.messages.fetch_add(1, Relaxed);
        self.updates.fetch_add(n, Relaxed);
        n
    }

    /// Takes the histograms recorded since the last call: (e2e, session, connect).
    pub fn drain(&self) -> (Hist, Hist, Hist) {
        let (mut e2e, mut session, mut connect) = (Hist::new(), Hist::new(), Hist::new());
        for shard in &self.shards {
            let mut s = shard.lock();
            e2e.add(&s.e2e);
            session.add(&s.session);
            connect.add(&s.connect);
            s.e2e.reset();
            s.session.reset();
            s.connect.reset();
        }
        (e2e, session, connect)
    }
}

/// Wall clock in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The values of every `"ts":` key in a JSON text, in order, without parsing the rest: one
/// substring search per update. Values that are not plain integers are skipped.
pub fn timestamps(text: &[u8]) -> impl Iterator<Item = u64> + '_ {
    const KEY: &[u8] = b"\"ts\":";
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            let rest = text.get(at..)?;
            let found = rest.windows(KEY.len()).position(|w| w == KEY)?;
            at += found + KEY.len();
            let digits = text[at..].iter().skip_while(|b| **b == b' ').take_while(|b| b.is_ascii_digit());
            let mut value: u64 = 0;
            let mut len = 0;
            for d in digits {
                value = value.saturating_mul(10).saturating_add(u64::from(d - b'0'));
                len += 1;
            }
            if len > 0 {
                return Some(value);
            }
        }
    })
}

/// Counters at one instant, to difference into per-second samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub messages: u64,
    pub updates: u64,
    pub errors: u64,
    pub sessions: u64,
}

impl Live {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            messages: self.messages.load(Relaxed),
            updates: self.updates.load(Relaxed),
            errors: self.errors_total.load(Relaxed),
            sessions: self.sessions_ok.load(Relaxed),
        }
    }

    /// A timeline sample for the interval since `prev`.
    pub fn sample(
        &self,
        t_s: f64,
        stage: usize,
        target: u64,
        prev: Snapshot,
        e2e: &Hist,
    ) -> (Sample, Snapshot) {
        let now = self.snapshot();
        let sample = Sample {
            t_s,
            stage,
            target,
            users: self.users.load(Relaxed).max(0) as u64,
            sockets: self.sockets.load(Relaxed).max(0) as u64,
            messages: now.messages - prev.messages,
            updates: now.updates - prev.updates,
            errors: now.errors - prev.errors,
            sessions: now.sessions - prev.sessions,
            e2e: e2e.percentiles(),
            e2e_hist: e2e.encode(),
        };
        (sample, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_timestamp_in_a_data_message() {
        let msg = br#"{"type":"prices","seq":7,"prices":[{"ticker":"AAPL","price":1.5,"ts":1764230400123},{"ticker":"MSFT","price":2,"ts":1764230400150}]}"#;
        assert_eq!(timestamps(msg).collect::<Vec<_>>(), [1764230400123, 1764230400150]);
        assert_eq!(timestamps(br#"{"type":"pong","ts": 42}"#).collect::<Vec<_>>(), [42]);
        assert_eq!(timestamps(br#"{"ts":"x","ts":5,"ts":"#).collect::<Vec<_>>(), [5]);
        assert_eq!(timestamps(b"").count(), 0);
        assert_eq!(timestamps(br#"{"ts":99999999999999999999999}"#).collect::<Vec<_>>(), [u64::MAX]);
    }

    #[test]
    fn message_accounting_and_drain() {
        let live = Live::default();
        let ts = now_us() / 1000;
        let msg = format!(r#"{{"prices":[{{"ts":{ts}}},{{"ts":{ts}}}]}}"#);
        assert_eq!(live.message(3, msg.as_bytes(), true), 2);
        assert_eq!(live.message(4, b"{}", true), 0);
        assert_eq!(live.message(5, msg.as_bytes(), false), 2, "counted, latency not recorded");
        assert_eq!(live.snapshot().messages, 3);
        assert_eq!(live.snapshot().updates, 4);
        let (e2e, _, _) = live.drain();
        assert_eq!(e2e.count(), 2);
        assert!(e2e.max_us() < 60_000_000);
        assert_eq!(live.drain().0.count(), 0, "drained");
    }

    #[test]
    fn gauges_track_peaks_and_error_kinds_are_bounded() {
        let live = Live::default();
        {
            let _a = live.hold_socket();
            let _b = live.hold_socket();
        }
        assert_eq!(live.sockets.load(Relaxed), 0);
        assert_eq!(live.peak_sockets.load(Relaxed), 2);
        for i in 0..100 {
            live.error(&format!("kind{i}"));
        }
        let errors = live.errors();
        assert_eq!(errors.len(), MAX_ERROR_KINDS + 1);
        assert_eq!(errors["other"], 100 - MAX_ERROR_KINDS as u64);
        assert_eq!(live.snapshot().errors, 100);
    }
}
