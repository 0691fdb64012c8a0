//! The operator's endpoints every role serves: `/metrics` (Prometheus text) and `/healthz`.
//!
//! One handler for all of them, so the engine and feed roles (which serve only these, on
//! `--metrics-listen`) and the edge (which serves them beside the API) cannot drift apart.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tickstream_telemetry::Metrics;

/// The `/metrics` answer: the node's registry in Prometheus' text format.
pub fn metrics_response(metrics: &Metrics) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render()).into_response()
}

/// The `/healthz` answer of a live node (the edge adds its own `shutting_down` / `no_engine`).
pub fn healthy() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({ "status": "ok" }))).into_response()
}

/// `/metrics` and `/healthz` alone, for roles without the edge (engine, feed).
pub fn ops_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move { metrics_response(&metrics) }
            }),
        )
        .route("/healthz", get(|| async { healthy() }))
}
