//! `POST /v1/cdrs` and `POST /v1/status-events`: parse, validate, commit, then 202.

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    Json,
};
use serde::Serialize;

use super::{error::ApiError, AppState};
use crate::{intake::IntakeError, outbox::IngestItem, schema};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AcceptedItem {
    call_id: String,
    event_id: String,
    duplicate: bool,
}

#[derive(Serialize)]
struct AcceptedBody {
    accepted: Vec<AcceptedItem>,
}

/// Accepts one event or an array; answers 202 only once every item is committed.
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    require_json(&headers)?;
    let items = parse(&state, body).await?;
    let accepted = state.intake.accept(items).await.map_err(|e| match e {
        IntakeError::AfterHangup { index, call_id } => ApiError::AfterHangup { index, call_id },
        e => ApiError::Unavailable(e.to_string()),
    })?;
    let accepted = accepted
        .into_iter()
        .map(|a| AcceptedItem { call_id: a.call_id, event_id: a.event_id, duplicate: a.duplicate })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(AcceptedBody { accepted })))
}

/// Reads, parses and validates the body. The body is validated straight from its bytes (no
/// JSON tree of the batch), and the bytes are dropped here, before the wait for the commit,
/// so a request holds only its validated events meanwhile.
async fn parse(state: &AppState, body: Body) -> Result<Vec<IngestItem>, ApiError> {
    let limit = state.settings.ingest.max_body_bytes;
    let bytes = super::body::read_limited(body, limit).await?;
    schema::validate_bytes_with(state.service, &bytes, |event| state.intake.item(event)).map_err(|e| match e {
        schema::BodyError::Malformed(e) => ApiError::MalformedJson(e.to_string()),
        schema::BodyError::Invalid(errors) => ApiError::Validation(errors),
    })
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}
