//! API errors: one JSON shape for every 4xx/5xx (SPEC §3).

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use crate::schema::FieldError;

/// Everything an API call can answer instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body could not be read as HTTP framed it (a malformed chunk, a connection cut
    /// short): nothing of it is judged.
    #[error("the body could not be read: {0}")]
    MalformedBody(String),
    /// Not `application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// Over `ingest.max_body_bytes`.
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// One or more SPEC §2 rules broken.
    #[error("{} validation error(s); first: {}", .0.len(), first(.0))]
    Validation(Vec<FieldError>),
    /// A status after its call's HANGUP.
    #[error("call {call_id} already hung up; a status after HANGUP is refused")]
    AfterHangup {
        /// Position in the request.
        index: usize,
        /// The call.
        call_id: String,
    },
    /// A query parameter or path segment is wrong.
    #[error("{field}: {message}")]
    BadParameter {
        /// The parameter.
        field: &'static str,
        /// The rule.
        message: String,
    },
    /// Missing or wrong Bearer token.
    #[error("a valid Bearer token is required")]
    Unauthorized,
    /// Client address not in `ingest.allowed_ips`.
    #[error("client address {0} is not allowed")]
    Forbidden(String),
    /// Over `ingest.rate_limit_per_second`.
    #[error("rate limit exceeded; retry after {0:?}")]
    RateLimited(Duration),
    /// No such thing.
    #[error("{0} not found")]
    NotFound(String),
    /// A switch's record that cannot be mapped to a CDR (a source endpoint): nothing stored.
    #[error("{0}")]
    Unmappable(String),
    /// A reload's configuration was refused: the running one stays.
    #[error("the new configuration was refused, the running one stays: key `{key}`: {message}")]
    InvalidConfig {
        /// The key at fault (`config` when the file could not be parsed at all).
        key: String,
        /// The rule it broke.
        message: String,
    },
    /// Shutting down, or the outbox failed: nothing was stored.
    #[error("{0}")]
    Unavailable(String),
}

fn first(errors: &[FieldError]) -> String {
    errors.first().map(|e| format!("{} {}", e.field, e.message)).unwrap_or_default()
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    message: String,
    details: &'a [FieldError],
}

impl ApiError {
    fn status_and_kind(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            ApiError::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            ApiError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            ApiError::AfterHangup { .. } => (StatusCode::CONFLICT, "status_after_hangup"),
            ApiError::BadParameter { .. } => (StatusCode::BAD_REQUEST, "bad_parameter"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unmappable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unmappable_record"),
            ApiError::InvalidConfig { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_configuration"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl ApiError {
    /// Whether the answer leaves the request body unread (too large, or broken framing), so
    /// the connection cannot carry another request: such a response says `Connection: close`
    /// and the server closes the connection after it.
    pub fn closes_connection(&self) -> bool {
        matches!(self, ApiError::PayloadTooLarge(_) | ApiError::MalformedBody(_))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_kind();
        let details: Vec<FieldError> = match &self {
            ApiError::Validation(errors) => errors.clone(),
            ApiError::AfterHangup { index, .. } => {
                vec![FieldError { index: *index, field: "status".into(), message: self.to_string() }]
            }
            ApiError::BadParameter { field, message } => {
                vec![FieldError { index: 0, field: field.to_string(), message: message.clone() }]
            }
            ApiError::InvalidConfig { key, message } => {
                vec![FieldError { index: 0, field: key.clone(), message: message.clone() }]
            }
            _ => Vec::new(),
        };
        let body = Body { error: kind, message: self.to_string(), details: &details };
        let mut response = (status, Json(body)).into_response();
        if self.closes_connection() {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::RateLimited(wait) = &self {
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
