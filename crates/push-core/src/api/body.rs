//! Reading a request body within `ingest.max_body_bytes`, telling a body that is too large
//! (413) from one whose framing is broken (400, e.g. a malformed chunk).
//!
//! A body whose `Content-Length` already says it is too large is refused before any of it is
//! read, so a client cannot make the server wait for (or buffer) bytes it will refuse. Both
//! refusals leave the rest of the body unread, so their responses say `Connection: close`
//! (see [`ApiError::closes_connection`]) and the connection is closed after them.

use axum::body::{Body, Bytes, HttpBody};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::error::ApiError;

/// The body's bytes, at most `limit` of them: 413 when the announced length or the bytes
/// read exceed `limit`, 400 when the body cannot be read as HTTP framed it.
pub(super) async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    // hyper's body gives its Content-Length as the exact size hint.
    if HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::PayloadTooLarge(limit)),
        Err(e) => {
            tracing::debug!(error = %e, "ingest body could not be read");
            Err(ApiError::MalformedBody(e.to_string()))
        }
    }
}
