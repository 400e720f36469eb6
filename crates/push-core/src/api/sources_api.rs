//! The operations API of sources: `GET /v1/sources` (each source's state and figures),
//! `GET /v1/sources/rejects` and `POST /v1/sources/rejects/{id}/redrive` (records set aside,
//! listed and re-driven once the operator fixed the cause). Also how a source endpoint's
//! refusal is answered: the one error shape of the API.

use axum::{
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error::ApiError, AppState};
use crate::{
    intake::IntakeError,
    sources::{Feed, FeedError},
};

/// `GET /v1/sources`.
pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "sources": state.sources.reports() }))
}

/// Query of `GET /v1/sources/rejects`.
#[derive(Debug, Deserialize)]
pub struct RejectsQuery {
    source: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/sources/rejects?source=&limit=`: newest first.
pub async fn rejects(State(state): State<AppState>, Query(q): Query<RejectsQuery>) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadParameter { field: "limit", message: "must be 1-1000".into() });
    }
    let items = state.outbox.rejects(q.source, limit).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/sources/rejects/{id}/redrive`: parses the record again with its source's parser;
/// stored (and the reject removed) or 422 with the reason it still has.
pub async fn redrive(State(state): State<AppState>, Path(id): Path<i64>) -> Result<Json<Value>, ApiError> {
    let reject = state.outbox.reject(id).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let reject = reject.ok_or_else(|| ApiError::NotFound(format!("reject {id}")))?;
    let handle = state.sources.get(&reject.source);
    let Some((handle, parser)) = handle.and_then(|h| h.parser().cloned().map(|p| (h, p))) else {
        let message = format!("source {} is not configured; it cannot parse the record", reject.source);
        return Err(ApiError::BadParameter { field: "source", message });
    };
    let accepted = Feed::new(state.intake.clone(), handle).redrive(id, parser(&reject.raw)).await?;
    Ok(Json(json!({ "accepted": accepted.len(), "duplicates": accepted.iter().filter(|a| a.duplicate).count() })))
}

impl From<FeedError> for ApiError {
    fn from(e: FeedError) -> Self {
        match e {
            FeedError::Rejected(reason) => ApiError::Unmappable(reason),
            FeedError::Intake(IntakeError::AfterHangup { index, call_id }) => ApiError::AfterHangup { index, call_id },
            FeedError::Intake(e) => ApiError::Unavailable(e.to_string()),
            FeedError::TooLarge(limit) => ApiError::PayloadTooLarge(limit),
            FeedError::Unreadable(e) => ApiError::MalformedBody(e),
        }
    }
}

impl IntoResponse for FeedError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
