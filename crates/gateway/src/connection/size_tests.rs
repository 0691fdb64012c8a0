//! What one connection's task costs, pinned. A task's state is as large as its largest `await`
//! plus everything that lives across it, and every connection — idle ones included — carries
//! all of it for its whole life, so a field or a nested future added to the loop shows up in
//! `scripts/bench idle-memory` ten thousand times over. The bounds are the sizes in the test
//! profile (release lays futures out the same way or tighter); raise one only with a
//! measurement of what it buys (docs/benchmarks.md, "Memory per connection, again").

use std::mem::size_of;
use std::sync::Arc;

use tickstream_api::{MonitoringService, StartRequest, Ticker};
use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig};
use tickstream_telemetry::Metrics;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::Connection;
use super::test_transport::ReadOnly;
use crate::GatewayConfig;
use crate::encoding::Encoding;

/// The size of the future `f` returns, without calling it.
fn returned<A, B, C, D, E, F>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
    size_of::<F>()
}

/// The connection loop (`Connection::run`): 1,392 B in this profile with the write's timer,
/// shutdown wait and `select!` inline and the message stored twice; 944 B with them boxed
/// while a write is pending (`send`).
#[tokio::test]
async fn the_connection_loop_stays_small() {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(1000, metrics.clone()));
    let engine = Engine::new(EngineConfig::default(), broker, metrics.clone());
    let tickers = vec![Ticker::parse("AAPL").expect("a valid ticker")];
    let req = StartRequest { tickers, max_rate_hz: None, owner: None };
    let id = engine.start_monitoring(req).await.expect("a session").id;
    let mut updates = engine.stream_price_updates(id).await.expect("a stream");
    let connection = Connection {
        service: Arc::new(engine),
        session: id,
        config: Arc::new(GatewayConfig::default()),
        metrics,
        shutdown: CancellationToken::new(),
        auth: None,
        encoding: Encoding::Json,
        direct: None,
    };
    // Never polled: the loop borrows its socket, so the loop's size does not depend on the
    // transport's.
    let mut ws = ReadOnly(futures::stream::empty::<Result<Message, WsError>>());
    let run = connection.run(&mut ws, &mut updates);
    let size = std::mem::size_of_val(&run);
    assert!(size <= 960, "the connection loop's future is {size} B");
}

/// The whole task (`upgrade::connection_task`) with the engine's update stream, as in `serve`:
/// the loop above plus the socket, the stream, the connection and the admission. 1,744 B here
/// (the task it replaced held the loop's extra 448 B and the 64 B WebSocket configuration);
/// 1,792 B with direct writes (the connection's handle on the shared socket, and the transport
/// that is either kind: `direct.rs`).
#[test]
fn the_connection_task_stays_small() {
    let size = returned(crate::upgrade::connection_task::<Engine>);
    assert!(size <= 1_792, "the connection task's future is {size} B");
}
