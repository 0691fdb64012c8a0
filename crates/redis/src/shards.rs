//! The shard map: which of the `--redis` URLs carries a ticker, and which fan-out worker of a
//! node hands its prices to the engine.
//!
//! This is a contract between nodes (and external producers that publish straight into Redis):
//! every node of a cluster must compute the same shard for a ticker, whatever its version, so
//! the function is spelled out here rather than borrowed from a hasher whose output may change:
//!
//! `shard = jump(fnv1a64(TICKER), shards)`
//!
//! - `fnv1a64`: 64-bit FNV-1a over the ticker's canonical bytes (upper case, as in its channel
//!   name `tickstream:px:<TICKER>`);
//! - `jump`: the jump consistent hash of Lamping & Veach (2014), "A Fast, Minimal Memory,
//!   Consistent Hash Algorithm". Appending a URL to the list moves only ≈ 1/(n+1) of the tickers
//!   (all of them onto the new shard); removing the *last* URL moves only that shard's tickers.
//!   Reordering the list, or removing any other URL, moves most of them.
//!
//! Sits at the bottom of the crate beside [`crate::keys`]; used by the broker (routing) and the
//! fan-out pool (worker choice).

use tickstream_api::Ticker;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// Jump consistent hash: a bucket in `0..buckets` for `key` (0 when `buckets` is 0 or 1).
pub fn jump(mut key: u64, buckets: usize) -> usize {
    let buckets = i64::try_from(buckets).unwrap_or(i64::MAX);
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        // Exactly the paper's arithmetic in IEEE-754 doubles (correctly rounded on every
        // platform, so every node agrees).
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        {
            j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
        }
    }
    usize::try_from(b.max(0)).unwrap_or(0)
}

/// The shard (index into the `--redis` list) that carries `ticker` among `shards`.
pub fn shard_of(ticker: Ticker, shards: usize) -> usize {
    jump(fnv1a64(ticker.as_str().as_bytes()), shards)
}

/// The fan-out worker of a node that delivers `ticker` among `workers`. The high half of the
/// hash, so it is not correlated with the shard choice (which starts from the whole key).
pub(crate) fn worker_of(ticker: Ticker, workers: usize) -> usize {
    let h = fnv1a64(ticker.as_str().as_bytes()) >> 32;
    usize::try_from(h).unwrap_or(0) % workers.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Ticker {
        Ticker::parse(s).unwrap()
    }

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// Fixed expectations: if this test changes, nodes of two versions disagree on where a
    /// ticker lives, and a rolling upgrade loses prices. Never update it without a migration.
    #[test]
    fn the_shard_of_a_ticker_never_changes() {
        let got: Vec<usize> = ["AAPL", "MSFT", "GOOG", "AMZN", "BRK.B", "TSLA", "NVDA", "META"]
            .map(|s| shard_of(t(s), 3))
            .into();
        assert_eq!(got, EXPECTED_3);
        let got: Vec<usize> = ["AAPL", "MSFT", "GOOG", "AMZN", "BRK.B", "TSLA", "NVDA", "META"]
            .map(|s| shard_of(t(s), 8))
            .into();
        assert_eq!(got, EXPECTED_8);
        // Case does not matter: the ticker is canonical before it is hashed.
        assert_eq!(shard_of(t("brk.b"), 8), shard_of(t("BRK.B"), 8));
    }

    // Computed independently (a Python transcription of the paper's C++ over FNV-1a 64).
    const EXPECTED_3: [usize; 8] = [0, 0, 2, 1, 0, 1, 2, 1];
    const EXPECTED_8: [usize; 8] = [0, 4, 7, 3, 0, 3, 2, 3];

    #[test]
    fn one_shard_takes_everything() {
        for s in ["A", "ZZZZ", "BRK.B"] {
            assert_eq!(shard_of(t(s), 1), 0);
            assert_eq!(shard_of(t(s), 0), 0);
        }
    }

    #[test]
    fn appending_a_shard_moves_only_tickers_onto_it_and_spreads_evenly() {
        let tickers: Vec<Ticker> = (0..30_000).map(|i| t(&format!("T{i}"))).collect();
        for n in 1..8 {
            let mut counts = vec![0usize; n + 1];
            for &ticker in &tickers {
                let (before, after) = (shard_of(ticker, n), shard_of(ticker, n + 1));
                assert!(after == before || after == n, "{ticker} moved {before} → {after} at {n}");
                counts[after] += 1;
            }
            // Each shard within 5% of an even share.
            let even = tickers.len() / (n + 1);
            for c in counts {
                assert!(c.abs_diff(even) < even / 20, "uneven spread at {}: {c} vs {even}", n + 1);
            }
        }
    }

    #[test]
    fn workers_are_in_range() {
        for i in 0..1000 {
            assert!(worker_of(t(&format!("W{i}")), 3) < 3);
        }
        assert_eq!(worker_of(t("AAPL"), 0), 0);
    }
}
