//! FreeSWITCH mod_json_cdr (INTEGRATIONS.md §1.1): `POST /v1/sources/freeswitch?uuid=<leg>`,
//! one leg's CDR per request, in any of the three bodies mod_json_cdr sends (`body`), mapped
//! to one SPEC §2.1 CDR (`map`, `cause`). The answer is mod_json_cdr's acknowledgement: 202
//! only once the CDR is durable (a re-sent leg is a duplicate, 202 again and pushed once);
//! a record that cannot be mapped is 422 with the reason, so mod_json_cdr retries it and at
//! last keeps it in its `err-log-dir` spool, which `cdr-pusher import freeswitch` replays.

pub(crate) mod body;
pub(crate) mod cause;
mod map;

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use super::{feed::read_body, Context, Feed, FeedError, Mapped, Parser, SourceState};
use crate::config::FreeswitchSettings;

/// The path mod_json_cdr's `url` points at.
pub const PATH: &str = "/v1/sources/freeswitch";

/// The source's name and kind in `GET /v1/sources`.
pub const NAME: &str = "freeswitch";

/// The route of the source, registered as listening; served behind the ingest guard.
pub fn routes(ctx: &Context, settings: &FreeswitchSettings) -> Router {
    let settings = Arc::new(settings.clone());
    let handle = ctx.sources.register(NAME, NAME, SourceState::Listening, Some(parser(settings.clone())));
    let endpoint =
        Endpoint { feed: Feed::new(ctx.intake.clone(), handle), settings, limit: ctx.settings.ingest.max_body_bytes };
    Router::new().route(PATH, post(receive)).with_state(endpoint)
}

/// How a reject's raw JSON is parsed again (the endpoint refuses rather than sets aside, so
/// this serves a re-drive only).
fn parser(settings: Arc<FreeswitchSettings>) -> Parser {
    Arc::new(move |raw: &str| parse(raw.as_bytes(), None, &settings, None))
}

#[derive(Clone)]
struct Endpoint {
    feed: Feed,
    settings: Arc<FreeswitchSettings>,
    limit: usize,
}

/// `?uuid=`: the leg, as mod_json_cdr appends it to the URL.
#[derive(Debug, Deserialize)]
struct LegQuery {
    uuid: Option<String>,
}

async fn receive(
    State(endpoint): State<Endpoint>,
    Query(query): Query<LegQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, FeedError> {
    let bytes = read_body(body, endpoint.limit).await?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let record = parse(&bytes, content_type, &endpoint.settings, query.uuid.as_deref());
    let accepted = endpoint.feed.take_or_refuse(vec![record]).await?;
    let accepted: Vec<_> = accepted
        .into_iter()
        .map(|a| json!({"callId": a.call_id, "eventId": a.event_id, "duplicate": a.duplicate}))
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))).into_response())
}

/// One request's body (or spool file) to its CDR: decoded by its Content-Type (by its first
/// bytes without one), parsed, `variables` percent-decoded when `encoded_values`, mapped.
fn parse(bytes: &[u8], content_type: Option<&str>, settings: &FreeswitchSettings, query_uuid: Option<&str>) -> Mapped {
    let encoding = body::Encoding::of_content_type(content_type).unwrap_or_else(|| body::Encoding::sniff(bytes));
    let text = match body::json_text(bytes, encoding) {
        Ok(text) => text,
        Err(reason) => return Mapped::new(String::from_utf8_lossy(bytes), Err(reason)),
    };
    let cdr = body::Document::parse(&text).and_then(|mut doc| {
        if settings.encoded_values {
            map::decode_variables(&mut doc);
        }
        map::to_cdr(&doc, settings, query_uuid)
    });
    if let (Ok(cdr), Some(asked)) = (&cdr, query_uuid) {
        let leg = cdr["extra"]["uuid"].as_str().unwrap_or_default();
        if leg != asked {
            tracing::debug!(source = NAME, %asked, %leg, "?uuid= names another leg than the CDR; the CDR's is used");
        }
    }
    // A leg's uuid is its identity: a forked call's callee legs (simultaneous ring) each
    // keep their CDR, and a leg sent again is a duplicate.
    let leg = cdr.as_ref().ok().and_then(|c| c["extra"]["uuid"].as_str()).map(str::to_string);
    Mapped::keyed(text, cdr.map(|c| vec![c]), leg)
}
