//! The `tickstream` binary's library half: command-line arguments and the wiring of each role.
//!
//! `serve` (all-in-one): in-process broker → engine (sessions, fan-out, conflation) → gateway
//! (REST + WebSocket), plus the simulated feed. Integration tests start it through [`serve::start`]
//! exactly as `main` does.

pub mod cli;
pub mod serve;
