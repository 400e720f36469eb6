//! One intake for every source of events. A source (HTTP ingest today; a switch's CDR feed
//! or event socket next) parses its input into validated events and hands them here; the
//! intake gives each its id and its subscribers, stores them through the outbox, counts them,
//! and wakes the delivery loop. Manual redelivery goes through it too, since it also puts
//! work in front of the loop. A source never touches the outbox, the metrics or the loop.
//!
//! Adding a source is one module that turns its input into [`ValidEvent`]s (with
//! [`crate::schema`]), calls [`Intake::accept`] and answers its peer from the result: an `Ok`
//! means the events are on disk (the guarantee of a 202).

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    outbox::{Accepted, IngestItem, IngestOutcome, RedeliverFilter, SourceNotes, Store, StoreError},
    schema::ValidEvent,
    subscribers::Roster,
    telemetry::metrics as m,
};

/// Why events were not accepted; nothing of them was stored.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The program is stopping and takes no more events.
    #[error("shutting down; nothing was stored")]
    ShuttingDown,
    /// A status came after its call's HANGUP (SPEC §3): the whole batch is refused.
    #[error("item {index}: call {call_id} has already hung up")]
    AfterHangup {
        /// Position of the offending event in the batch.
        index: usize,
        /// Its call.
        call_id: String,
    },
    /// The outbox could not commit or sync them.
    #[error("the outbox is unavailable; nothing was stored")]
    Unavailable(#[source] StoreError),
}

/// The intake of one program: cheap to clone, shared by every source.
#[derive(Clone)]
pub struct Intake {
    routes: Roster,
    outbox: Arc<dyn Store>,
    wake: Arc<Notify>,
    clock: Arc<dyn Clock>,
    stopping: CancellationToken,
}

impl Intake {
    /// An intake storing into `outbox` for the subscribers in force in `routes`; `wake` is the
    /// delivery loop's, `stopping` is cancelled when the program stops taking events.
    pub fn new(
        routes: Roster,
        outbox: Arc<dyn Store>,
        wake: Arc<Notify>,
        clock: Arc<dyn Clock>,
        stopping: CancellationToken,
    ) -> Self {
        Intake { routes, outbox, wake, clock, stopping }
    }

    /// The store the events go to (sources read their kept positions and rejects from it).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.outbox
    }

    /// Whether the program has stopped taking events (readiness says so).
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// One validated event, with its new id and its subscribers, ready for [`Intake::accept`].
    /// Sources call it while they parse, so a batch holds only stored-form events.
    pub fn item(&self, event: ValidEvent) -> IngestItem {
        IngestItem {
            subscribers: self.routes.matching(&event),
            event_id: uuid::Uuid::now_v7().to_string(),
            event: event.into_stored(),
        }
    }

    /// Stores a batch, all or nothing; returns once it is on disk, one [`Accepted`] per item
    /// in order (a re-sent event is a duplicate with its original id, and is pushed once).
    pub async fn accept(&self, items: Vec<IngestItem>) -> Result<Vec<Accepted>, IntakeError> {
        self.accept_noted(items, SourceNotes::default()).await
    }

    /// As [`Intake::accept`], keeping a source's notes (records it set aside, rejects it
    /// re-drove, its position in its input) in the same transaction as the events: a source
    /// acknowledges its input only after this returns `Ok`.
    pub async fn accept_noted(&self, items: Vec<IngestItem>, notes: SourceNotes) -> Result<Vec<Accepted>, IntakeError> {
        if self.stopping.is_cancelled() {
            return Err(IntakeError::ShuttingDown);
        }
        let outcome = self.outbox.ingest_noted(items, notes, self.clock.now_ms()).await.map_err(|e| {
            tracing::error!(error = %e, "ingest could not be committed");
            IntakeError::Unavailable(e)
        })?;
        match outcome {
            IngestOutcome::Accepted { items, new_deliveries } => {
                let new = items.iter().filter(|a| !a.duplicate).count() as u64;
                for (subscriber, n) in &new_deliveries {
                    self.routes.queue_depth_add(subscriber, *n as f64);
                }
                m::ingested(new, items.len() as u64 - new);
                if new > 0 {
                    self.wake.notify_one();
                }
                Ok(items)
            }
            IngestOutcome::AfterHangup { index, call_id } => Err(IntakeError::AfterHangup { index, call_id }),
        }
    }

    /// As [`Intake::accept`], from validated events.
    pub async fn accept_events(&self, events: Vec<ValidEvent>) -> Result<Vec<Accepted>, IntakeError> {
        self.accept(events.into_iter().map(|e| self.item(e)).collect()).await
    }

    /// Puts matching deliveries back to pending with a fresh schedule (SPEC §5), per
    /// subscriber listed (all when `subscribers` is empty is the caller's choice); returns
    /// how many, and wakes the loop for them.
    pub async fn redeliver(&self, filters: Vec<RedeliverFilter>) -> Result<u64, StoreError> {
        let mut total = 0;
        for filter in filters {
            let subscriber = filter.subscriber.clone();
            let n = self.outbox.redeliver(filter, self.clock.now_ms()).await?;
            if let Some(subscriber) = subscriber {
                self.routes.queue_depth_add(&subscriber, n as f64);
            }
            total += n;
        }
        self.wake.notify_one();
        Ok(total)
    }
}
