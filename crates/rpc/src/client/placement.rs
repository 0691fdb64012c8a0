//! Which engine a call goes to: the rendezvous-hash order of a session, round robin for calls
//! not tied to one, and which of an engine's connections a session uses.
//!
//! Pure functions of (session hash, which engines are up, which one just failed): the
//! up/down state comes from [`super::probe`], and [`super::call`] walks the order they return.
//! Every gateway computes the same order for the same session, so a client reconnecting
//! through another gateway lands on the same engine, and losing an engine moves only its
//! sessions.

use std::cmp::Reverse;

use tickstream_api::SessionId;

/// FNV-1a of the session id's text: a hash every gateway computes alike. Also picks the
/// connection (of an engine's few) a session's calls use.
pub(super) fn session_hash(id: SessionId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A session's weight on an engine: its hash mixed with the engine index by the SplitMix64
/// finaliser (FNV alone spreads the last bytes poorly).
fn rendezvous_score(session_hash: u64, engine: usize) -> u64 {
    let mut z = session_hash ^ (engine as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Engines to try for a session (indices into `up`): reachable ones in its rendezvous order,
/// then the rest (a down mark may be stale), with `last` (the one that just failed) at the
/// very end.
pub(super) fn session_order(session_hash: u64, up: &[bool], last: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..up.len()).collect();
    order.sort_by_cached_key(|&i| (Some(i) == last, !up[i], Reverse(rendezvous_score(session_hash, i))));
    order
}

/// Round robin from the `start`-th engine over reachable engines, then the rest.
pub(super) fn round_robin(start: usize, up: &[bool]) -> Vec<usize> {
    let n = up.len();
    if n == 0 {
        return Vec::new();
    }
    // `start % n` first: the counter wraps at `usize::MAX`, and `start + k` must not overflow.
    let first = start % n;
    let mut order: Vec<usize> = (0..n).map(|k| (first + k) % n).collect();
    // Stable: the rotation is kept within the reachable and within the unreachable.
    order.sort_by_key(|&i| !up[i]);
    order
}

/// Which of an engine's `connections` a call keyed by `key` uses.
pub(super) fn connection(key: u64, connections: usize) -> usize {
    (key % connections.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_order_is_stable_and_spreads_sessions() {
        let up = [false; 3];
        let mut first = [0usize; 3];
        for _ in 0..3000 {
            let hash = session_hash(SessionId::random());
            let order = session_order(hash, &up, None);
            assert_eq!(order, session_order(hash, &up, None), "same order every time");
            first[order[0]] += 1;
            // The engine that just failed goes last.
            assert_eq!(session_order(hash, &up, Some(order[0])).last(), Some(&order[0]));
        }
        assert!(first.iter().all(|&n| n > 850), "roughly even: {first:?}");
    }

    #[test]
    fn session_hash_is_the_same_for_the_same_id() {
        let id = SessionId::random();
        let again = SessionId::parse(&id.to_string()).expect("an id parses back");
        assert_eq!(session_hash(id), session_hash(again));
    }

    #[test]
    fn reachable_engines_come_first_and_the_failed_one_last() {
        for _ in 0..200 {
            let hash = session_hash(SessionId::random());
            let all_up = session_order(hash, &[true; 4], None);
            // Engine 1 down: it moves behind every reachable engine, the others keep their order.
            let up = [true, false, true, true];
            let order = session_order(hash, &up, None);
            assert_eq!(order[3], 1);
            assert_eq!(order[..3], all_up.iter().copied().filter(|&i| i != 1).collect::<Vec<_>>()[..]);
            // A failed engine goes behind even the unreachable ones.
            let failed = order[0];
            let after = session_order(hash, &up, Some(failed));
            assert_eq!(after.last(), Some(&failed));
            assert_eq!(after[after.len() - 2], 1);
            // Losing an engine moves only its sessions: the others keep their first choice.
            if all_up[0] != 1 {
                assert_eq!(order[0], all_up[0]);
            }
        }
    }

    #[test]
    fn round_robin_rotates_over_reachable_engines_first() {
        assert_eq!(round_robin(0, &[true; 3]), vec![0, 1, 2]);
        assert_eq!(round_robin(1, &[true; 3]), vec![1, 2, 0]);
        assert_eq!(round_robin(5, &[true; 3]), vec![2, 0, 1]);
        assert_eq!(round_robin(1, &[true, true, false]), vec![1, 0, 2]);
        assert_eq!(round_robin(0, &[false, true, false]), vec![1, 0, 2]);
        assert_eq!(round_robin(usize::MAX, &[true; 3]), vec![0, 1, 2], "no overflow at the wrap");
        assert!(round_robin(3, &[]).is_empty());
    }

    #[test]
    fn connections_are_picked_by_key() {
        assert_eq!(connection(0, 4), 0);
        assert_eq!(connection(7, 4), 3);
        assert_eq!(connection(u64::MAX, 1), 0);
        assert_eq!(connection(9, 0), 0, "no division by zero");
    }
}
