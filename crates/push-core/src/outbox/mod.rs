//! The outbox: what a program keeps of every accepted event until each subscriber has it.
//!
//! This module is the storage seam. [`Store`] is everything the intake, the delivery loop,
//! the operations API and the retention job ask of an outbox; the types here are what they
//! exchange with it, whatever keeps it. [`open`] picks the backend from the database URL:
//! `sqlite://` is the embedded default ([`sqlite`], the only module with SQL). A second
//! backend is a sibling module implementing [`Store`], and a scheme in [`open`].

mod chains;
mod error;
mod policy;
mod postgres;
mod records;
mod sqlite;
mod stale;
mod store;

use std::sync::Arc;

use tokio::{sync::mpsc, task::JoinHandle};

pub use self::error::StoreError;
pub use self::policy::{PurgeReport, RetentionPolicy};
pub use self::postgres::{Replica, DEFAULT_LEASE};
pub use self::records::{
    AttemptRecord, DeliveryDetail, DeliveryFilter, DeliveryRecord, MoveReport, Page, RejectRecord, StatsRow,
};
pub use self::sqlite::DatabaseInUse;
pub use self::store::{Store, StoreCounters, StoreFuture};
use crate::{config::Service, schema::StoredEvent, slots::Slots};

/// An opened store, with what the program runs beside it.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Deliveries the store claimed on its own at ingest, for the delivery loop to attempt
    /// (a backend that never does so never sends any): the loop's free slots, given to
    /// [`open`], say how many it may claim that way.
    pub handed: mpsc::UnboundedReceiver<Vec<Claimed>>,
    /// Ends once the store has closed everything it holds (after the last handle is gone).
    pub task: JoinHandle<()>,
}

/// Opens (creating and migrating if needed) the outbox at `url` for `service`. `slots` are
/// the delivery loop's claim slots, shared with a backend that hands deliveries over at
/// ingest.
pub async fn open(url: &str, service: Service, slots: Arc<Slots>) -> anyhow::Result<Opened> {
    open_replica(url, service, slots, Replica::from_env(DEFAULT_LEASE), false).await
}

/// As [`open`], saying who this replica is and how long its claims last (PostgreSQL only:
/// a SQLite file has one process, whose claims end with it), and with `status.supersede`
/// (status-pusher only; see [`ClaimBatch::superseded`]): a status that
/// keeps failing for a subscriber is given up once a later one of its call is pending for it.
pub async fn open_replica(
    url: &str,
    service: Service,
    slots: Arc<Slots>,
    replica: Replica,
    supersede: bool,
) -> anyhow::Result<Opened> {
    if is_postgres(url) {
        let (outbox, task) = postgres::PgOutbox::open(url, service, slots, replica, supersede).await?;
        // PostgreSQL never hands deliveries over at ingest: the channel stays empty (and open).
        let (never, handed) = mpsc::unbounded_channel::<Vec<Claimed>>();
        let task = tokio::spawn(async move {
            let _ = task.await;
            drop(never);
        });
        return Ok(Opened { store: Arc::new(outbox), handed, task });
    }
    if !url.starts_with("sqlite:") {
        anyhow::bail!("database {url}: unsupported URL; sqlite://path or postgres://user:pass@host:port/db");
    }
    let (deliveries, handed) = mpsc::unbounded_channel();
    let (outbox, task) = sqlite::Outbox::open(url, service, sqlite::Handoff { slots, deliveries }, supersede).await?;
    Ok(Opened { store: Arc::new(outbox), handed, task })
}

/// Fails with [`DatabaseInUse`] if another process has the database at `url` open (one
/// process per SQLite file); takes nothing. Lets a program refuse to start before it binds
/// its port, so the message names the database rather than the address both would use.
pub fn ensure_not_in_use(url: &str) -> anyhow::Result<()> {
    if is_postgres(url) {
        return Ok(()); // replicas share it by design
    }
    sqlite::ensure_not_in_use(url)
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    crate::config::is_postgres(url)
}

/// One event to store, with the subscribers it goes to.
#[derive(Debug, Clone)]
pub struct IngestItem {
    /// The validated event, body serialized.
    pub event: StoredEvent,
    /// Its new id (uuid v7), used unless the event is a duplicate.
    pub event_id: String,
    /// Subscribers that get a delivery.
    pub subscribers: Vec<String>,
}

/// What a source stores with a batch besides its events, in the same transaction: the
/// records it could not map (set aside with the reason), the rejects this batch re-drives,
/// and where the source is in its input. All of it is kept, or none, with the events.
#[derive(Debug, Clone, Default)]
pub struct SourceNotes {
    /// Records set aside.
    pub rejects: Vec<NewReject>,
    /// Ids of rejects this batch re-drives: removed with the commit.
    pub resolved: Vec<i64>,
    /// The source's position after this batch (a file offset, say).
    pub mark: Option<SourceMark>,
}

