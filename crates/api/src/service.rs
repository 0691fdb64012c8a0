//! The monitoring service: the only way the gateway talks to the engine.
//!
//! It mirrors the gRPC service `RealTimePriceMonitoringService`: [`MonitoringService::start_monitoring`]
//! is `StartPriceMonitoring`, [`MonitoringService::stream_price_updates`] is `StreamPriceUpdates`, and
//! the rest is what the WebSocket contract needs besides (ending a session, changing its tickers,
//! ingesting prices).

use std::future::Future;

use futures::Stream;

use crate::{SessionId, SessionInfo, SharedStatus, SharedTick, Tick, Ticker, TradingStatus};

/// A request to create a session.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRequest {
    /// Normalised tickers (see [`crate::normalize_tickers`]).
    pub tickers: Vec<Ticker>,
    /// Cap on messages per second for this session's stream.
    pub max_rate_hz: Option<f64>,
    /// The verified `sub` of the caller that creates the session; `None` with auth off. Only the
    /// owner (or an `admin`) may read, delete or stream the session.
    pub owner: Option<String>,
}

/// One item of a session's update stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// Latest known prices: the whole session on attach, or just the newly added tickers after a
    /// ticker change. Always the first event of a stream.
    Snapshot(Vec<SharedTick>),
    /// Every ticker that changed since the previous event, each at most once, latest value.
    Prices(Vec<SharedTick>),
    /// Tickers whose status changed since the previous event, each at most once, latest status.
    /// Right after a snapshot, it gives the status of each snapshotted ticker that is not
    /// `live` (a ticker it leaves out is live), so a client knows every ticker's status from the
    /// snapshot on. Never empty; it comes before the prices of the same moment.
    Status(Vec<SharedStatus>),
    /// The stream is over; the last item.
    Closed(CloseReason),
}

/// Why the engine ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// A newer stream attached to the same session.
    Replaced,
    /// The session was deleted or expired.
    SessionEnded,
    /// The engine is shutting down.
    ShuttingDown,
    /// No engine can serve the stream now (all unreachable); retry later.
    Unavailable,
}

/// Errors of the monitoring service; each variant tells the caller what to answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    #[error("session not found or expired")]
    SessionNotFound,
    #[error("a session needs at least one ticker")]
    NoTickers,
    #[error("too many tickers: at most {max} per session")]
    TooManyTickers { max: usize },
    #[error("max_rate_hz must be a number from {min} to {max}")]
    InvalidRate { min: f64, max: f64 },
    #[error("session limit reached ({max} sessions)")]
    SessionLimit { max: usize },
    #[error("symbol limit reached: this node tracks at most {max} distinct tickers")]
    SymbolLimit { max: usize },
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

/// What the gateway needs from the engine.
///
/// Implementations must be cheap to call concurrently: the gateway calls them from every
/// connection task.
pub trait MonitoringService: Send + Sync + 'static {
    /// A session's update stream. Dropping it detaches the session.
    type Updates: Stream<Item = SessionEvent> + Send + Unpin + 'static;

    /// Creates a session (`StartPriceMonitoring`).
    fn start_monitoring(
        &self,
        req: StartRequest,
    ) -> impl Future<Output = Result<SessionInfo, ServiceError>> + Send;

    /// Describes a live session.
    fn session(&self, id: SessionId) -> impl Future<Output = Result<SessionInfo, ServiceError>> + Send;

    /// Ends a session; its stream, if any, ends with [`CloseReason::SessionEnded`].
    fn end_session(&self, id: SessionId) -> impl Future<Output = Result<(), ServiceError>> + Send;

    /// Attaches a stream to a session (`StreamPriceUpdates`), replacing any stream already
    /// attached (which ends with [`CloseReason::Replaced`]). The first event is a snapshot.
    fn stream_price_updates(
        &self,
        id: SessionId,
    ) -> impl Future<Output = Result<Self::Updates, ServiceError>> + Send;

    /// Adds and removes tickers; returns the session's whole set. Newly added tickers are followed
    /// by a [`SessionEvent::Snapshot`] of them on the attached stream.
    fn update_tickers(
        &self,
        id: SessionId,
        add: Vec<Ticker>,
        remove: Vec<Ticker>,
    ) -> impl Future<Output = Result<Vec<Ticker>, ServiceError>> + Send;

    /// The first `limit` tickers that have a price, in alphabetical order: what a client can offer
    /// to watch (`GET /api/v1/tickers`). Any valid symbol may still be watched.
    fn tickers(&self, limit: usize) -> impl Future<Output = Result<Vec<Ticker>, ServiceError>> + Send;

    /// Publishes prices through the broker, exactly as a feed does.
    fn publish(&self, ticks: Vec<Tick>) -> impl Future<Output = Result<(), ServiceError>> + Send;

    /// Publishes producers' trading statuses: each ticker's latest record again, with the status,
    /// at the current time (never older than the record). Returns the tickers left out because
    /// they have no price yet (a status is part of a ticker's record).
    ///
    /// The default is for services that cannot do it (a remote engine link without the call):
    /// they answer `Unavailable`.
    fn publish_status(
        &self,
        statuses: Vec<(Ticker, TradingStatus)>,
    ) -> impl Future<Output = Result<Vec<Ticker>, ServiceError>> + Send {
        let _ = statuses;
        std::future::ready(Err(ServiceError::Unavailable(
            "this engine link cannot publish statuses; publish them on the broker".into(),
        )))
    }

    /// Whether the service can take requests now (`/healthz`): false when a remote service has
    /// no reachable engine.
    fn ready(&self) -> bool {
        true
    }

    /// Hands the engine the socket's writer, so that a price which finds the stream parked —
    /// its consumer idle, nothing pending — is written to the socket at once by the fan-out,
    /// with no wake-up and no poll of the connection's task (as uWebSockets writes from its
    /// publish loop). Everything else still travels through the stream: snapshots, statuses,
    /// and every price that arrives while a write is in flight, conflated as before.
    ///
    /// The default ignores it. A remote engine does: its link's batches are written by the
    /// socket's task, whose wake-up is what lets them grow (`docs/design.md`, "The engine link").
    fn write_direct(&self, updates: &mut Self::Updates, writer: std::sync::Arc<dyn DirectWrite>) {
        let _ = (updates, writer);
    }
}

/// A socket's writer as the fan-out sees it ([`MonitoringService::write_direct`]).
pub trait DirectWrite: Send + Sync + std::fmt::Debug {
    /// Writes `ticks` as the socket's next data message (`prices`), now and without waiting,
    /// and says so; or writes nothing and returns false (the socket is busy, or full), and the
    /// prices go through the stream as if there were no writer.
    fn write_prices(&self, ticks: &[crate::SharedTick]) -> bool;
}
