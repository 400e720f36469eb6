//! The single writer: group commit of ingest, claims, results and redeliveries.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{
    apply::apply_group,
    health::WriteHealth,
    ingest::{Plan, RowIds},
    purge,
    syncer::{self, Committed},
    ClaimBatch, Completion, Handoff, IngestItem, IngestOutcome, PurgeReport, RedeliverFilter, RetentionPolicy,
    SourceNotes, StoreError,
};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Commands taken from the queue at once.
const MAX_GROUP: usize = 512;
/// Events planned and written in one ingest transaction at most (see [`next_chunk`]).
const MAX_GROUP_EVENTS: usize = 1000;

/// Counters of the writer's work: how well group commit batches, how often the delivery loop
/// asks for work. Read by `/v1/stats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub transactions: AtomicU64,
    /// Ingest requests stored.
    pub ingests: AtomicU64,
    /// Claims made by the delivery loop.
    pub claims: AtomicU64,
    /// The longest a purge batch has held the writer, µs.
    pub longest_purge_micros: AtomicU64,
    /// Whether the last writes succeeded (read by `/readyz`).
    pub health: WriteHealth,
}

impl WriterStats {
    fn count(&self, group: &[Command]) {
        let ingests = group.iter().filter(|c| matches!(c, Command::Ingest { .. })).count() as u64;
        let claims =
            group.iter().filter(|c| matches!(c, Command::Cycle { wants, .. } if !wants.is_empty())).count() as u64;
        self.ingests.fetch_add(ingests, Ordering::Relaxed);
        self.claims.fetch_add(claims, Ordering::Relaxed);
    }
}

/// A request to the writer.
pub(super) enum Command {
    Ingest { items: Vec<IngestItem>, notes: SourceNotes, now: i64, reply: Reply<IngestOutcome> },
    Cycle { done: Arc<Vec<Completion>>, wants: Vec<(String, usize)>, now: i64, reply: Reply<ClaimBatch> },
    Redeliver { filter: RedeliverFilter, now: i64, reply: Reply<u64> },
    ReleaseClaims { reply: Reply<()> },
    Pause { subscriber: String, paused: bool, now: i64, reply: Reply<()> },
}

/// What the writer's queue carries: a command applied with the rest of its group, or a
/// batch of retention's purge, which runs in a transaction of its own after the group (it
/// keeps its own cursor, and no claim waits for it).
pub(super) enum Queued {
    Unit(Command),
    Purge { policy: RetentionPolicy, now: i64, reply: Reply<PurgeReport> },
}

/// Sends a command's result once the commit's fate is known.
pub(super) type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

pub(super) fn finish<T: Send + 'static>(reply: Reply<T>, result: Result<T, StoreError>) -> Finish {
    Box::new(move |commit| {
        let _ = reply.send(commit.and(result));
    })
}

/// The writer loop. Each turn takes every waiting command and applies, in two transactions:
/// first the delivery loop's bookkeeping (claims, results), answered at once, then one chunk
/// of at most [`MAX_GROUP_EVENTS`] ingested events (and redeliveries), answered by the
/// [`syncer`] once the commit is on disk. Durable work beyond one chunk waits for the next
/// turn, so a claim never waits behind more than one chunk of ingest: under an ingest burst
/// the delivery loop would otherwise sit idle for tens of milliseconds per group. `ordered`
/// turns on per-call chains (status-pusher).
///
/// It runs on a thread of its own and calls SQLite directly: every statement runs on this
/// thread, without a hand-off to another thread and back.
pub(super) fn run(conn: Connection, mut rx: mpsc::Receiver<Queued>, setup: WriterSetup) {
    let WriterSetup { ordered, stats, mut ids, handoff, durable_tx } = setup;
    let slots = handoff.slots.as_ref();
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut durable: VecDeque<Command> = VecDeque::new();
    let mut purging = purge::Cursor::default();
    let mut purges = Vec::new();
    loop {
        if durable.is_empty() {
            match rx.blocking_recv() {
                Some(queued) => sort(queued, &mut group, &mut purges),
                None => break,
            }
        }
        take_waiting(&mut rx, &mut group, &mut purges);
        stats.count(&group);
        let (now_durable, light): (Vec<_>, Vec<_>) = group.drain(..).partition(Command::is_durable);
        durable.extend(now_durable);
        let chunk = next_chunk(&mut durable);
        for (commands, must_sync) in [(light, false), (chunk, true)] {
            if commands.is_empty() {
                continue;
            }
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            let ctx = Plan { ids: &mut ids, ordered, slots };
            let before = conn.total_changes();
            let (finishes, commit, handed) = apply_group(&conn, commands, ctx);
            let wrote = conn.total_changes() > before;
            if must_sync {
                let _ = durable_tx.send(Committed { finishes, commit, handed, wrote });
            } else {
                stats.health.record(&commit, wrote);
                if commit.is_err() {
                    // Whatever it claimed or scheduled is back in the database.
                    slots.mark_all_backlogged();
                }
                syncer::hand_over(&handoff, handed, commit.is_ok());
                finishes.into_iter().for_each(|f| f(commit.clone()));
            }
        }
        for (policy, now, reply) in purges.drain(..) {
            let started = std::time::Instant::now();
            let result = purge::batch(&conn, &mut purging, &policy, now).map_err(StoreError::statement);
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            stats.longest_purge_micros.fetch_max(took, Ordering::Relaxed);
            let wrote = result.as_ref().is_ok_and(|r| r.events > 0);
            stats.health.record(&result.as_ref().map(drop), wrote);
            let _ = reply.send(result);
        }
    }
    drop(durable_tx);
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the outbox writer's connection");
    }
}

