//! The replica's ingest writer: group commit. It takes every request waiting in its queue
//! and stores them in one transaction, so concurrent requests share one commit (and one
//! flush of PostgreSQL's WAL, `synchronous_commit = on`); each caller is answered after it.

use std::sync::{atomic::Ordering, Arc};

use tokio::sync::{mpsc, oneshot};

use super::{
    ingest::{self, Request as Planned},
    IngestItem, IngestOutcome, Shared, SourceNotes, StoreError,
};

/// Requests taken from the queue at once.
const MAX_GROUP: usize = 512;
/// Events in one transaction at most: a bigger group is left for the next one.
const MAX_GROUP_EVENTS: usize = 2000;

/// One queued ingest request.
pub(super) struct Request {
    pub items: Vec<IngestItem>,
    pub notes: SourceNotes,
    pub now: i64,
    pub reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
}

/// Runs until every sender is gone.
pub(super) async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Request>) {
    let mut next: Option<Request> = None;
    loop {
        let first = match next.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut events = first.items.len();
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) if events + r.items.len() > MAX_GROUP_EVENTS => {
                    next = Some(r);
                    break;
                }
                Ok(r) => {
                    events += r.items.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        commit_group(&shared, group).await;
    }
}

/// Stores one group in one transaction and answers each request.
async fn commit_group(shared: &Shared, group: Vec<Request>) {
    let result = store(shared, &group).await;
    let counters = &shared.counters;
    counters.failing.store(result.is_err(), Ordering::Relaxed);
    match result {
        Ok((outcomes, subscribers)) => {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            counters.ingests.fetch_add(group.len() as u64, Ordering::Relaxed);
            // The new deliveries wait in the database: the delivery loop claims them.
            subscribers.iter().for_each(|s| shared.slots.mark_backlog(s));
            for (request, outcome) in group.into_iter().zip(outcomes) {
                let _ = request.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "outbox ingest transaction failed");
            for request in group {
                let _ = request.reply.send(Err(e.clone()));
            }
        }
    }
}

async fn store(shared: &Shared, group: &[Request]) -> Result<(Vec<IngestOutcome>, Vec<String>), StoreError> {
    let mut tx = shared.pool.begin().await.map_err(StoreError::transaction)?;
    let planned: Vec<Planned<'_>> =
        group.iter().map(|r| Planned { items: &r.items, notes: &r.notes, now: r.now }).collect();
    let (outcomes, subscribers) = ingest::apply(&mut tx, &planned, shared).await.map_err(StoreError::statement)?;
    super::deliveries::notify(&mut tx, shared, &subscribers).await.map_err(|e| StoreError::statement(e.into()))?;
    tx.commit().await.map_err(StoreError::transaction)?;
    Ok((outcomes, subscribers))
}
