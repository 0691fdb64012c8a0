//! Bounded, sharded per-client tables: token buckets ([`Buckets`]) and concurrency counts
//! ([`Counts`]). They hold no I/O and no policy beyond "is this client over its limit"; which
//! key and which limit is `limits`' business.
//!
//! Why our own rather than `governor`'s keyed limiter: governor's keyed state is a map that
//! grows with every key until `retain_recent` is called from somewhere, and its GCRA answers
//! "not before t" which we would turn back into a bucket anyway. Here the bound is structural:
//! each shard holds at most `capacity / SHARDS` entries, idle ones (a bucket that has refilled)
//! are dropped first, and a full shard sheds its least recently used eighth in one pass, so the
//! cost of eviction is amortised over many inserts. A client evicted while not idle starts again
//! with a full bucket: at the table's bound we fail open for that client rather than refuse
//! everyone.
//!
//! Shards keep one client's traffic from serialising another's: a lock is held for a hash
//! lookup and a few float operations, never across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

const SHARDS: usize = 16;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard leaves plain numbers behind: still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Shard selection shared by both tables.
#[derive(Debug)]
struct Shards<K, V> {
    shards: Vec<Mutex<HashMap<K, V>>>,
    hasher: RandomState,
    per_shard: usize,
}

impl<K: Hash + Eq, V> Shards<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &K) -> MutexGuard<'_, HashMap<K, V>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        lock(&self.shards[i])
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per key: `burst` tokens, refilled at `per_sec`.
#[derive(Debug)]
pub struct Buckets<K> {
    table: Shards<K, Bucket>,
    burst: f64,
    per_sec: f64,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// `capacity` bounds the number of keys held (at least one per shard).
    pub fn new(burst: u32, per_sec: u32, capacity: usize) -> Self {
        Self {
            table: Shards::new(capacity),
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_sec.max(1)),
        }
    }

    /// Takes one token for `key`.
    ///
    /// # Errors
    /// The bucket is empty: how long until the next token.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut shard = self.table.shard(key);
        if !shard.contains_key(key) && shard.len() >= self.table.per_shard {
            self.evict(&mut shard, now);
        }
        let bucket = shard.entry(key.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        let tokens = self.refilled(bucket, now);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_sec).min(self.burst)
    }

    /// Drops buckets that have refilled (forgetting them changes nothing), then, if the shard is
    /// still over seven eighths full, the least recently used eighth.
    fn evict(&self, shard: &mut HashMap<K, Bucket>, now: Instant) {
        shard.retain(|_, b| self.refilled(b, now) < self.burst);
        let keep = self.table.per_shard - self.table.per_shard / 8 - 1;
        if shard.len() > keep {
            let mut ages: Vec<Instant> = shard.values().map(|b| b.at).collect();
            let cut = shard.len() - keep;
            let (_, nth, _) = ages.select_nth_unstable(cut - 1);
            let cutoff = *nth;
            shard.retain(|_, b| b.at > cutoff);
        }
    }

    /// Keys held now (for tests and bounds checks).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Concurrent holders per key, at most `max` each. An entry exists only while its count is
/// above zero, so the table is bounded by the number of live holders, which other limits bound
/// (connections, WebSockets).
#[derive(Debug)]
pub struct Counts<K> {
    table: Shards<K, usize>,
    max: usize,
}

/// One held slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct Slot<K: Hash + Eq> {
    counts: Arc<Counts<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    pub fn new(max: usize) -> Arc<Self> {
        // Capacity only sizes the shards' share; entries are removed at zero.
        Arc::new(Self { table: Shards::new(SHARDS), max })
    }

    /// Takes a slot for `key`, or `None` when it already holds `max`.
    pub fn acquire(self: &Arc<Self>, key: &K) -> Option<Slot<K>> {
        let mut shard = self.table.shard(key);
        let count = shard.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot { counts: Arc::clone(self), key: key.clone() })
    }

    /// Slots `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        self.table.shard(key).get(key).copied().unwrap_or(0)
    }

    /// Keys holding at least one slot.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut shard = self.counts.table.shard(&self.key);
        if let Some(count) = shard.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_allows_its_burst_then_its_rate() {
        let b = Buckets::new(3, 2, 100);
        for _ in 0..3 {
            assert_eq!(b.take(&"a"), Ok(()));
        }
        let wait = b.take(&"a").expect_err("empty");
        assert_eq!(wait, Duration::from_millis(500));
        // Another key is untouched by the first one's state.
        assert_eq!(b.take(&"b"), Ok(()));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(b.take(&"a"), Ok(()));
        assert!(b.take(&"a").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_stay_bounded_and_forget_idle_keys_first() {
        let b = Buckets::new(2, 1, 64);
        for i in 0..10_000u32 {
            let _ = b.take(&i);
            assert!(b.len() <= 64, "{} keys held", b.len());
        }
        // An active key survives a flood of new keys long enough to stay limited.
        let b = Buckets::new(1, 1, 16 * 16);
        assert!(b.take(&u32::MAX).is_ok());
        assert!(b.take(&u32::MAX).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        // Now it is idle (refilled): evicting it changes nothing it could observe.
        for i in 0..1000u32 {
            let _ = b.take(&i);
        }
        assert!(b.take(&u32::MAX).is_ok());
    }

    #[test]
    fn counts_hold_at_most_max_and_release_on_drop() {
        let c = Counts::new(2);
        let a1 = c.acquire(&"a").expect("first");
        let a2 = c.acquire(&"a").expect("second");
        assert!(c.acquire(&"a").is_none(), "third refused");
        let b1 = c.acquire(&"b").expect("another key has its own count");
        assert_eq!(c.held(&"a"), 2);
        drop(a1);
        assert!(c.acquire(&"a").is_some(), "released slot is reusable (and dropped at once)");
        drop((a2, b1));
        assert_eq!(c.len(), 0, "no entry outlives its last slot");
    }
}
