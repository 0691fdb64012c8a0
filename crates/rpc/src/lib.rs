//! gRPC for several nodes: `RealTimePriceMonitoringService` (`crates/proto/proto/tickstream.proto`).
//!
//! - [`EngineService`] serves any [`MonitoringService`] (the engine) over gRPC;
//! - [`RemoteEngine`] is a [`MonitoringService`] backed by one or more remote engines, with
//!   failover: the gateway uses it exactly as it uses the in-process engine, so REST, WebSocket
//!   contract, close codes and metrics are the same on every role.
//!
//! - [`security`]: mutual TLS and the cluster token, on both sides;
//! - `link`: the engine link, many sessions over one `Link` call per connection, with
//!   per-session credit so conflation stays on the engine.
//!
//! Neither side knows the other's internals: the proto is the contract, and this crate only
//! translates between it and `tickstream-api`.

mod client;
mod convert;
mod link;
pub mod security;
mod server;

/// The generated protobuf and tonic code (`tickstream-proto`), under its old name.
pub use tickstream_proto as pb;

pub use client::{RemoteConfig, RemoteConfigError, RemoteEngine, RemoteUpdates};
pub use security::{ClientSecurity, ClusterToken, ServerSecurity, TokenError};
pub use server::{EngineService, GrpcServerConfig, serve};
pub use tickstream_api::MonitoringService;
