//! Grandstream UCM "CDR Real-time Output" (INTEGRATIONS.md §3), two ways in, one source
//! named `ucm`: a TCP listener on `sources.ucm.tcp_listen` (JSON or `'`-quoted CSV records;
//! unmappable ones set aside as rejects) and `POST /v1/sources/ucm` (one JSON object per
//! POST; an unmappable one is answered 422 with the reason and nothing is stored).

mod frame;
mod map;
mod tcp;

use std::sync::Arc;

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::State,
    http::StatusCode,
    routing::post,
    Json, Router,
};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::{json, Value};

pub use self::map::{UcmMapping, CSV_COLUMNS};
pub use self::tcp::MAX_CONNECTIONS;
use super::{Context, Feed, FeedError, Parser, SourceState, Started};
use crate::config::UcmSettings;

/// The path the UCM's HTTP(S) output posts to.
pub const PATH: &str = "/v1/sources/ucm";

/// Registers the `ucm` source, binds its TCP listener if configured (a bind failure fails
/// the start, naming `sources.ucm.tcp_listen`), and gives its HTTP route.
pub async fn start(ctx: &Context, cfg: &UcmSettings) -> anyhow::Result<Started> {
    let mapping = Arc::new(UcmMapping::new(cfg).map_err(anyhow::Error::msg)?);
    let parse = mapping.clone();
    let parser: Parser = Arc::new(move |raw: &str| parse.parse(raw));
    let handle = ctx.sources.register("ucm", "ucm", SourceState::Listening, Some(parser));
    let feed = Feed::new(ctx.intake.clone(), handle.clone());
    let max_bytes = ctx.settings.ingest.max_body_bytes;
    let mut started = Started::default();
    if let Some(addr) = &cfg.tcp_listen {
        let listener = tcp::bind(addr).await?;
        let bound = listener.local_addr()?;
        handle.set_address(format!("tcp://{bound}"));
        tracing::info!(source = "ucm", %bound, "UCM CDR real-time output: listening for TCP");
        let tcp = tcp::Tcp {
            feed: feed.clone(),
            mapping: mapping.clone(),
            idle: cfg.idle_timeout,
            max_bytes,
            allowed: ctx.settings.ingest.allowed_ips.clone(),
            shutdown: ctx.shutdown.clone(),
        };
        started.tasks.push(tokio::spawn(tcp.run(listener)));
    }
    let http = Arc::new(Http { feed, mapping, max_bytes });
    started.router = Router::new().route(PATH, post(receive)).with_state(http);
    Ok(started)
}

/// What the HTTP endpoint needs.
struct Http {
    feed: Feed,
    mapping: Arc<UcmMapping>,
    max_bytes: usize,
}

/// `POST /v1/sources/ucm`: 202 with the CDRs' ids once durable (the UCM's 2xx), 422 with the
/// reason when the record cannot be mapped, 413 over `ingest.max_body_bytes`.
async fn receive(State(http): State<Arc<Http>>, body: Body) -> Result<(StatusCode, Json<Value>), FeedError> {
    let bytes = read_body(body, http.max_bytes).await.inspect_err(|e| {
        http.feed.handle().count(0, 0, 1);
        tracing::warn!(source = "ucm", reason = %e, "record refused");
    })?;
    let record = http.mapping.parse(&String::from_utf8_lossy(&bytes));
    let accepted = http.feed.take_or_refuse(vec![record]).await?;
    let accepted: Vec<Value> = accepted
        .iter()
        .map(|a| json!({"callId": a.call_id, "eventId": a.event_id, "duplicate": a.duplicate}))
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))))
}

/// The body, at most `limit` bytes (a `Content-Length` over it is refused before reading).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, FeedError> {
    if HttpBody::size_hint(&body).lower() > limit as u64 {
        return Err(FeedError::TooLarge(limit));
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(FeedError::TooLarge(limit)),
        Err(e) => Err(FeedError::Unreadable(e.to_string())),
    }
}
