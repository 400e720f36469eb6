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
use crate::{
    outbox::{Accepted, IngestItem, IngestOutcome},
    schema,
    telemetry::metrics as m,
};

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
    if state.shutdown.is_cancelled() {
        return Err(ApiError::Unavailable("shutting down; nothing was stored".into()));
    }
    require_json(&headers)?;
    let items = parse(&state, body).await?;
    let outcome = state.outbox.ingest(items, state.clock.now_ms()).await.map_err(|e| {
        tracing::error!(error = %e, "ingest could not be committed");
        ApiError::Unavailable("the outbox is unavailable; nothing was stored".into())
    })?;
    match outcome {
        IngestOutcome::Accepted { items, new_deliveries } => {
            note_accepted(&state, &items, &new_deliveries);
            let accepted = items
                .into_iter()
                .map(|a| AcceptedItem { call_id: a.call_id, event_id: a.event_id, duplicate: a.duplicate })
                .collect();
            Ok((StatusCode::ACCEPTED, Json(AcceptedBody { accepted })))
        }
        IngestOutcome::AfterHangup { index, call_id } => Err(ApiError::AfterHangup { index, call_id }),
    }
}

/// Reads, parses and validates the body. The body is validated straight from its bytes (no
/// JSON tree of the batch), and the bytes are dropped here, before the wait for the commit,
/// so a request holds only its validated events meanwhile.
async fn parse(state: &AppState, body: Body) -> Result<Vec<IngestItem>, ApiError> {
    let limit = state.settings.ingest.max_body_bytes;
    let bytes = super::body::read_limited(body, limit).await?;
    schema::validate_bytes_with(state.service, &bytes, |event| IngestItem {
        subscribers: state.routes.matching(&event),
        event_id: uuid::Uuid::now_v7().to_string(),
        event: event.into_stored(),
    })
    .map_err(|e| match e {
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

/// Metrics and the delivery loop's wake-up, after a commit.
fn note_accepted(state: &AppState, accepted: &[Accepted], new_deliveries: &[(String, u64)]) {
    let new = accepted.iter().filter(|a| !a.duplicate).count() as u64;
    for (subscriber, n) in new_deliveries {
        state.routes.queue_depth_add(subscriber, *n as f64);
    }
    m::ingested(new, accepted.len() as u64 - new);
    if new > 0 {
        state.wake.notify_one();
    }
}
