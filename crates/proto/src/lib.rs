//! The `tickstream.v1` wire schema (`proto/tickstream.proto`) and the Rust generated from it:
//! prost messages and tonic's client and server stubs for `RealTimePriceMonitoringService`.
//!
//! It is a crate of its own, at the bottom of the graph, because more than one transport speaks
//! these messages: `tickstream-rpc` (gRPC between gateway and engine) and anything else that
//! wants the same bytes (for example a binary WebSocket encoding in the gateway) without
//! importing the gRPC client and server logic. It holds no logic: only the schema.

#![allow(clippy::all, missing_debug_implementations, rust_2018_idioms)]

tonic::include_proto!("tickstream.v1");
