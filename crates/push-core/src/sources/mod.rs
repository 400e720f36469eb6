//! Sources: the switches a program reads natively (issue 13: FreeSWITCH mod_json_cdr, Asterisk
//! CSV files, Grandstream UCM, Redis from mod_cti), beside its own JSON ingest.
//!
//! A source is one module here. It parses its input, maps each native record to SPEC §2.1
//! CDRs ([`Mapped`]), and hands them to its [`Feed`], which validates them like any CDR and
//! stores them through the intake; it acknowledges its peer (an HTTP 2xx, a Redis LREM, a
//! file offset kept in the same transaction) only after the feed answered `Ok`. A record that
//! cannot be mapped is never dropped: an HTTP source answers 4xx with the reason, the others
//! set it aside in the outbox's rejects, which the operations API lists and re-drives.
//! [`start`] wires every configured source; each registers a [`SourceHandle`] with
//! [`Sources`], whose figures `GET /v1/sources` and `/readyz` show.

pub mod ami;
pub mod asterisk_csv;
pub mod connect;
pub mod esl;
pub mod feed;
pub mod freeswitch;
pub mod localtime;
pub mod outcome;
pub mod redis;
pub mod registry;
pub mod ucm;

use std::sync::Arc;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::feed::{Feed, FeedError, Mapped, Parser, Taken};
pub use self::registry::{SourceHandle, SourceReport, SourceState, Sources};
use crate::{
    config::{Service, Settings},
    intake::Intake,
};

/// What a source needs to start.
#[derive(Clone)]
pub struct Context {
    /// The configuration (`sources:`, limits).
    pub settings: Arc<Settings>,
    /// Which program runs.
    pub service: Service,
    /// Where records go.
    pub intake: Intake,
    /// Where sources register.
    pub sources: Sources,
    /// Cancelled when the program stops: background sources end.
    pub shutdown: CancellationToken,
}

/// The running sources: the HTTP routes of those that are endpoints (served behind the
/// ingest guard, like `POST /v1/cdrs`), and the tasks of those that run in the background.
#[derive(Default)]
pub struct Started {
    /// Routes such as `POST /v1/sources/freeswitch`, state applied.
    pub router: Router,
    /// Followers, listeners, consumers; they end on shutdown.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts every source `ctx.settings.sources` configures for `ctx.service`.
pub async fn start(ctx: &Context) -> anyhow::Result<Started> {
    let mut started = Started::default();
    if let (Service::Cdr, Some(freeswitch)) = (ctx.service, &ctx.settings.sources.freeswitch) {
        started.router = started.router.merge(freeswitch::routes(ctx, freeswitch));
    }
    if let (Service::Cdr, Some(cfg)) = (ctx.service, &ctx.settings.sources.ucm) {
        let ucm = ucm::start(ctx, cfg).await?;
        started.router = started.router.merge(ucm.router);
        started.tasks.extend(ucm.tasks);
    }
    if ctx.service == Service::Cdr {
        let files = &ctx.settings.sources.asterisk_csv;
        for (i, file) in files.iter().enumerate() {
            if files[..i].iter().any(|f| f.path == file.path) {
                anyhow::bail!("sources.asterisk_csv: {} is listed twice", file.path.display());
            }
            started.tasks.push(asterisk_csv::start(ctx, file)?);
        }
    }
    if let (Service::Cdr, Some(redis)) = (ctx.service, &ctx.settings.sources.redis) {
        started.tasks.extend(redis::start(ctx, redis)?);
    }
    // Real-time statuses straight from the switch (issue 16).
    if let (Service::Status, Some(esl)) = (ctx.service, &ctx.settings.sources.esl) {
        started.tasks.push(esl::start(ctx, esl));
    }
    if let Some(ami) = &ctx.settings.sources.ami {
        started.tasks.push(ami::start(ctx, ami)?);
    }
    Ok(started)
}