impl SourceNotes {
    /// Whether there is nothing to keep but the events.
    pub fn is_empty(&self) -> bool {
        self.rejects.is_empty() && self.resolved.is_empty() && self.mark.is_none()
    }
}

/// A record a source could not map, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReject {
    /// The source's name (as in `GET /v1/sources`).
    pub source: String,
    /// Why: the field and the rule, or what could not be parsed.
    pub reason: String,
    /// The record as received.
    pub raw: String,
}

/// A source's position in its input, kept by the store so a restart resumes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMark {
    /// The source's name.
    pub source: String,
    /// Its position, in the source's own notation.
    pub mark: String,
}

/// What the outbox did with one ingested item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The item's callId.
    pub call_id: String,
    /// The id it is known by: new, or the original one for a duplicate.
    pub event_id: String,
    /// It had been accepted before and was not stored again.
    pub duplicate: bool,
}

/// Result of an ingest: all items stored (or recognized as duplicates), or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Committed.
    Accepted {
        /// One per item, in order.
        items: Vec<Accepted>,
        /// Deliveries stored, per subscriber (for the queue-depth gauge).
        new_deliveries: Vec<(String, u64)>,
        /// Chain heads given up as `superseded` by this ingest (`status.supersede`), per
        /// subscriber: they leave the queue.
        superseded: Vec<(String, u64)>,
    },
    /// A status arrived after its call's HANGUP; nothing was stored.
    AfterHangup {
        /// Position of the offending item.
        index: usize,
        /// The call.
        call_id: String,
    },
}

/// A delivery handed to the delivery loop for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Delivery id.
    pub id: i64,
    /// Sent as `webhook-id`.
    pub event_id: String,
    /// Who it goes to.
    pub subscriber: String,
    /// For logs and per-call ordering.
    pub call_id: String,
    /// The exact body, identical on every attempt.
    pub payload: String,
    /// Attempts made before this one, all rounds.
    pub attempts: u32,
    /// Attempts made before the last redelivery by hand.
    pub round_start: u32,
}

/// A claim's answer: deliveries to attempt now, and for each subscriber whose claim was not
/// filled, when its next delivery falls due.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    /// Claimed deliveries.
    pub items: Vec<Claimed>,
    /// Subscribers that got fewer than they asked for: everything due of theirs was claimed,
    /// and the rest falls due at this time (ms), or never (`None`: nothing pending is left,
    /// see [`crate::slots::Slots`]). A subscriber whose claim was filled is not listed: more
    /// of its deliveries may be due already.
    pub unfilled: Vec<(String, Option<i64>)>,
    /// Failed statuses of the recorded results given up as `superseded` instead of retried
    /// (`status.supersede`), per subscriber: they leave the queue although their result said
    /// `RetryAt`.
    pub superseded: Vec<(String, u64)>,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextState {
    /// Done.
    Delivered,
    /// Pending, due at this time (ms).
    RetryAt(i64),
    /// Given up; kept for the operations API.
    Dead,
    /// A failed attempt that does not count towards the retry schedule (a probe of an open
    /// breaker): logged, pending, due when it was before.
    Held,
    /// Not attempted: the claim is given back (a breaker opened, the subscriber was paused
    /// or removed), nothing else changes.
    Returned,
}

impl NextState {
    /// Whether the delivery is finished (delivered or dead): its call's next status may go,
    /// and it leaves the queue.
    pub fn finishes(self) -> bool {
        matches!(self, NextState::Delivered | NextState::Dead)
    }
}

/// The record of one finished attempt.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Delivery id.
    pub id: i64,
    /// Subscriber, for re-linking the call's chain.
    pub subscriber: String,
    /// Call, for re-linking the call's chain.
    pub call_id: String,
    /// The attempt's number (1-based, all rounds).
    pub attempt: u32,
    /// When it started (ms).
    pub at: i64,
    /// HTTP status, if any answer came.
    pub status: Option<u16>,
    /// Transport error or non-2xx summary.
    pub error: Option<String>,
    /// Time to the answer or the failure.
    pub latency_ms: i64,
    /// What happens next.
    pub next: NextState,
}

/// Which deliveries a bulk redelivery takes.
#[derive(Debug, Clone, Default)]
pub struct RedeliverFilter {
    /// Only this delivery.
    pub id: Option<i64>,
    /// Only deliveries in this state (`dead`, `superseded` or `delivered`).
    pub state: Option<String>,
    /// Only this subscriber's.
    pub subscriber: Option<String>,
}
