//! What differs on a Redis Cluster (`redis+cluster://`) for prices: the newest-wins script over
//! per-ticker keys, run per slot, and the symbol scan over every master.
//!
//! A cluster script may only touch keys of one slot, and `SPUBLISH` from a script only channels
//! of that slot. So a ticker's cache key `tickstream:last:{T}` and channel `tickstream:px:{T}`
//! share the hash tag `{T}` ([`crate::keys`]), and a publish is split by slot: one script call
//! per slot (almost always one ticker: 500 tickers fill ≈ 500 of the 16,384 slots), all of them
//! in flight at once on the multiplexed cluster connection. Each call is atomic for its tickers,
//! which is all newest-wins needs (the rule is per ticker).
//!
//! Called by `prices` (the script) and `shard` (symbols) when the shard is a cluster.

use std::collections::HashMap;

use futures::StreamExt;
use redis::Value;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tickstream_api::{SharedTick, Ticker};
use tickstream_broker::BrokerError;

use crate::config::{BATCH, MAX_SYMBOL_SCAN};
use crate::conn::Commands;
use crate::keys;
use crate::shard::{Shared, unavailable};

/// The cluster form of [`crate::prices::PUBLISH_SCRIPT`]: `KEYS` = the ticks' cache keys (one
/// slot); `ARGV[1]` = `publish` or `restore`, then per tick: ts, JSON, channel (same slot).
/// Returns how many ticks were older than the cached one; same rules as the shard script.
pub(crate) const CLUSTER_PUBLISH_SCRIPT: &str = r"
local publish = ARGV[1] == 'publish'
local stale = 0
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 3
  local ts, json, channel = tonumber(ARGV[a]), ARGV[a + 1], ARGV[a + 2]
  local held = nil
  local cur = redis.call('GET', KEYS[i])
  if cur then
    local ok, v = pcall(cjson.decode, cur)
    if ok and type(v) == 'table' and type(v.ts) == 'number' then held = v.ts end
  end
  if held and (held > ts or (not publish and held == ts)) then
    if publish then stale = stale + 1 end
  else
    redis.call('SET', KEYS[i], json)
    if publish then redis.call('SPUBLISH', channel, json) end
  end
end
return stale
";

/// Script calls in flight at once per publish (each is one slot's tickers).
const IN_FLIGHT: usize = 64;

static SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(CLUSTER_PUBLISH_SCRIPT));

/// `ticks` grouped by slot, each group at most `BATCH` long.
fn by_slot(ticks: &[SharedTick]) -> Vec<Vec<&SharedTick>> {
    let mut slots: HashMap<u16, Vec<&SharedTick>> = HashMap::new();
    for t in ticks {
        slots.entry(keys::ticker_slot(t.ticker())).or_default().push(t);
    }
    slots.into_values().flat_map(|g| g.chunks(BATCH).map(<[_]>::to_vec).collect::<Vec<_>>()).collect()
}

/// Runs the script over `ticks`, one call per slot; returns how many were stale. Every slot is
/// tried; the first failure (a master down) is returned after the others are done.
pub(crate) async fn run_script(
    shared: &Shared,
    mode: &str,
    ticks: &[SharedTick],
) -> Result<u64, BrokerError> {
    let calls = by_slot(ticks).into_iter().map(|group| {
        let mut call = SCRIPT.prepare_invoke();
        call.arg(mode);
        for t in group {
            call.key(keys::cluster_last_key(t.ticker()))
                .arg(t.ts_ms())
                .arg(t.json())
                .arg(keys::cluster_channel_for(t.ticker()));
        }
        let mut conn = shared.conn();
        async move { call.invoke_async::<u64>(&mut conn).await }
    });
    // Collected first: a lazy iterator of borrowing futures inside `buffer_unordered` makes
    // the caller's future not provably `Send`.
    let calls: Vec<_> = calls.collect();
    let results: Vec<_> = futures::stream::iter(calls).buffer_unordered(IN_FLIGHT).collect().await;
    let mut stale = 0;
    let mut failed = None;
    for r in results {
        match r {
            Ok(n) => stale += n,
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    failed.map_or(Ok(stale), |e| Err(unavailable(e)))
}

/// The masters of the cluster (host, port), from `CLUSTER SLOTS`.
async fn masters(
    conn: &mut redis::cluster_async::ClusterConnection,
) -> redis::RedisResult<Vec<(String, u16)>> {
    let reply = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let mut out: Vec<(String, u16)> = Vec::new();
    let Value::Array(ranges) = reply else { return Ok(out) };
    for range in ranges {
        // [start, end, [host, port, id, …], replicas…]
        let Value::Array(range) = range else { continue };
        let Some(Value::Array(master)) = range.get(2) else { continue };
        let host: Option<String> = master.first().and_then(|v| redis::from_redis_value_ref(v).ok());
        let port: Option<u16> = master.get(1).and_then(|v| redis::from_redis_value_ref(v).ok());
        if let (Some(host), Some(port)) = (host, port)
            && !out.iter().any(|(h, p)| *h == host && *p == port)
        {
            out.push((host, port));
        }
    }
    Ok(out)
}

/// The symbols of the cluster's last-value keys: `SCAN … MATCH tickstream:last:{*` on every
/// master, at most `MAX_SYMBOL_SCAN` keys read in all.
pub(crate) async fn symbols(shared: &Shared) -> Vec<Ticker> {
    let Commands::Cluster(mut conn) = shared.conn() else { return Vec::new() };
    let masters = match masters(&mut conn).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "redis: cannot read the cluster's masters");
            return Vec::new();
        }
    };
    let pattern = format!("{}{{*", keys::CLUSTER_LAST_PREFIX);
    let mut all: Vec<Ticker> = Vec::new();
    let mut scanned = 0;
    for (host, port) in masters {
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(BATCH);
            let route =
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port });
            let page = conn.route_command(cmd, route).await.ok();
            let Some((next, found)) =
                page.and_then(|v| redis::from_redis_value::<(u64, Vec<String>)>(v).ok())
            else {
                break;
            };
            scanned += found.len();
            all.extend(
                found
                    .iter()
                    .filter_map(|k| keys::cluster_tag(k, keys::CLUSTER_LAST_PREFIX))
                    .filter_map(|t| Ticker::parse(t).ok()),
            );
            cursor = next;
            if cursor == 0 || scanned >= MAX_SYMBOL_SCAN {
                break;
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tickstream_api::Tick;

    use super::*;

    #[test]
    fn a_publish_is_split_by_slot_and_bounded() {
        let tick = |s: &str| Arc::new(Tick::new(Ticker::parse(s).unwrap(), 1.0, 1).unwrap());
        let mut ticks: Vec<SharedTick> = ["AAPL", "MSFT", "AAPL"].iter().map(|s| tick(s)).collect();
        let groups = by_slot(&ticks);
        assert_eq!(groups.len(), 2, "two tickers in two slots");
        for g in &groups {
            let slot = keys::ticker_slot(g[0].ticker());
            assert!(g.iter().all(|t| keys::ticker_slot(t.ticker()) == slot));
        }
        ticks = (0..BATCH + 1).map(|_| tick("AAPL")).collect();
        let sizes: Vec<usize> = by_slot(&ticks).iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), BATCH + 1);
        assert!(sizes.iter().all(|&n| n <= BATCH));
    }
}
