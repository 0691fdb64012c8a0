//! The broker: where producers publish ticks and engines subscribe to tickers.
//!
//! [`Broker`] is the Pub/Sub seam. [`InMemoryBroker`] is the product's default (one binary,
//! nothing to install); the Redis implementation (crate `tickstream-redis`, which depends on
//! this one, never the reverse) shares the load between nodes. Both follow the same rules:
//! - the engine subscribes *per ticker per node* and is told about ticks through one
//!   [`TickSink`], called from the publish path (in-process) or a fan-out worker fed by the
//!   Pub/Sub read loops (Redis);
//! - `subscribe`/`unsubscribe` never block: they record intent, and a networked broker
//!   reconciles it in the background;
//! - the broker keeps a last-value cache so a new subscriber starts from the latest price.
//!
//! Several nodes also share their sessions: [`SessionStore`] keeps session records where every
//! engine can read them, and tells each engine ([`ClusterListener`]) when another one ends or
//! takes over a session it holds. `tickstream_redis::RedisBroker` is both; the in-memory broker
//! needs no store (its sessions never leave the process). This crate holds only the traits,
//! their types and the in-process broker, so the crates built on it never compile a Redis client.

use std::sync::Arc;

use futures::future::BoxFuture;
use tickstream_api::{SharedTick, Tick, Ticker};

mod memory;
mod store;

pub use memory::{DEFAULT_MAX_SYMBOLS, DEFAULT_SYMBOL_IDLE, InMemoryBroker};
pub use store::{ClusterListener, SessionRecord, SessionStore};

/// Receives every tick for the tickers its node subscribes to.
///
/// Called on the publisher's or the broker reader's task: implementations must not block or do
/// I/O (the engine only enqueues into per-session conflation maps).
pub trait TickSink: Send + Sync + 'static {
    fn deliver(&self, tick: &SharedTick);

    /// Prices that changed while the node could not hear them (a broker reconnect): the engine
    /// sends them to its streaming sessions as a snapshot, as after a failover. By default they
    /// are delivered like live ticks.
    fn resync(&self, ticks: &[SharedTick]) {
        for t in ticks {
            self.deliver(t);
        }
    }
}

/// Broker errors that a publisher must handle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BrokerError {
    /// The last-value cache is full of distinct symbols; a new symbol would grow it unbounded.
    #[error("symbol limit reached ({max} distinct tickers)")]
    SymbolLimit { max: usize },
    /// The broker cannot take the publish now.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// A Pub/Sub broker for ticks. See the module docs for the contract.
pub trait Broker: Send + Sync + 'static {
    /// Connects the node's sink. Ticks published before this are cached but not delivered.
    fn attach(&self, sink: Arc<dyn TickSink>);

    /// Publishes ticks in order; returns once the broker has accepted them.
    fn publish(&self, ticks: Vec<Tick>) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Starts delivering `ticker` to the sink. The caller reference-counts: one call per ticker
    /// per node, on the first watcher.
    fn subscribe(&self, ticker: Ticker);

    /// Stops delivering `ticker`; called when its last watcher leaves.
    fn unsubscribe(&self, ticker: Ticker);

    /// The latest tick of each ticker that has one (the last-value cache).
    fn last_values(&self, tickers: &[Ticker]) -> BoxFuture<'_, Vec<SharedTick>>;

    /// The first `limit` tickers of the last-value cache in alphabetical order: the symbols this
    /// deployment has a price for, so a client can offer them. The cache holds up to the symbol
    /// limit (100,000 by default), hence the bound.
    fn symbols(&self, limit: usize) -> BoxFuture<'_, Vec<Ticker>>;
}
