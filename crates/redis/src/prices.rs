//! Prices on Redis: the compare-`ts`-then-write script every publish goes through, the node's
//! own record of the latest prices it holds (`Held`), and what happens to both across a Redis
//! restart.
//!
//! - **Atomic newest-wins.** [`PUBLISH_SCRIPT`] runs in Redis: per tick, it reads the cached
//!   `ts`, and only if the new tick is not older does it `HSET` the cache and `PUBLISH` the tick.
//!   Two nodes racing on one ticker therefore cannot leave an older price cached, nor publish
//!   the older one after the newer. Dropped ticks are counted (`tickstream_updates_stale_total`).
//! - **Bounded symbols.** A node publishes at most `max_symbols` distinct symbols; when the
//!   record is full, symbols this node does not watch and has not published for
//!   `symbol_idle` are forgotten. A refused publish takes no slot.
//! - **No missed price across a restart.** After the subscriber reconnects and re-subscribes,
//!   [`after_reconnect`] re-writes every price the node holds (guarded by `ts`, in `restore`
//!   mode, which does not re-publish), then reads the cache for every watched ticker and hands
//!   the engine those newer than what it last delivered, as a snapshot (`TickSink::resync`).
//!
//! Each shard has its own `Held` and its own cache hash (on that shard's Redis), holding only
//! the tickers of that shard.
//!
//! Sits beside `broker` (whose `publish` calls [`publish`] per shard) and `subscriber` (which
//! records deliveries with [`Held::delivered`] and calls [`after_reconnect`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use foldhash::fast::RandomState;
use tickstream_api::{SharedTick, Tick, Ticker};
use tickstream_broker::BrokerError;
use tokio::time::Instant;

use crate::config::{BACKOFF_MAX, BACKOFF_MIN, BATCH};
use crate::shard::{Shared, unavailable};
use crate::{keys, wire};

/// `KEYS[1]` = the last-value hash; `ARGV[1]` = `publish` or `restore`, then per tick: field,
/// ts, JSON, channel. Returns how many ticks were older than the cached one. A cached value that
/// does not decode (an external producer's) counts as absent. `restore` neither re-publishes
/// nor rewrites an equal `ts`.
pub(crate) const PUBLISH_SCRIPT: &str = r"
local publish = ARGV[1] == 'publish'
local stale = 0
for i = 2, #ARGV, 4 do
  local field, ts, json, channel = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local held = nil
  local cur = redis.call('HGET', KEYS[1], field)
  if cur then
    local ok, v = pcall(cjson.decode, cur)
    if ok and type(v) == 'table' and type(v.ts) == 'number' then held = v.ts end
  end
  if held and (held > ts or (not publish and held == ts)) then
    if publish then stale = stale + 1 end
  else
    redis.call('HSET', KEYS[1], field, json)
    if publish then redis.call('PUBLISH', channel, json) end
  end
end
return stale
";

/// How often each step of the post-reconnect restore is tried (≈ 1.2 s of pauses in all).
const RESTORE_ATTEMPTS: u32 = 5;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(PUBLISH_SCRIPT));

/// What the node knows about one symbol.
struct Entry {
    /// The newest tick this node published or was delivered.
    tick: SharedTick,
    /// When it last published or was delivered this symbol (idle eviction).
    at: Instant,
    /// `ts` of the last tick handed to the engine, if any.
    delivered_ts: Option<u64>,
}

/// The node's latest prices, bounded by `max_symbols`.
#[derive(Default)]
pub(crate) struct Held {
    entries: HashMap<Ticker, Entry, RandomState>,
}

impl Held {
    /// Makes room for `ticks`, or refuses them whole (nothing is recorded then).
    fn admit(&mut self, ticks: &[Tick], shared: &Shared, now: Instant) -> Result<(), BrokerError> {
        let max = shared.config.max_symbols;
        let fresh = |e: &HashMap<Ticker, Entry, RandomState>| {
            let mut f: Vec<Ticker> = ticks.iter().map(Tick::ticker).filter(|t| !e.contains_key(t)).collect();
            f.sort_unstable();
            f.dedup();
            f.len()
        };
        if self.entries.len() + fresh(&self.entries) > max {
            let idle = shared.config.symbol_idle;
            self.entries.retain(|t, e| shared.is_wanted(t) || now.duration_since(e.at) < idle);
            if self.entries.len() + fresh(&self.entries) > max {
                return Err(BrokerError::SymbolLimit { max });
            }
        }
        Ok(())
    }

    fn record(&mut self, tick: &SharedTick, now: Instant, delivered: bool) {
        let delivered_ts = delivered.then_some(tick.ts_ms());
        match self.entries.get_mut(&tick.ticker()) {
            Some(e) => {
                if e.tick.ts_ms() <= tick.ts_ms() {
                    e.tick = Arc::clone(tick);
                }
                e.at = now;
                e.delivered_ts = delivered_ts.max(e.delivered_ts);
            }
            None => {
                self.entries.insert(tick.ticker(), Entry { tick: Arc::clone(tick), at: now, delivered_ts });
            }
        }
    }