/// A purge batch waiting for the end of the writer's turn.
type PurgeRequest = (RetentionPolicy, i64, Reply<PurgeReport>);

/// Puts a queued request where it is applied.
fn sort(queued: Queued, group: &mut Vec<Command>, purges: &mut Vec<PurgeRequest>) {
    match queued {
        Queued::Unit(command) => group.push(command),
        Queued::Purge { policy, now, reply } => purges.push((policy, now, reply)),
    }
}

/// Adds whatever is queued now to `group` (and `purges`), without waiting.
fn take_waiting(rx: &mut mpsc::Receiver<Queued>, group: &mut Vec<Command>, purges: &mut Vec<PurgeRequest>) {
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(queued) => sort(queued, group, purges),
            Err(_) => break,
        }
    }
}

/// Takes the oldest durable commands, up to [`MAX_GROUP_EVENTS`] events (a request is never
/// split, so one larger request makes a chunk of its own), which bounds both the memory one
/// transaction's planning takes and how long a claim can wait behind it.
fn next_chunk(waiting: &mut VecDeque<Command>) -> Vec<Command> {
    take_chunk(waiting, |command| match command {
        Command::Ingest { items, .. } => items.len(),
        _ => 1,
    })
}

/// The oldest of `waiting`, up to [`MAX_GROUP_EVENTS`] of `events` (at least one).
fn take_chunk<T>(waiting: &mut VecDeque<T>, events: impl Fn(&T) -> usize) -> Vec<T> {
    let mut chunk = Vec::new();
    let mut total = 0;
    while let Some(next) = waiting.front() {
        let n = events(next);
        if !chunk.is_empty() && total + n > MAX_GROUP_EVENTS {
            break;
        }
        total += n;
        chunk.extend(waiting.pop_front());
    }
    chunk
}

/// What the writer needs besides its connection and queue.
pub(super) struct WriterSetup {
    /// Per-call chains on (status-pusher).
    pub ordered: bool,
    /// Counters for `/v1/stats`.
    pub stats: Arc<WriterStats>,
    /// Next row ids.
    pub ids: RowIds,
    /// Where new deliveries go at once.
    pub handoff: Arc<Handoff>,
    /// The [`syncer`]'s queue: committed durable groups waiting for their fsync.
    pub durable_tx: mpsc::UnboundedSender<Committed>,
}

impl Command {
    /// Must survive a power loss before it is answered.
    fn is_durable(&self) -> bool {
        matches!(self, Command::Ingest { .. } | Command::Redeliver { .. } | Command::Pause { .. })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::{config::Service, outbox::sqlite::Outbox, schema, slots::Slots, testing};

    /// One CDR of call `call_id`, for no subscriber.
    fn cdr(call_id: &str) -> Vec<IngestItem> {
        let event = schema::validate_body(Service::Cdr, &testing::seed_cdr(call_id)).expect("valid").remove(0);
        vec![IngestItem { event: event.into_stored(), event_id: format!("id-{call_id}"), subscribers: vec![] }]
    }

    /// Polls `done` every millisecond for up to 5 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn requests_that_wait_for_the_writer_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let (deliveries, _handed) = mpsc::unbounded_channel();
        let handoff = Handoff { slots: Arc::new(Slots::new(10, 10, std::iter::empty::<&str>())), deliveries };
        let (outbox, _writer) =
            Outbox::open(&format!("sqlite://{}", path.display()), Service::Cdr, handoff).await.unwrap();
        // Another connection holds the write lock: the writer's first transaction waits for it.
        let lock = Connection::open(&path).unwrap();
        lock.execute_batch("BEGIN IMMEDIATE").unwrap();
        let first = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.ingest(cdr("first"), SourceNotes::default(), 0).await }
        });
        until("the writer has taken the first request", || outbox.stats.ingests.load(Ordering::Relaxed) == 1).await;
        let mut waiting = tokio::task::JoinSet::new();
        for i in 0..200 {
            let outbox = outbox.clone();
            waiting.spawn(async move { outbox.ingest(cdr(&format!("call-{i}")), SourceNotes::default(), 0).await });
        }
        let queued = || outbox.commands.max_capacity() - outbox.commands.capacity();
        until("200 requests wait in the writer's queue", || queued() == 200).await;
        lock.execute_batch("ROLLBACK").unwrap();

        assert!(matches!(first.await.unwrap(), Ok(IngestOutcome::Accepted { .. })));
        while let Some(answer) = waiting.join_next().await {
            assert!(matches!(answer.unwrap(), Ok(IngestOutcome::Accepted { .. })));
        }
        assert_eq!(outbox.stats.ingests.load(Ordering::Relaxed), 201);
        assert_eq!(outbox.stats.transactions.load(Ordering::Relaxed), 2, "the first request's, then one for the 200");
        let stored: i64 =
            Connection::open(&path).unwrap().query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 201);
    }

    #[test]
    fn chunks_stop_at_the_event_limit_and_never_split_a_request() {
        let mut waiting: VecDeque<usize> = [400, 500, 300, 1500, 10].into();
        let sizes = |w: &mut VecDeque<usize>| take_chunk(w, |n| *n);
        assert_eq!(sizes(&mut waiting), [400, 500], "a third would pass {MAX_GROUP_EVENTS}");
        assert_eq!(sizes(&mut waiting), [300]);
        assert_eq!(sizes(&mut waiting), [1500], "a larger request makes a chunk of its own");
        assert_eq!(sizes(&mut waiting), [10]);
        assert!(sizes(&mut waiting).is_empty());
    }
}
