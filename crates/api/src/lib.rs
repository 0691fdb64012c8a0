//! The vocabulary every tickstream crate speaks, and the contract between the gateway and the engine.
//!
//! Layout:
//! - [`ticker`]: validated ticker symbols ([`Ticker`]), a `Copy` value that never allocates;
//! - [`tick`]: one price update ([`Tick`]) with its JSON encoding computed once, at creation;
//! - [`quote`]: the optional quote fields of a tick ([`Quote`]);
//! - [`status`]: a ticker's status ([`TickerStatus`]) and its changes ([`StatusUpdate`]);
//! - [`session`]: session ids and what a client may learn about a session;
//! - [`service`]: [`MonitoringService`], the seam the gateway calls. The engine implements it
//!   in-process today; a gRPC client (`RealTimePriceMonitoringService`) implements it later, so the
//!   gateway never depends on where the engine runs;
//! - [`mod@universe`]: the simulated ticker universe (shared by the feed and the load generator);
//! - [`error_code`]: every error code a client can receive ([`ErrorCode`]);
//! - [`backoff`], [`duration`], [`config`]: the retry curve, the duration syntax and the config
//!   checks every crate uses.

pub mod backoff;
pub mod config;
pub mod duration;
pub mod error_code;
pub mod quote;
pub mod service;
pub mod session;
pub mod status;
pub mod tick;
pub mod ticker;
pub mod universe;

pub use backoff::Backoff;
pub use config::ConfigError;
pub use duration::{format_duration, parse_duration};
pub use error_code::ErrorCode;
pub use quote::{Quote, QuoteError};
pub use service::{CloseReason, DirectWrite, MonitoringService, ServiceError, SessionEvent, StartRequest};
pub use session::{SessionId, SessionInfo, SessionState};
pub use status::{SharedStatus, StatusUpdate, TickerStatus, TradingStatus};
pub use tick::{SharedTick, Tick, TickError, TsError, TsWindow, now_ms};
pub use ticker::{Ticker, TickerError, normalize_tickers};
pub use universe::universe;
