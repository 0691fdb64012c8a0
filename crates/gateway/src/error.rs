//! HTTP errors: always `{"error":{"code":"<snake_case>","message":"<human text>"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tickstream_api::{ErrorCode, ServiceError, TickError, TickerError};

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

/// The HTTP status that answers each error code (README "Error codes"). WebSocket-only codes
/// (sent in `error` messages on an open socket) have the status they would have over HTTP.
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode as C;
    match code {
        C::EmptyTickers
        | C::TooManyTickers
        | C::InvalidTicker
        | C::InvalidMaxRate
        | C::InvalidJson
        | C::InvalidRequest
        | C::InvalidBody
        | C::InvalidPrice
        | C::EmptyPrices
        | C::MissingSessionId
        | C::InvalidHandshake
        | C::InvalidMessage
        | C::UnknownType => StatusCode::BAD_REQUEST,
        C::SessionNotFound | C::NotFound => StatusCode::NOT_FOUND,
        C::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        C::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        C::PayloadTooLarge | C::TooManyPrices => StatusCode::PAYLOAD_TOO_LARGE,
        C::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        C::WebsocketUpgradeRequired => StatusCode::UPGRADE_REQUIRED,
        C::SessionLimitReached
        | C::SymbolLimitReached
        | C::TooManyConnections
        | C::ShuttingDown
        | C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}
