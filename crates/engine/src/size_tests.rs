//! What one session costs the engine, pinned: every idle connection in `serve` carries one
//! `Session` (behind an `Arc`) and one `Updates` (inline in its connection task), so a field
//! added to either shows up in `scripts/bench idle-memory` ten thousand times over. These bounds
//! are the sizes in the test profile (release is the same or smaller); raise one only with a
//! measurement of what the field buys (docs/benchmarks.md, "Memory per connection, again").

use std::mem::size_of;

use crate::Updates;
use crate::session::{Session, StreamState};

/// An `Arc<Session>` is its 16-byte header plus the session. jemalloc (the binary's allocator)
/// serves it from its 256 B size class at up to 240 B of session: 216 B before the direct
/// writer and its `parked` flag, in the same class (it took 320 B with the snapshot and status
/// maps inline and the owner a `String`).
#[test]
fn a_session_fits_its_chunk() {
    assert!(size_of::<StreamState>() <= 128, "StreamState is {} B", size_of::<StreamState>());
    assert!(size_of::<Session>() <= 240, "Session is {} B", size_of::<Session>());
}

#[test]
fn an_update_stream_stays_small() {
    assert!(size_of::<Updates>() <= 72, "Updates is {} B", size_of::<Updates>());
}
