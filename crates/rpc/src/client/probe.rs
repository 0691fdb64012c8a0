//! Which engines are up: the prober that pings each one, the mark a call's outcome leaves,
//! and the readiness that `/healthz` reports (`no_engine` while none is up).
//!
//! The up/down flags feed [`super::placement`] (reachable engines are tried first) and are
//! set by [`super::call`] after every call; nothing here decides where a call goes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::call::request;
use super::{Inner, RemoteEngine};
use crate::pb;

impl RemoteEngine {
    /// Pings every engine once (so readiness is known before serving), then keeps probing on
    /// `tracker` until `shutdown`.
    pub async fn start_prober(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        self.inner.probe_all().await;
        let inner = Arc::clone(&self.inner);
        let guard = inner.metrics.task("engine_prober");
        tracker.spawn(async move {
            let _guard = guard;
            let mut tick = tokio::time::interval(inner.config.probe_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => inner.probe_all().await,
                }
            }
        });
    }

    /// Engines that answered their last probe or call. Zero is what makes `ready()` false.
    pub fn engines_up(&self) -> usize {
        self.inner.up_count()
    }
}

impl Inner {
    /// Records whether engine `idx` answered; a change is logged and updates `engines_up`.
    pub(super) fn mark(&self, idx: usize, up: bool) {
        if up {
            self.engines[idx].refused.store(false, Ordering::Relaxed);
        }
        let was = self.engines[idx].up.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!(engine = %self.engines[idx].uri, "engine reachable");
            } else {
                tracing::warn!(engine = %self.engines[idx].uri, "engine unreachable");
            }
            self.metrics.engines_up.set(self.up_count() as i64);
        }
    }

    pub(super) fn up_count(&self) -> usize {
        self.engines.iter().filter(|e| e.up.load(Ordering::Relaxed)).count()
    }

    /// Every engine's flag, for [`super::placement`].
    pub(super) fn up_flags(&self) -> Vec<bool> {
        self.engines.iter().map(|e| e.up.load(Ordering::Relaxed)).collect()
    }

    /// Pings every engine at once, each within `connect_timeout`. An engine that answers but
    /// is not ready (draining) counts as down, like one that does not answer.
    async fn probe_all(&self) {
        let probes = self.engines.iter().enumerate().map(|(idx, e)| {
            let mut client = e.channels[0].clone();
            let timeout = self.config.connect_timeout;
            async move {
                let answer =
                    tokio::time::timeout(timeout, client.ping(request(pb::PingRequest {}, timeout))).await;
                let refused = match &answer {
                    Ok(Err(status)) if status.code() == tonic::Code::Unauthenticated => Some(status.clone()),
                    _ => None,
                };
                (idx, answer.is_ok_and(|r| r.is_ok()), refused)
            }
        });
        for (idx, ok, refused) in futures::future::join_all(probes).await {
            if let Some(status) = refused {
                self.refused(idx, &status);
            }
            self.mark(idx, ok);
        }
    }

    /// An engine answered `Unauthenticated`: this gateway's cluster token or client
    /// certificate is wrong. Logged as an error once per engine until it accepts us again
    /// (the prober would otherwise repeat it every interval); the engine counts as down.
    pub(super) fn refused(&self, idx: usize, status: &tonic::Status) {
        let engine = &self.engines[idx];
        if !engine.refused.swap(true, Ordering::Relaxed) {
            tracing::error!(
                engine = %engine.uri,
                reason = status.message(),
                "engine refused this gateway's credentials (check --cluster-token-file and --grpc-tls-*)"
            );
        }
        self.mark(idx, false);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tickstream_api::MonitoringService;
    use tickstream_telemetry::Metrics;

    use super::*;
    use crate::client::RemoteConfig;
    use crate::client::testing::{dead_uri, engine_server};

    #[tokio::test]
    async fn the_prober_tells_reachable_engines_from_the_others() {
        let stop = CancellationToken::new();
        let (live, _engine) = engine_server(stop.clone()).await;
        let live = format!("http://{live}");
        let dead = dead_uri().await;
        let metrics = Metrics::new();
        let config =
            RemoteConfig { probe_interval: Duration::from_millis(20), ..RemoteConfig::new(vec![dead, live]) };
        let remote = RemoteEngine::new(config, Arc::clone(&metrics)).expect("valid settings");
        assert!(!remote.ready(), "nothing is known before the first probe");

        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        remote.start_prober(&tracker, shutdown.clone()).await;
        // The first round is done before `start_prober` returns.
        assert_eq!(remote.engines_up(), 1);
        assert_eq!(remote.inner.up_flags(), vec![false, true]);
        assert_eq!(metrics.engines_up.get(), 1);
        assert!(remote.ready());

        // The engine goes away: a later round marks it down, and the gateway is not ready.
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), async {
            while remote.ready() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the stopped engine is marked down");
        assert_eq!(metrics.engines_up.get(), 0);

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.expect("the prober stops");
    }

    #[tokio::test]
    async fn a_mark_changes_the_gauge_only_on_a_change() {
        let metrics = Metrics::new();
        let config = RemoteConfig::new(vec!["http://127.0.0.1:1".into(), "http://127.0.0.1:2".into()]);
        let remote = RemoteEngine::new(config, Arc::clone(&metrics)).expect("valid settings");
        remote.inner.mark(1, true);
        assert_eq!((remote.engines_up(), metrics.engines_up.get()), (1, 1));
        // Someone else set the gauge: an unchanged mark leaves it alone.
        metrics.engines_up.set(7);
        remote.inner.mark(1, true);
        assert_eq!(metrics.engines_up.get(), 7);
        remote.inner.mark(0, true);
        assert_eq!((remote.engines_up(), metrics.engines_up.get()), (2, 2));
        remote.inner.mark(1, false);
        assert_eq!((remote.engines_up(), metrics.engines_up.get()), (1, 1));
    }
}
