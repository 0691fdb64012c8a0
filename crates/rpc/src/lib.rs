//! gRPC for several nodes: `RealTimePriceMonitoringService` (`proto/tickstream.proto`).
//!
//! - [`EngineService`] serves any [`MonitoringService`] (the engine) over gRPC;
//! - [`RemoteEngine`] is a [`MonitoringService`] backed by one or more remote engines, with
//!   failover: the gateway uses it exactly as it uses the in-process engine, so REST, WebSocket
//!   contract, close codes and metrics are the same on every role.
//!
//! - [`security`]: mutual TLS and the cluster token, on both sides.
//!
//! Neither side knows the other's internals: the proto is the contract, and this crate only
//! translates between it and `tickstream-api`.

mod client;
mod convert;
pub mod security;
mod server;

/// Generated protobuf and tonic code.
#[allow(clippy::all, missing_debug_implementations, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("tickstream.v1");
}

pub use client::{RemoteConfig, RemoteConfigError, RemoteEngine, RemoteUpdates};
pub use security::{ClientSecurity, ClusterToken, ServerSecurity, TokenError};
pub use server::{EngineService, GrpcServerConfig, serve};
pub use tickstream_api::MonitoringService;
