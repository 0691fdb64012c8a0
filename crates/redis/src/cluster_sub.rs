//! The node's sharded Pub/Sub on a Redis Cluster: `SSUBSCRIBE` each ticker's channel on its
//! slot's master, read the pushes, and re-subscribe and restore when a master comes back.
//!
//! One task ([`run`]) per node, spawned by `RedisBroker::start` in place of `subscriber.rs`.
//! It owns the redis crate's cluster connection (RESP3, one connection per master, opened and
//! repaired by the crate). The crate delivers every push to [`Pushes`] on its own task: prices
//! are decoded and handed to the fan-out pool there (one short lock, never a wait, as in
//! `subscriber.rs`), so no queue sits between the crate and the engine.
//!
//! Re-subscription is ours, not the crate's. redis 1.8.1 remembers sharded subscriptions and
//! re-sends them when it reconnects a master, but as *one* `SSUBSCRIBE` per master with every
//! channel it owns; Redis refuses a `SSUBSCRIBE` whose channels are in different slots
//! (`CROSSSLOT`), so a master with tickers in two slots gets none back. So when the crate
//! reports a dropped master connection (a `Disconnection` push, which does not say which
//! master), this task treats every subscription as unconfirmed and re-sends them, one command
//! per slot (a no-op on the masters that never left), retrying with backoff those whose master
//! is still down; once all are confirmed it restores prices (`prices::after_reconnect`: guarded
//! by `ts`, not re-published, snapshots only of what changed) and has the engine re-write its
//! session records. Tickers of the other masters never pause.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{AsyncPushSender, SendError};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tickstream_api::{Backoff, Ticker};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{BACKOFF_MAX, BACKOFF_MIN, BATCH};
use crate::shard::Shared;
use crate::{conn, keys, prices, subscriber};

/// Sharded (un)subscribe commands in flight at once (each is one slot's channels).
const IN_FLIGHT: usize = 64;
/// After a master came back and everything was re-subscribed and restored, the subscriptions
/// are sent again this many times, `SETTLE_PAUSE`, then twice, three times that later: the
/// crate may still replace a master's connection (dropping its subscriptions with it) while the
/// cluster settles, and its own re-subscription of that connection fails (`CROSSSLOT`).
const SETTLE_PASSES: u32 = 3;
const SETTLE_PAUSE: Duration = Duration::from_millis(700);

/// What the crate's pushes told the subscriber task.
#[derive(Default)]
struct Events {
    /// A master's connection dropped: re-subscribe everything, then restore.
    lost: AtomicBool,
    wake: Notify,
}

/// The push sender given to the crate: decodes and dispatches on the crate's task.
#[derive(Clone)]
struct Pushes {
    shared: Weak<Shared>,
    events: Arc<Events>,
}

fn text(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

fn bytes(v: Option<&Value>) -> Option<&[u8]> {
    match v? {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

impl AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        // The node is gone: tell the crate to stop sending.
        let shared = self.shared.upgrade().ok_or(SendError)?;
        let channel = text(info.data.first());
        match info.kind {
            PushKind::SMessage => {
                let (Some(channel), Some(payload)) = (channel, bytes(info.data.get(1))) else {
                    return Ok(());
                };
                match keys::cluster_tag(channel, keys::PRICE_CHANNEL_PREFIX) {
                    Some(t) => {
                        subscriber::dispatch(&shared, &format!("{}{t}", keys::PRICE_CHANNEL_PREFIX), payload)
                    }
                    None if channel == keys::CLUSTER_CONTROL_CHANNEL => {
                        subscriber::dispatch(&shared, keys::CONTROL_CHANNEL, payload);
                    }
                    None => subscriber::dispatch(&shared, channel, payload),
                }
            }
            PushKind::Disconnection => {
                // One master's connection (the crate reconnects it).
                tracing::warn!("redis: a cluster master's Pub/Sub connection dropped; re-subscribing");
                self.events.lost.store(true, Ordering::Relaxed);
                self.events.wake.notify_one();
            }
            _ => {}
        }
        Ok(())
    }
}

/// The node's sharded Pub/Sub on the cluster: connect (with backoff until the cluster answers),
/// subscribe the control channel, then carry out the subscription plan and restore what
/// restarted masters lost, until shutdown. Dropping the connection at the end closes every
/// master's connection and ends the crate's tasks.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let events = Arc::new(Events::default());
    let pushes = Pushes { shared: Arc::downgrade(&shared), events: Arc::clone(&events) };
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let conn = loop {
        match connect(&shared, pushes.clone()).await {
            Ok(conn) => break conn,
            Err(e) => {
                let pause = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?pause, "redis: cannot reach the cluster; retrying");
                if !crate::subscriber::sleep_or_shutdown(pause, &shutdown).await {
                    return;
                }
            }
        }
    };
    shared.connected(false);
    serve(&shared, conn, &events, &shutdown).await;
    shared.connection_lost();
}

async fn connect(shared: &Shared, pushes: Pushes) -> redis::RedisResult<ClusterConnection> {
    let client = conn::cluster_builder(&shared.config)
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(pushes)
        .build()?;
    let timeout = shared.config.command_timeout;
    let mut conn = tokio::time::timeout(timeout, client.get_async_connection())
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    tokio::time::timeout(timeout, conn.ssubscribe(keys::CLUSTER_CONTROL_CHANNEL))
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
    Ok(conn)
}

/// `tickers` grouped by slot, each group at most `BATCH` long (one sharded command each).
fn by_slot(tickers: &[Ticker]) -> Vec<Vec<Ticker>> {
    let mut slots: HashMap<u16, Vec<Ticker>> = HashMap::new();
    for &t in tickers {
        slots.entry(keys::ticker_slot(t)).or_default().push(t);
    }
    slots.into_values().flat_map(|g| g.chunks(BATCH).map(<[_]>::to_vec).collect::<Vec<_>>()).collect()
}

