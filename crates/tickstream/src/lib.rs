//! The `tickstream` binary's library half: command-line arguments and the wiring of each role.
//!
//! - `serve` (all-in-one): broker (in-process, or Redis with `--redis`) → engine (sessions,
//!   fan-out, conflation) → gateway (REST + WebSocket), plus the simulated feed;
//! - `engine`: engine + Redis broker and session store, served over gRPC;
//! - `gateway`: the REST + WebSocket API over remote engines;
//! - `feed`: simulated prices into Redis;
//! - `auth`: the identity flags of the edge roles and `tickstream token`.
//!
//! Integration tests start each role through its `start` exactly as `main` does.

pub mod auth;
pub mod cli;
pub mod config_file;
pub mod engine;
pub mod feed;
pub mod gateway;
pub mod node;
pub mod security;
pub mod serve;
pub mod status_opts;
