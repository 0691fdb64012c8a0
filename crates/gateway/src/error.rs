//! HTTP errors: always `{"error":{"code":"<snake_case>","message":"<human text>"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tickstream_api::{ErrorCode, ServiceError, TickError, TickerError};

/// An error answer of the REST API; its status follows from its code ([`status_of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status: status_of(code), code, message: message.into() }
    }

    /// The same as [`ApiError::new`], for the many 400s (reads better at the call site).
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        debug_assert_eq!(status_of(code), StatusCode::BAD_REQUEST);
        Self::new(code, message)
    }

    pub fn not_found_route() -> Self {
        Self::new(ErrorCode::NotFound, "Route not found")
    }

    pub fn session_not_found() -> Self {
        Self::from(ServiceError::SessionNotFound)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<TickerError> for ApiError {
    fn from(e: TickerError) -> Self {
        Self::bad_request(ErrorCode::InvalidTicker, e.to_string())
    }
}

impl From<TickError> for ApiError {
    fn from(e: TickError) -> Self {
        Self::bad_request(e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code.as_str(), "message": self.message } });
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
        C::InvalidTs | C::InvalidQuote | C::CrossedQuote | C::InvalidStatus => StatusCode::BAD_REQUEST,
        C::NoPrice => StatusCode::CONFLICT,
        C::Unauthorized => StatusCode::UNAUTHORIZED,
        C::Forbidden | C::OriginNotAllowed => StatusCode::FORBIDDEN,
        C::RateLimited => StatusCode::TOO_MANY_REQUESTS,
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
