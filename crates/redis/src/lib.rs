//! Redis Pub/Sub broker and session store: what lets several nodes share the load.
//!
//! Sits above `tickstream-broker` (it implements that crate's [`Broker`] and [`SessionStore`]
//! traits) and is linked only by the roles that talk to Redis (the `tickstream` binary), so the
//! engine, gateway, feed and load generator never compile a Redis client.
//!
//! Per node there are exactly two Redis connections, whatever the number of tickers:
//! - one Pub/Sub connection multiplexing every ticker this node watches plus the control
//!   channel, owned by one task (`subscriber`) that reads messages and carries out the
//!   subscription plan of `reconcile`;
//! - one multiplexed command connection (publishes, the last-value cache, session records).
//!
//! `subscribe`/`unsubscribe` only record intent and wake the task, so the engine never waits on
//! Redis while holding its locks. An unsubscribe lingers (`unsubscribe_linger`) before it is
//! sent, so a ticker whose last watcher leaves and comes back costs nothing.
//!
//! Nothing depends on Redis remembering: after a reconnect the task re-subscribes everything
//! from the node's own set (in batches) and asks the engine to re-write its session records.
//!
//! The contract for external producers (channel names, payloads) is in the README, in [`keys`]
//! and in [`wire`].
//!
//! Modules, bottom up: [`keys`] (names) and [`wire`] (payloads, their bounds and signatures) →
//! `reconcile` (pure subscription plan) → `prices` (the compare-`ts` publish script, the node's
//! bounded price record, restore after a restart) → `broker` (the [`Broker`] impl and shared
//! state), `subscriber` (the Pub/Sub connection loop), `store` (the [`SessionStore`] impl).
//!
//! [`Broker`]: tickstream_broker::Broker
//! [`SessionStore`]: tickstream_broker::SessionStore

mod broker;
mod config;
pub mod keys;
mod prices;
mod reconcile;
mod secret;
mod store;
mod subscriber;
pub mod wire;

pub use broker::RedisBroker;
pub use config::RedisConfig;
pub use keys::channel_for;
pub use secret::{RedisTls, redact_url};
pub use wire::{Bounds, ControlAuth};
