//! Redis Pub/Sub broker and session store: what lets several nodes share the load.
//!
//! Sits above `tickstream-broker` (it implements that crate's [`Broker`] and [`SessionStore`]
//! traits) and is linked only by the roles that talk to Redis (the `tickstream` binary), so the
//! engine, gateway, feed and load generator never compile a Redis client.
//!
//! Tickers are spread over one or more Redis *shards* (the `--redis` list) by a stable hash
//! ([`shards`]). Per node and shard there are exactly two Redis connections, whatever the number
//! of tickers:
//! - one Pub/Sub connection multiplexing every ticker of that shard this node watches (plus the
//!   control channel on the home shard, the first URL), owned by one task (`subscriber`) that
//!   reads messages and carries out the subscription plan of `reconcile`;
//! - one multiplexed command connection (publishes, the last-value cache; session records on
//!   the home shard).
//!
//! The read loops only decode: the engine's fan-out runs on the node's `fanout` workers, chosen
//! by ticker hash, through bounded, conflating mailboxes.
//!
//! `subscribe`/`unsubscribe` only record intent and wake the task, so the engine never waits on
//! Redis while holding its locks. An unsubscribe lingers (`unsubscribe_linger`) before it is
//! sent, so a ticker whose last watcher leaves and comes back costs nothing.
//!
//! Nothing depends on Redis remembering: after a reconnect the task re-subscribes everything
//! from the node's own set (in batches) and asks the engine to re-write its session records.
//!
//! On a Redis Cluster (`redis+cluster://` seeds instead of shard URLs) the node has one
//! "shard" that is the whole cluster: names carry hash tags ([`keys`]), prices use sharded
//! Pub/Sub (`SSUBSCRIBE`/`SPUBLISH`, `cluster_sub`), the newest-wins script runs per slot
//! (`cluster`), and the redis crate's cluster client routes commands, follows the slot map and
//! re-subscribes after a master comes back (`conn`).
//!
//! The contract for external producers (channel names, payloads) is in the README, in [`keys`]
//! and in [`wire`].
//!
//! Modules, bottom up: [`keys`] (names), [`shards`] (the shard map) and [`wire`] (payloads,
//! their bounds and signatures) → `reconcile` (pure subscription plan), `fanout` (the worker
//! pool), `conn` (the command connection, single or cluster), `cluster` (the per-slot script
//! and symbol scan) → `prices` (the compare-`ts` publish script, the shard's bounded price record,
//! restore after a restart) → `shard` (one shard's state) → `broker` (the [`Broker`] impl,
//! routing by shard), `subscriber` (the Pub/Sub connection loop of a shard), `store` (the
//! [`SessionStore`] impl, on the home shard).
//!
//! [`Broker`]: tickstream_broker::Broker
//! [`SessionStore`]: tickstream_broker::SessionStore

mod broker;
mod cluster;
mod cluster_sub;
mod config;
mod conn;
mod fanout;
pub mod keys;
mod prices;
mod reconcile;
mod secret;
mod shard;
pub mod shards;
mod store;
mod subscriber;
pub mod wire;

pub use broker::RedisBroker;
pub use config::{
    CLUSTER_SCHEMES, MAX_SHARDS, RedisConfig, RedisConfigError, known_scheme, redact_urls, split_urls,
};
pub use keys::channel_for;
pub use secret::{RedisTls, redact_url};
pub use wire::{Bounds, ControlAuth};
