//! `/healthz` (the process runs) and `/readyz` (it accepts events, its outbox answers, and
//! the outbox's last write succeeded: a full disk or a read-only file fails writes only; and
//! no configured source is failing, e.g. a Redis it cannot reach).

use axum::{extract::State, http::StatusCode, Json};
use serde_json::{json, Value};

use super::AppState;

/// 200 while the process runs.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when the outbox is reachable, takes writes, and the program accepts events, else 503.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.intake.is_stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "shutting down"})));
    }
    if state.outbox.write_failing() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "outbox cannot take writes"})));
    }
    if !state.outbox.is_ready().await {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "outbox unavailable"})));
    }
    let failing = state.sources.failing();
    if !failing.is_empty() {
        let sources: serde_json::Map<String, Value> = failing.into_iter().map(|(n, e)| (n, json!(e))).collect();
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "a source is failing", "sources": sources})));
    }
    (StatusCode::OK, Json(json!({"status": "ready"})))
}
