//! The operations API of SPEC §5: deliveries, attempt logs, redelivery, stats, metrics.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::IntoResponse,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error::ApiError, AppState};
use crate::{
    outbox::{DeliveryDetail, DeliveryFilter, Page, RedeliverFilter},
    telemetry,
};

const STATES: [&str; 4] = ["pending", "delivered", "dead", "superseded"];
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// Query of `GET /v1/deliveries`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    subscriber: Option<String>,
    call_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// An outbox failure as the API's 503 (the cause is logged, not shown).
pub(super) fn storage(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "outbox query failed");
    ApiError::Unavailable("the outbox is unavailable".into())
}

fn check_state(state: &Option<String>) -> Result<(), ApiError> {
    match state {
        Some(s) if !STATES.contains(&s.as_str()) => Err(ApiError::BadParameter {
            field: "state",
            message: "must be pending, delivered, dead or superseded".into(),
        }),
        _ => Ok(()),
    }
}

/// `GET /v1/deliveries`: newest first, with a cursor to the next page.
pub async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> Result<Json<Page>, ApiError> {
    check_state(&q.state)?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => raw.parse::<u32>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            ApiError::BadParameter { field: "limit", message: format!("must be an integer from 1 to {MAX_LIMIT}") }
        })?,
    };
    let before_id = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<i64>().map_err(|_| ApiError::BadParameter {
            field: "cursor",
            message: "must be the `next` value of a previous page".into(),
        })?),
    };
    let filter = DeliveryFilter { state: q.state, subscriber: q.subscriber, call_id: q.call_id, limit, before_id };
    Ok(Json(state.outbox.list_deliveries(&filter).await.map_err(storage)?))
}

/// `GET /v1/deliveries/{id}`: one delivery with its attempt log.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<DeliveryDetail>, ApiError> {
    let id = parse_id(&id)?;
    match state.outbox.delivery(id).await.map_err(storage)? {
        Some(detail) => Ok(Json(detail)),
        None => Err(ApiError::NotFound(format!("delivery {id}"))),
    }
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::BadParameter { field: "id", message: "must be a delivery id (integer)".into() })
}

/// `POST /v1/deliveries/{id}/redeliver`: back to pending with a fresh schedule.
pub async fn redeliver_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&id)?;
    let Some(detail) = state.outbox.delivery(id).await.map_err(storage)? else {
        return Err(ApiError::NotFound(format!("delivery {id}")));
    };
    let filter = RedeliverFilter { id: Some(id), state: None, subscriber: Some(detail.delivery.subscriber) };
    let count = state.intake.redeliver(vec![filter]).await.map_err(storage)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"redelivered": count}))))
}

/// Body of `POST /v1/deliveries/redeliver`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRedeliver {
    state: Option<String>,
    subscriber: Option<String>,
}

/// `POST /v1/deliveries/redeliver`: the same in bulk; answers how many.
pub async fn redeliver_bulk(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let req: BulkRedeliver = serde_json::from_slice(&body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    let wanted = req.state.unwrap_or_else(|| "dead".into());
    if !["dead", "superseded", "delivered"].contains(&wanted.as_str()) {
        return Err(ApiError::BadParameter { field: "state", message: "must be dead, superseded or delivered".into() });
    }
    if let Some(s) = &req.subscriber {
        if state.routes.current().get(s).is_none() {
            return Err(ApiError::BadParameter { field: "subscriber", message: format!("no subscriber `{s}`") });
        }
    }
    let subs: Vec<String> = match &req.subscriber {
        Some(s) => vec![s.clone()],
        None => state.routes.current().all().iter().map(|r| r.id.clone()).collect(),
    };
    let filters = subs
        .into_iter()
        .map(|sub| RedeliverFilter { id: None, state: Some(wanted.clone()), subscriber: Some(sub) })
        .collect();
    let total = state.intake.redeliver(filters).await.map_err(storage)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"redelivered": total}))))
}

/// A subscriber's entry of `/v1/stats` before anything is filled in.
fn blank_stats() -> Value {
    json!({"pending": 0, "delivered": 0, "dead": 0, "superseded": 0, "oldestDueAt": null, "oldestDueAgeMs": null})
}

/// `GET /v1/stats`: counts by state per subscriber, and how long its oldest due delivery
/// has waited for a claim (`null`: nothing due waits), which shows a starved subscriber.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let rows = state.outbox.stats().await.map_err(storage)?;
    let (now, oldest) = oldest_due(&state).await.map_err(storage)?;
    let mut subscribers = serde_json::Map::new();
    for row in rows {
        let entry = subscribers.entry(row.subscriber).or_insert_with(blank_stats);
        entry[row.state.as_str()] = json!(row.count);
    }
    for (subscriber, due_at) in oldest {
        let entry = subscribers.entry(subscriber).or_insert_with(blank_stats);
        entry["oldestDueAt"] = json!(due_at);
        entry["oldestDueAgeMs"] = json!(due_at.map(|at| now - at));
    }
    let c = state.outbox.counters();
    let outbox = json!({
        "transactions": c.transactions, "ingestRequests": c.ingests, "claims": c.claims,
        "longestPurgeBatchMs": c.longest_purge_micros as f64 / 1000.0,
    });
    Ok(Json(json!({"subscribers": subscribers, "outbox": outbox})))
}

/// Now, and when the oldest due delivery waiting for a claim fell due, for every configured
/// subscriber (`None`: nothing due waits) and any other one the outbox holds such deliveries
/// of (a subscriber taken out of the configuration: nobody claims them any more).
async fn oldest_due(state: &AppState) -> anyhow::Result<(i64, BTreeMap<String, Option<i64>>)> {
    let now = state.clock.now_ms();
    let mut oldest: BTreeMap<_, _> = state.routes.current().all().iter().map(|r| (r.id.clone(), None)).collect();
    oldest.extend(state.outbox.oldest_due(now).await?);
    Ok((now, oldest))
}

/// With replicas on one database (PostgreSQL), this process's own count of pending
/// deliveries is not the queue: `voice_push_queue_depth` is set from the database at each
/// scrape instead, so every replica answers the same. (A SQLite outbox has one process,
/// whose count is exact and costs no query.)
async fn shared_queue_depth(state: &AppState) {
    match state.outbox.pending_counts().await {
        Ok(counts) => {
            for route in state.routes.current().all() {
                let depth = counts.iter().find(|(s, _)| *s == route.id).map_or(0, |(_, n)| *n);
                route.metrics.queue_depth.set(depth as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "pending deliveries not read; the queue depth gauge is stale"),
    }
}

/// `GET /metrics`: Prometheus text. `voice_push_oldest_due_age_seconds` is read from the
/// outbox here (one indexed query), so it is as fresh as the scrape; if the outbox does not
/// answer, the rest is still rendered.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match oldest_due(&state).await {
        Ok((now, oldest)) => {
            for (subscriber, due_at) in oldest {
                let age_ms = due_at.map_or(0, |at| now - at);
                telemetry::metrics::oldest_due_age(&subscriber, age_ms as f64 / 1000.0);
            }
        }
        Err(e) => tracing::warn!(error = %e, "oldest due deliveries not read; their gauge is stale"),
    }
    if crate::outbox::is_postgres(&state.settings.service(state.service).database) {
        shared_queue_depth(&state).await;
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
