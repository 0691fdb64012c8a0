//! Session records shared between engines.
//!
//! An engine keeps the sessions it serves in memory (their conflation maps and streams cannot
//! live anywhere else); the store holds just enough to re-create one on another engine: its
//! tickers, rate cap and creation time. Records expire unless refreshed, so a dead engine's
//! sessions disappear on their own, and every engine re-writes the records it serves after the
//! store comes back empty (a Redis restart without persistence).
//!
//! Only the contract lives here; the Redis impl and the stored JSON form of a record are in
//! `tickstream-redis` (`wire::encode_session` / `wire::decode_session`).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tickstream_api::{SessionId, SessionState, Ticker};

use crate::BrokerError;

/// What another engine needs to serve a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub tickers: Vec<Ticker>,
    pub max_rate_hz: Option<f64>,
    pub created_at_ms: u64,
    /// As last written by the engine serving it (a hint for `GET /api/v1/sessions/{id}` on a
    /// node that does not hold the session).
    pub state: SessionState,
    /// The `sub` that created the session (`None` with auth off, and in records written before
    /// owners existed).
    pub owner: Option<String>,
}

/// Told about other engines' actions on sessions; called from the store's reader task, so it
/// must not block.
pub trait ClusterListener: Send + Sync + 'static {
    /// Another engine ended the session (deleted through its API): end the local copy.
    fn session_ended(&self, id: SessionId);
    /// Another engine attached a stream to the session: the local copy, if any, is replaced.
    fn session_attached(&self, id: SessionId);
    /// The store was unreachable and is back, possibly empty: re-write every record served here.
    fn reconnected(&self);
}

/// Shared session records. Every method is one round trip (or one pipeline).
pub trait SessionStore: Send + Sync + 'static {
    /// Connects the node's listener (once, at start).
    fn listen(&self, listener: Arc<dyn ClusterListener>);

    /// Writes records, each expiring after its own time to live unless refreshed.
    fn put(&self, records: Vec<(SessionRecord, Duration)>) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Replaces a record only if it still exists — with a new time to live, or keeping its
    /// expiry when `ttl` is `None`. False if it is gone (deleted or expired meanwhile).
    fn replace(
        &self,
        record: SessionRecord,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<bool, BrokerError>>;

    /// Reads a record.
    fn get(&self, id: SessionId) -> BoxFuture<'_, Result<Option<SessionRecord>, BrokerError>>;

    /// Extends the expiry of records (sessions streaming on this node).
    fn touch(&self, ids: Vec<SessionId>, ttl: Duration) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Deletes a record and tells every other engine to end its copy. True if it existed.
    fn remove(&self, id: SessionId) -> BoxFuture<'_, Result<bool, BrokerError>>;

    /// Tells every other engine that this one now streams the session.
    fn announce_attached(&self, id: SessionId) -> BoxFuture<'_, Result<(), BrokerError>>;
}
