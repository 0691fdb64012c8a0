//! The REST routes end to end (router, extractors, validation, engine) on arbitrary bodies: no
//! panic, and every answer is a documented status with the JSON error shape.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig};
use tickstream_gateway::{Gateway, GatewayConfig};
use tickstream_telemetry::Metrics;
use tower::ServiceExt;

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let metrics = Metrics::new();
        let broker = Arc::new(InMemoryBroker::new(1000, metrics.clone()));
        let engine = Engine::new(EngineConfig::default(), broker, metrics.clone());
        let gateway = Gateway::new(
            Arc::new(engine),
            metrics,
            GatewayConfig::default(),
            tokio_util::sync::CancellationToken::new(),
        )
        .expect("the default configuration is valid");
        Fixture { rt, router: gateway.router() }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (route, body) = match data.split_first() {
        Some((selector, rest)) => (*selector % 2, rest.to_vec()),
        None => return,
    };
    let path = if route == 0 { "/api/v1/sessions" } else { "/api/v1/prices" };
    let req = Request::post(path).header("content-type", "application/json").body(Body::from(body)).unwrap();
    let resp = f.rt.block_on(f.router.clone().oneshot(req)).unwrap();
    let status = resp.status();
    assert!(
        [
            StatusCode::CREATED,
            StatusCode::ACCEPTED,
            StatusCode::BAD_REQUEST,
            StatusCode::PAYLOAD_TOO_LARGE,
            StatusCode::SERVICE_UNAVAILABLE
        ]
        .contains(&status),
        "unexpected status {status}"
    );
    if !status.is_success() {
        let bytes = f.rt.block_on(axum::body::to_bytes(resp.into_body(), 1 << 20)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string());
    }
});
