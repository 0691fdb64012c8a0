//! The node's Pub/Sub connection loop: connect, subscribe what the plan says, read and dispatch
//! messages, ping when idle, and start over with backoff when the connection drops.
//!
//! One task per shard ([`run`]), spawned by `RedisBroker::start`. It never blocks on the
//! engine: prices go to the fan-out pool (`fanout.rs`, one short lock, never a wait), control
//! messages (home shard only) to the listener, which only enqueues. What to (un)subscribe is
//! decided by `reconcile.rs`; this module only carries it out, in batches.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tickstream_api::{Backoff, SessionId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{BACKOFF_MAX, BACKOFF_MIN, BATCH, PING_EVERY};
use crate::keys::{self, channel_for};
use crate::prices;
use crate::shard::Shared;
use crate::wire::{self, Incoming};

/// A shard's Pub/Sub connection: connect, subscribe everything wanted, read and reconcile until
/// the connection drops, then start over with backoff.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut connected_before = false;
    loop {
        let outcome = match connect(&shared, &shutdown).await {
            Err(Outcome::Shutdown) => return,
            Err(Outcome::Lost(why)) => Outcome::Lost(why),
            Ok((mut sink, mut stream)) => {
                backoff.reset();
                if connected_before {
                    tracing::info!(
                        shard = shared.index,
                        "redis: subscriber reconnected; restoring subscriptions and sessions"
                    );
                    // Set on the home shard only: the session records live there.
                    if let Some(listener) = shared.listener.get() {
                        listener.reconnected();
                    }
                }
                let reconnected = connected_before;
                connected_before = true;
                shared.connected(reconnected);
                serve_connection(&shared, reconnected, &mut sink, &mut stream, &shutdown).await
            }
        };
        // Whatever Redis knew about this connection is gone with it.
        shared.connection_lost();
        match outcome {
            Outcome::Shutdown => return,
            Outcome::Lost(why) => {
                let pause = backoff.next_delay();
                tracing::warn!(shard = shared.index, error = %why, retry_in = ?pause,
                    "redis: subscriber disconnected; reconnecting");
                if !sleep_or_shutdown(pause, &shutdown).await {
                    return;
                }
            }
        }
    }
}

enum Outcome {
    Shutdown,
    Lost(String),
}

/// Runs one Redis command of the subscriber within the command timeout, giving way to shutdown.
async fn bounded<T>(
    shared: &Shared,
    shutdown: &CancellationToken,
    what: &str,
    op: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Outcome> {
    tokio::select! {
        () = shutdown.cancelled() => Err(Outcome::Shutdown),
        r = tokio::time::timeout(shared.config.command_timeout, op) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Outcome::Lost(format!("{what}: {e}"))),
            Err(_) => Err(Outcome::Lost(format!("{what}: timed out"))),
        },
    }
}

async fn connect(
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(PubSubSink, PubSubStream), Outcome> {
    // Always set on a shard of `redis-server`s, the only kind this loop serves (a cluster's is
    // `cluster_sub.rs`).
    let Some(client) = &shared.client else { return Err(Outcome::Lost("not a single Redis".into())) };
    let pubsub = bounded(shared, shutdown, "connect", client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    if shared.is_home() {
        bounded(shared, shutdown, "subscribe control", sink.subscribe(keys::CONTROL_CHANNEL)).await?;
    }
    Ok((sink, stream))
}

async fn serve_connection(
    shared: &Shared,
    reconnected: bool,
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut reconcile = true;
    // Set until the first plan of a re-established connection is carried out.
    let mut resync = reconnected;
    let mut next_linger: Option<Instant> = None;
    let mut last_heard = Instant::now();
    loop {
        // Until there is nothing left to send: changes that arrive while a batch is in flight are
        // picked up by the next plan.
        while reconcile {
            let plan = shared.plan();
            next_linger = plan.next_check;
            reconcile = !plan.is_idle();
            for batch in plan.unsubscribe.chunks(BATCH) {
                let channels: Vec<String> = batch.iter().map(|&t| channel_for(t)).collect();
                if let Err(outcome) =
                    bounded(shared, shutdown, "unsubscribe", sink.unsubscribe(&channels)).await
                {
                    return outcome;
                }
            }
            for batch in plan.subscribe.chunks(BATCH) {
                let channels: Vec<String> = batch.iter().map(|&t| channel_for(t)).collect();
                if let Err(outcome) = bounded(shared, shutdown, "subscribe", sink.subscribe(&channels)).await
                {
                    return outcome;
                }
                shared.confirmed(batch);
            }
            if reconcile {
                last_heard = Instant::now();
            }
        }
        if std::mem::take(&mut resync) {
            // Every wanted ticker is subscribed again: restore the cache and snapshot what
            // changed meanwhile. Bounded, so a slow Redis cannot stall the read loop for long.
            let restore =
                tokio::time::timeout(shared.config.command_timeout * 4, prices::after_reconnect(shared));
            tokio::select! {
                () = shutdown.cancelled() => return Outcome::Shutdown,
                r = restore => if r.is_err() {
                    tracing::warn!(shard = shared.index, "redis: restoring prices after the reconnect timed out");
                },
            }
            last_heard = Instant::now();
        }
        let linger = async {
            match next_linger {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Outcome::Shutdown,
            () = shared.changed.notified() => reconcile = true,
            () = linger => reconcile = true,
            () = tokio::time::sleep_until(last_heard + PING_EVERY) => {
                if let Err(outcome) = bounded(shared, shutdown, "ping", sink.ping::<redis::Value>()).await {
                    return outcome;
                }
                last_heard = Instant::now();
            }
            msg = stream.next() => {
                let Some(msg) = msg else { return Outcome::Lost("connection closed".into()) };
                last_heard = Instant::now();
                handle(shared, &msg);
                // Drain what is already buffered before looking at anything else: one wake-up
                // per burst, not per message.
                for _ in 0..1024 {
                    match futures::FutureExt::now_or_never(stream.next()) {
                        Some(Some(msg)) => handle(shared, &msg),
                        Some(None) => return Outcome::Lost("connection closed".into()),
                        None => break,
                    }
                }
            }
        }
    }
}

/// Dispatches one message: prices to the fan-out pool, other nodes' control messages to the
/// listener.
fn handle(shared: &Shared, msg: &redis::Msg) {
    dispatch(shared, msg.get_channel_name(), msg.get_payload_bytes());
}

/// [`handle`] for a message already taken apart (the cluster subscriber's pushes too).
pub(crate) fn dispatch(shared: &Shared, channel: &str, payload: &[u8]) {
    let (config, counted) = (&shared.config, &shared.counted);
    match wire::decode_message(channel, payload, &config.control_auth, &config.bounds) {
        Incoming::Price(tick) => {
            counted.prices.inc();
            counted.shard_prices.inc();
            let tick = Arc::new(tick);
            // Recorded so a reconnect knows what the engine already has (see `prices.rs`).
            shared.held.lock().delivered(&tick, config.max_symbols);
            // The engine's fan-out (O(watchers)) runs on a worker, not on this read loop.
            shared.fanout.push(&tick);
        }
        Incoming::Control(ctl) => {
            counted.control.inc();
            if ctl.node == shared.node {
                return;
            }
            let Some(listener) = shared.listener.get() else { return };
            if let Some(id) = ctl.ended.as_deref().and_then(SessionId::parse) {
                listener.session_ended(id);
            }
            if let Some(id) = ctl.attached.as_deref().and_then(SessionId::parse) {
                listener.session_attached(id);
            }
        }
        Incoming::Invalid => counted.invalid.inc(),
        Incoming::Other => {}
    }
}

pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}
