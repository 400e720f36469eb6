//! `GET /v1/subscribers`, pause and resume, and `POST /v1/reload` (issue 14): each
//! subscriber's health as the delivery loop sees it, with its queue from the outbox.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde_json::{json, Map, Value};

use super::{error::ApiError, ops::storage, AppState};
use crate::{config::ConfigError, delivery::health::Control};

/// A subscriber's entry before anything is filled in: one the outbox holds deliveries of
/// but the loop has no lane for (removed before this start).
fn removed_entry(id: &str) -> Value {
    json!({"id": id, "state": "removed", "consecutiveFailures": 0, "lastError": null, "nextProbeAt": null,
           "failedAttempts": 0, "maxInFlight": null, "rateLimitPerSecond": null,
           "queueDepth": 0, "delivered": 0, "dead": 0})
}

/// `GET /v1/subscribers`: per subscriber, its state (closed, open, paused, removed), its
/// breaker's consecutive failures, last error and next probe, its queue depth and its
/// delivered and dead counts (`failedAttempts` counts failed attempts since start).
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut entries: Map<String, Value> = Map::new();
    for (id, health) in state.board.snapshot() {
        let mut entry = removed_entry(&id);
        if let (Value::Object(e), Ok(Value::Object(h))) = (&mut entry, serde_json::to_value(&health)) {
            e.extend(h);
        }
        entries.insert(id, entry);
    }
    for row in state.outbox.stats().await.map_err(storage)? {
        let entry = entries.entry(row.subscriber.clone()).or_insert_with(|| removed_entry(&row.subscriber));
        let key = if row.state == "pending" { "queueDepth".to_string() } else { row.state.clone() };
        entry[key] = json!(row.count);
    }
    Ok(Json(json!({"items": entries.into_values().collect::<Vec<_>>()})))
}

/// `POST /v1/subscribers/{id}/pause`: its deliveries wait (none dies), across restarts.
pub async fn pause(state: State<AppState>, id: Path<String>) -> Result<Json<Value>, ApiError> {
    set_paused(state, id, true).await
}

/// `POST /v1/subscribers/{id}/resume`.
pub async fn resume(state: State<AppState>, id: Path<String>) -> Result<Json<Value>, ApiError> {
    set_paused(state, id, false).await
}

async fn set_paused(
    State(state): State<AppState>,
    Path(id): Path<String>,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    if state.routes.current().get(&id).is_none() {
        return Err(ApiError::NotFound(format!("subscriber {id} (of this program's configuration)")));
    }
    state.outbox.set_paused(id.clone(), paused, state.clock.now_ms()).await.map_err(storage)?;
    state.board.send(if paused { Control::Pause(id.clone()) } else { Control::Resume(id.clone()) });
    Ok(Json(json!({"id": id, "paused": paused})))
}

/// `POST /v1/reload`: re-reads the configuration; its subscribers take effect at once. A
/// refused file answers 422 naming the key, and changes nothing.
pub async fn reload(State(state): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    match state.reloader.reload().await {
        Ok(report) => Ok((StatusCode::OK, Json(json!(report)))),
        Err(ConfigError::Invalid { key, message }) => Err(ApiError::InvalidConfig { key, message }),
        Err(e @ ConfigError::Source(_)) => {
            Err(ApiError::InvalidConfig { key: "config".into(), message: e.to_string() })
        }
    }
}
