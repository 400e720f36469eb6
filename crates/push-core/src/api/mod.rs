//! The HTTP API: ingest (SPEC §3) and operations (SPEC §5). Ingest never makes outbound HTTP;
//! a 202 means the outbox committed the events.

mod body;
pub mod error;
mod health;
mod ingest;
mod ops;
mod security;
mod sources_api;
mod subscribers;

use std::sync::Arc;

use crate::{
    clock::Clock,
    config::{Service, Settings},
    delivery::health::Board,
    intake::Intake,
    outbox::Store,
    reload::Reloader,
    sources::Sources,
    subscribers::Roster,
};
use axum::{
    middleware,
    routing::{get, post},
    Router,
};
use metrics_exporter_prometheus::PrometheusHandle;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Which program this is.
    pub service: Service,
    /// The validated configuration.
    pub settings: Arc<Settings>,
    /// Subscribers of this program in force.
    pub routes: Roster,
    /// The outbox, for the operations API's reads.
    pub outbox: Arc<dyn Store>,
    /// Where ingest and redelivery put events and work (stores, counts, wakes the loop).
    pub intake: Intake,
    /// The sources' figures (`GET /v1/sources`, `/readyz`) and reject re-drive.
    pub sources: Sources,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Subscribers' health, and the delivery loop's controls.
    pub board: Board,
    /// Re-reads the configuration.
    pub reloader: Arc<Reloader>,
}

/// The ingest path of a program.
pub fn ingest_path(service: Service) -> &'static str {
    match service {
        Service::Cdr => "/v1/cdrs",
        Service::Status => "/v1/status-events",
    }
}

/// All routes of one program. Ingest is behind the ingest guard (allowlist, rate limit, tokens)
/// and the operations API behind the admin token; health and metrics stay open
/// (see `security`).
pub fn router(state: AppState, sources: Router) -> Router {
    let guard = security::IngestGuard::from_settings(&state.settings);
    let ingest = Router::new()
        .route(ingest_path(state.service), post(ingest::ingest))
        .route_layer(middleware::from_fn_with_state(guard.clone(), security::ingest_guard));
    // `layer`, not `route_layer`: with no source endpoint configured the router is empty.
    let sources = sources.layer(middleware::from_fn_with_state(guard, security::ingest_guard));
    let admin = Router::new()
        .route("/v1/deliveries", get(ops::list))
        .route("/v1/deliveries/redeliver", post(ops::redeliver_bulk))
        .route("/v1/deliveries/{id}", get(ops::get))
        .route("/v1/deliveries/{id}/redeliver", post(ops::redeliver_one))
        .route("/v1/stats", get(ops::stats))
        .route("/v1/subscribers", get(subscribers::list))
        .route("/v1/subscribers/{id}/pause", post(subscribers::pause))
        .route("/v1/subscribers/{id}/resume", post(subscribers::resume))
        .route("/v1/reload", post(subscribers::reload))
        .route("/v1/sources", get(sources_api::list))
        .route("/v1/sources/rejects", get(sources_api::rejects))
        .route("/v1/sources/rejects/{id}/redrive", post(sources_api::redrive))
        .route_layer(middleware::from_fn_with_state(
            security::AdminGuard::from_settings(&state.settings),
            security::admin_guard,
        ));
    let open = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(ops::metrics));
    let own = Router::new().merge(ingest).merge(admin).merge(open).fallback(not_found).with_state(state);
    sources.merge(own)
}

async fn not_found(uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::NotFound(format!("route {}", uri.path()))
}
