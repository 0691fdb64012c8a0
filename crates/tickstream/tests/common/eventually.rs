//! Waiting for something that happens a moment later (a gauge settling, a subscription landing,
//! a row in a page): the one polling helper every test uses, so each wait has a deadline, a
//! short poll, and a failure that says what was awaited and what was last seen.
#![allow(dead_code)]

use std::fmt::Debug;
use std::time::Duration;

use tokio::time::Instant;

/// How long a test waits for the system to settle before failing. Generous: the suite shares
/// two cores with builds, and the waits end as soon as the condition holds.
pub const WAIT: Duration = Duration::from_secs(10);

/// The pause between two observations: short, so a wait ends soon after its condition holds,
/// yet long enough that a `/metrics` scrape per poll does not load the server under test.
const POLL: Duration = Duration::from_millis(20);

/// Observes until `done(&value)` holds, for at most `timeout` (at least one observation, and
/// the deadline is checked after each, however long it took). Returns the accepted value, or
/// the last one observed as the error.
pub async fn try_eventually<T>(
    timeout: Duration,
    mut observe: impl AsyncFnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> Result<T, T> {
    let deadline = Instant::now() + timeout;
    loop {
        let value = observe().await;
        if done(&value) {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(value);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Observes until `done(&value)` holds and returns that value; after `timeout`, fails with
/// `what` and the last value observed.
///
/// ```ignore
/// eventually(WAIT, "no session left", async || s.gauges().await.sessions, |&n| n == 0).await;
/// ```
///
/// # Panics
/// When the condition does not hold within `timeout`.
pub async fn eventually<T: Debug>(
    timeout: Duration,
    what: &str,
    observe: impl AsyncFnMut() -> T,
    done: impl FnMut(&T) -> bool,
) -> T {
    match try_eventually(timeout, observe, done).await {
        Ok(value) => value,
        Err(last) => panic!("timed out after {timeout:?} waiting for {what}; last observed: {last:?}"),
    }
}
