//! The operator's endpoints every role serves: `/metrics` (Prometheus text), `/healthz` (alive)
//! and `/readyz` (ready to take traffic).
//!
//! One set of handlers for all of them, so the engine and feed roles (which serve only these, on
//! `--metrics-listen`) and the edge (which serves them beside the API) cannot drift apart.
//! Readiness is a list of [`Readiness`] checks the binary wires per role (draining, the engine,
//! the broker's connection); this module knows none of them.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tickstream_telemetry::Metrics;
use tokio_util::sync::CancellationToken;

/// The `/metrics` answer: the node's registry in Prometheus' text format.
pub fn metrics_response(metrics: &Metrics) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render()).into_response()
}

/// The `/healthz` answer of a live node (the edge adds its own `shutting_down` / `no_engine`).
pub fn healthy() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({ "status": "ok" }))).into_response()
}

/// Why a node should not be sent traffic now: the `reasons` of a 503 `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// The node is shutting down (SIGTERM received).
    Draining,
    /// The service cannot serve: on a gateway, no engine answers its probe.
    NoEngine,
    /// The broker's subscriber is not connected (Redis down or reconnecting).
    BrokerDisconnected,
}

impl NotReady {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::NoEngine => "no_engine",
            Self::BrokerDisconnected => "broker_disconnected",
        }
    }
}

type Check = Arc<dyn Fn() -> Option<NotReady> + Send + Sync>;

/// What `/readyz` asks: each check answers `Some(reason)` while the node is not ready. Cheap
/// to clone; checks must be cheap too (a flag or an atomic, never I/O: probes come every few
/// seconds from every balancer).
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Check>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("checks", &self.checks.len()).finish()
    }
}

impl Readiness {
    /// Always ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check.
    #[must_use]
    pub fn check(mut self, check: impl Fn() -> Option<NotReady> + Send + Sync + 'static) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Not ready (`draining`) once `shutdown` is cancelled.
    #[must_use]
    pub fn draining(self, shutdown: CancellationToken) -> Self {
        self.check(move || shutdown.is_cancelled().then_some(NotReady::Draining))
    }

    /// These checks, then `other`'s.
    #[must_use]
    pub fn and(mut self, other: &Self) -> Self {
        self.checks.extend(other.checks.iter().cloned());
        self
    }

    /// Every reason the node is not ready now, in check order, without repeats; empty when ready.
    pub fn reasons(&self) -> Vec<NotReady> {
        let mut reasons = Vec::new();
        for reason in self.checks.iter().filter_map(|check| check()) {
            if !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
        reasons
    }

    /// The `/readyz` answer: 200 `{"status":"ready"}`, or 503
    /// `{"status":"not_ready","reasons":[…]}`.
    pub fn response(&self) -> Response {
        let reasons = self.reasons();
        if reasons.is_empty() {
            return (StatusCode::OK, axum::Json(serde_json::json!({ "status": "ready" }))).into_response();
        }
        let reasons: Vec<&str> = reasons.into_iter().map(NotReady::as_str).collect();
        let body = serde_json::json!({ "status": "not_ready", "reasons": reasons });
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
    }
}

/// `/metrics`, `/healthz` and `/readyz` alone, for roles without the edge (engine, feed).
pub fn ops_router(metrics: Arc<Metrics>, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move { metrics_response(&metrics) }
            }),
        )
        .route("/healthz", get(|| async { healthy() }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move { readiness.response() }
            }),
        )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::{Value, json};

    use super::*;

    async fn answer(readiness: &Readiness) -> (StatusCode, Value) {
        let response = readiness.response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&body).expect("JSON"))
    }

    #[tokio::test]
    async fn ready_until_a_check_fails_then_503_with_every_reason() {
        let shutdown = CancellationToken::new();
        let connected = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&connected);
        let readiness = Readiness::new()
            .draining(shutdown.clone())
            .check(move || (!flag.load(Ordering::Relaxed)).then_some(NotReady::BrokerDisconnected));
        assert_eq!(answer(&readiness).await, (StatusCode::OK, json!({"status": "ready"})));

        connected.store(false, Ordering::Relaxed);
        let not_ready = json!({"status": "not_ready", "reasons": ["broker_disconnected"]});
        assert_eq!(answer(&readiness).await, (StatusCode::SERVICE_UNAVAILABLE, not_ready));

        shutdown.cancel();
        let both = json!({"status": "not_ready", "reasons": ["draining", "broker_disconnected"]});
        assert_eq!(answer(&readiness).await, (StatusCode::SERVICE_UNAVAILABLE, both));
    }

    #[tokio::test]
    async fn a_draining_node_is_not_ready() {
        let shutdown = CancellationToken::new();
        let readiness = Readiness::new().draining(shutdown.clone());
        assert!(readiness.reasons().is_empty());
        shutdown.cancel();
        let (status, body) = answer(&readiness).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"status": "not_ready", "reasons": ["draining"]}));
    }

    #[test]
    fn a_reason_given_by_two_checks_is_listed_once() {
        let twice = Readiness::new().check(|| Some(NotReady::NoEngine));
        let twice = twice.clone().and(&twice);
        assert_eq!(twice.reasons(), [NotReady::NoEngine]);
    }
}
