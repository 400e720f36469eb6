//! `POST /v1/subscribers/{id}/drop` and `/move` (issue 14, point 6): what the operator does
//! with the pending deliveries of a subscriber that is no longer configured. Neither deletes
//! anything: dropped deliveries become dead (listed, re-deliverable), moved ones another
//! subscriber's.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde_json::{json, Value};

use super::{error::ApiError, ops::storage, AppState};

/// Refuses to settle a subscriber that is configured: its deliveries are the loop's.
fn removed_only(state: &AppState, id: &str) -> Result<(), ApiError> {
    match state.routes.current().get(id) {
        Some(_) => Err(ApiError::Conflict(format!(
            "subscriber {id} is configured; only a removed subscriber's deliveries can be dropped or moved"
        ))),
        None => Ok(()),
    }
}

/// `POST /v1/subscribers/{id}/drop`: its pending deliveries become dead.
pub async fn drop(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    removed_only(&state, &id)?;
    let n = state.outbox.drop_deliveries(id.clone(), state.clock.now_ms()).await.map_err(storage)?;
    tracing::warn!(subscriber = %id, dropped = n, "a removed subscriber's pending deliveries were dropped (now dead)");
    Ok(Json(json!({"id": id, "dropped": n})))
}

/// `POST /v1/subscribers/{id}/move` with `{"to": "<subscriber>"}`: its pending deliveries
/// become `to`'s (a configured subscriber of this program).
pub async fn r#move(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    removed_only(&state, &id)?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let Some(to) = body.get("to").and_then(Value::as_str).map(str::to_string) else {
        return Err(ApiError::BadParameter { field: "to", message: "must be a subscriber id (a string)".into() });
    };
    let routes = state.routes.current();
    if routes.get(&to).is_none() {
        let message = format!("`{to}` is not a configured subscriber of this program");
        return Err(ApiError::BadParameter { field: "to", message });
    }
    let report = state.outbox.move_deliveries(id.clone(), to.clone(), state.clock.now_ms()).await.map_err(storage)?;
    routes.queue_depth_add(&to, report.moved as f64);
    state.intake.wake();
    tracing::warn!(subscriber = %id, to = %to, moved = report.moved, skipped = report.skipped,
        "a removed subscriber's pending deliveries were moved");
    Ok((StatusCode::OK, Json(json!({"id": id, "to": to, "moved": report.moved, "skipped": report.skipped}))))
}