/// Sends one sharded (un)subscribe per slot group; returns the groups that succeeded and
/// whether any failed.
async fn per_slot(
    shared: &Shared,
    conn: &ClusterConnection,
    tickers: &[Ticker],
    subscribe: bool,
) -> (Vec<Vec<Ticker>>, bool) {
    let timeout = shared.config.command_timeout;
    let calls = by_slot(tickers).into_iter().map(|group| {
        let mut conn = conn.clone();
        async move {
            let channels: Vec<String> = group.iter().map(|&t| keys::cluster_channel_for(t)).collect();
            let sent =
                if subscribe { conn.ssubscribe(&channels).await } else { conn.sunsubscribe(&channels).await };
            (group, sent)
        }
    });
    // Collected first (see `cluster::run_script`).
    let calls: Vec<_> = calls.map(|f| tokio::time::timeout(timeout, f)).collect();
    let done: Vec<_> = futures::stream::iter(calls).buffer_unordered(IN_FLIGHT).collect().await;
    let mut ok = Vec::new();
    let mut failed = false;
    for r in done {
        match r {
            Ok((group, Ok(()))) => ok.push(group),
            Ok((_, Err(e))) => {
                tracing::warn!(error = %e, "redis: a sharded (un)subscribe failed; retrying");
                failed = true;
            }
            Err(_) => failed = true,
        }
    }
    (ok, failed)
}

async fn serve(shared: &Shared, conn: ClusterConnection, events: &Events, shutdown: &CancellationToken) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut reconcile = true;
    // Set from a dropped master connection until everything is confirmed and restored again.
    let mut resync = false;
    // Settle passes done since the last dropped connection, and whether one is due now.
    let mut settle: u32 = 0;
    let mut settling = false;
    let mut next_linger: Option<Instant> = None;
    let mut retry_at: Option<Instant> = None;
    loop {
        let mut failed = false;
        if events.lost.swap(false, Ordering::Relaxed) {
            // Which master dropped is not known: every subscription is confirmed again, and
            // the unwanted ones (lingering) are let go now rather than re-subscribed.
            let unwanted = shared.reconfirm_all();
            let _ = per_slot(shared, &conn, &unwanted, false).await;
            resync = true;
            reconcile = true;
            settle = 0;
        } else if settling && retry_at.is_none() {
            // A settle pass: send every wanted subscription again (a no-op where it holds) and
            // restore, in case the crate swapped a master's connection after our re-subscription.
            let wanted = shared.wanted();
            let (_, sub_failed) = per_slot(shared, &conn, &wanted, true).await;
            if sub_failed {
                retry_at = Some(Instant::now() + backoff.next_delay());
                failed = true;
            }
            resync = true;
        }
        settling = false;
        while reconcile {
            let plan = shared.plan();
            next_linger = plan.next_check;
            reconcile = !plan.is_idle();
            if !reconcile {
                break;
            }
            let (_, unsub_failed) = per_slot(shared, &conn, &plan.unsubscribe, false).await;
            let (confirmed, sub_failed) = per_slot(shared, &conn, &plan.subscribe, true).await;
            for group in &confirmed {
                shared.confirmed(group);
            }
            if unsub_failed || sub_failed {
                // A master is down: what it carries is planned again after a pause (the rest
                // is subscribed), rather than spinning on it. (An unsubscribe that failed is
                // not retried: a down master lost the subscription anyway.)
                retry_at = Some(Instant::now() + backoff.next_delay());
                reconcile = false;
                failed = true;
                break;
            }
            backoff.reset();
            retry_at = None;
        }
        if resync && !failed && !events.lost.load(Ordering::Relaxed) {
            // Every wanted ticker is subscribed again: restore the cache and snapshot what
            // changed meanwhile, bounded as in `subscriber.rs`. A master that just came back
            // refuses writes for a few seconds (`CLUSTERDOWN`): tried again after a pause.
            let restore =
                tokio::time::timeout(shared.config.command_timeout * 4, prices::after_reconnect(shared));
            let restored = tokio::select! {
                () = shutdown.cancelled() => return,
                r = restore => r.unwrap_or(false),
            };
            if restored {
                resync = false;
                if settle == 0 {
                    shared.connected(true);
                }
                // The session records' master may be the one that came back empty (and it
                // may have refused the first re-write while it was settling).
                if let Some(listener) = shared.listener.get() {
                    listener.reconnected();
                }
                if settle < SETTLE_PASSES {
                    settle += 1;
                    retry_at = Some(Instant::now() + SETTLE_PAUSE * settle);
                }
            } else {
                tracing::warn!("redis: restoring prices after a master came back failed; retrying");
                retry_at = Some(Instant::now() + backoff.next_delay());
            }
        }
        let at = |t: Option<Instant>| async move {
            match t {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = shared.changed.notified() => reconcile = true,
            () = events.wake.notified() => {}
            () = at(next_linger) => reconcile = true,
            () = at(retry_at) => {
                retry_at = None;
                reconcile = true;
                settling = !resync && settle > 0 && settle <= SETTLE_PASSES;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_grouped_by_slot() {
        let t = |s: &str| Ticker::parse(s).unwrap();
        let groups = by_slot(&[t("AAPL"), t("MSFT"), t("GOOG")]);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 3);
        for g in groups {
            assert!(g.iter().all(|&x| keys::ticker_slot(x) == keys::ticker_slot(g[0])));
        }
    }
}