    /// A price arrived on the subscription and went to the engine. Not recorded for a new
    /// symbol when the record is full (delivery itself is never refused).
    pub fn delivered(&mut self, tick: &SharedTick, max: usize) {
        if self.entries.len() < max || self.entries.contains_key(&tick.ticker()) {
            self.record(tick, Instant::now(), true);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Runs `op` up to [`RESTORE_ATTEMPTS`] times, pausing with backoff between failures.
///
/// The subscriber may be back before the command connection knows Redis restarted: that one
/// learns it from its first failed command and reconnects only then. Without a retry, the
/// restore would be that failed command, and the cache would stay empty of this node's prices
/// until the next publish. The caller bounds the whole restore in time.
async fn retried<T, Fut>(mut op: impl FnMut() -> Fut) -> Result<T, BrokerError>
where
    Fut: Future<Output = Result<T, BrokerError>>,
{
    let mut backoff = tickstream_api::Backoff::new(BACKOFF_MIN * 2, BACKOFF_MAX);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < RESTORE_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "redis: restore step failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Runs the script over `ticks` in batches; returns how many were stale.
async fn run_script(shared: &Shared, mode: &str, ticks: &[SharedTick]) -> Result<u64, BrokerError> {
    if shared.is_cluster() {
        return crate::cluster::run_script(shared, mode, ticks).await;
    }
    let mut stale = 0;
    for batch in ticks.chunks(BATCH) {
        let mut call = SCRIPT.prepare_invoke();
        call.key(keys::LAST_VALUES).arg(mode);
        for t in batch {
            call.arg(t.ticker().as_str()).arg(t.ts_ms()).arg(t.json()).arg(keys::channel_for(t.ticker()));
        }
        let mut conn = shared.commands.clone();
        stale += call.invoke_async::<u64>(&mut conn).await.map_err(unavailable)?;
    }
    Ok(stale)
}

/// Publishes `ticks` through the script (cache first, then the channel, per tick, atomically).
pub(crate) async fn publish(shared: &Shared, ticks: Vec<Tick>) -> Result<(), BrokerError> {
    let now = Instant::now();
    shared.held.lock().admit(&ticks, shared, now)?;
    let ticks: Vec<SharedTick> = ticks.into_iter().map(Arc::new).collect();
    let stale = run_script(shared, "publish", &ticks).await?;
    // Recorded only once Redis took them: a publish that failed takes no slot.
    let mut held = shared.held.lock();
    for t in &ticks {
        held.record(t, now, false);
    }
    drop(held);
    shared.metrics.updates_stale.inc_by(stale);
    shared.metrics.updates_published.inc_by(ticks.len() as u64 - stale);
    Ok(())
}

/// After a reconnect, once every wanted ticker is subscribed again: restore the cache from what
/// this node holds, then give the engine whatever changed while the node was not listening.
/// False when a step still failed after its retries (the cluster subscriber tries again later:
/// a restarted cluster master refuses writes for a few seconds, `CLUSTERDOWN`).
pub(crate) async fn after_reconnect(shared: &Shared) -> bool {
    let mut complete = true;
    let ours: Vec<SharedTick> = shared.held.lock().entries.values().map(|e| Arc::clone(&e.tick)).collect();
    if let Err(e) = retried(|| run_script(shared, "restore", &ours)).await {
        tracing::warn!(error = %e, "redis: cannot restore the last-value cache");
        complete = false;
    }
    let wanted = shared.wanted();
    let mut changed: Vec<SharedTick> = Vec::new();
    for batch in wanted.chunks(BATCH) {
        let values = retried(|| async { shared.read_cache(batch).await.map_err(unavailable) }).await;
        let Ok(values) = values else {
            complete = false;
            continue;
        };
        let mut held = shared.held.lock();
        for (&t, v) in batch.iter().zip(values) {
            let Some(tick) = v.and_then(|v| wire::decode_cached_price(t, &v, &shared.config.bounds)) else {
                continue;
            };
            let seen = held.entries.get(&t).and_then(|e| e.delivered_ts);
            if seen.is_none_or(|ts| tick.ts_ms() > ts) {
                let tick = Arc::new(tick);
                held.delivered(&tick, shared.config.max_symbols);
                changed.push(tick);
            }
        }
    }
    if !changed.is_empty()
        && let Some(sink) = shared.fanout.sink()
    {
        tracing::info!(
            shard = shared.index,
            tickers = changed.len(),
            "redis: prices changed while disconnected; sending snapshots"
        );
        sink.resync(&changed);
    }
    complete
}
