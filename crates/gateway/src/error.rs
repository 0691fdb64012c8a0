//! HTTP errors: always `{"error":{"code":"<snake_case>","message":"<human text>"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tickstream_api::{ServiceError, TickError, TickerError};

/// An error answer of the REST API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Route not found")
    }

    pub fn session_not_found() -> Self {
        Self::from(ServiceError::SessionNotFound)
    }
}

/// The error code and status for a service error; the WebSocket `error` message uses the code.
pub fn service_error_code(e: &ServiceError) -> (StatusCode, &'static str) {
    match e {
        ServiceError::SessionNotFound => (StatusCode::NOT_FOUND, "session_not_found"),
        ServiceError::NoTickers => (StatusCode::BAD_REQUEST, "empty_tickers"),
        ServiceError::TooManyTickers { .. } => (StatusCode::BAD_REQUEST, "too_many_tickers"),
        ServiceError::InvalidRate { .. } => (StatusCode::BAD_REQUEST, "invalid_max_rate"),
        ServiceError::SessionLimit { .. } => (StatusCode::SERVICE_UNAVAILABLE, "session_limit_reached"),
        ServiceError::SymbolLimit { .. } => (StatusCode::SERVICE_UNAVAILABLE, "symbol_limit_reached"),
        ServiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (status, code) = service_error_code(&e);
        Self::new(status, code, e.to_string())
    }
}

impl From<TickerError> for ApiError {
    fn from(e: TickerError) -> Self {
        Self::bad_request("invalid_ticker", e.to_string())
    }
}

impl From<TickError> for ApiError {
    fn from(e: TickError) -> Self {
        Self::bad_request("invalid_price", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
