//! The single writer: group commit of ingest, claims, results and redeliveries.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use sqlx::{Connection as _, SqliteConnection, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::slots::Slots;

use super::{
    deliveries,
    ingest::{self, Plan, Request, RowIds},
    syncer::{self, Committed},
    ClaimBatch, Claimed, Completion, Handoff, IngestItem, IngestOutcome, NextState, RedeliverFilter,
};

type Sqlite = sqlx::Sqlite;
type Reply<T> = oneshot::Sender<anyhow::Result<T>>;

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
    Ingest { items: Vec<IngestItem>, now: i64, reply: Reply<IngestOutcome> },
    Cycle { done: Arc<Vec<Completion>>, wants: Vec<(String, usize)>, now: i64, reply: Reply<ClaimBatch> },
    Redeliver { filter: RedeliverFilter, now: i64, reply: Reply<u64> },
    ReleaseClaims { reply: Reply<()> },
}

/// Sends a command's result once the commit's fate is known.
pub(super) type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;

fn finish<T: Send + 'static>(reply: Reply<T>, result: anyhow::Result<T>) -> Finish {
    Box::new(move |commit| {
        let result = match commit {
            Ok(()) => result,
            Err(e) => Err(anyhow::anyhow!("outbox commit failed: {e}")),
        };
        let _ = reply.send(result);
    })
}

/// The writer loop. Each turn takes every waiting command and applies, in two transactions:
/// first the delivery loop's bookkeeping (claims, results), answered at once, then one chunk
/// of at most [`MAX_GROUP_EVENTS`] ingested events (and redeliveries), answered by the
/// [`syncer`] once the commit is on disk. Durable work beyond one chunk waits for the next
/// turn, so a claim never waits behind more than one chunk of ingest: under an ingest burst
/// the delivery loop would otherwise sit idle for tens of milliseconds per group. `ordered`
/// turns on per-call chains (status-pusher).
pub(super) async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Command>, setup: WriterSetup) {
    let WriterSetup { ordered, stats, mut ids, handoff, db_path } = setup;
    let (durable_tx, syncer) = syncer::spawn(db_path, handoff.clone());
    let slots = handoff.slots.as_ref();
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut durable: VecDeque<Command> = VecDeque::new();
    loop {
        if durable.is_empty() {
            if rx.recv_many(&mut group, MAX_GROUP).await == 0 {
                break;
            }
        } else {
            take_waiting(&mut rx, &mut group);
        }
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
            let (finishes, commit, handed) = apply_group(&mut conn, commands, ctx).await;
            if must_sync {
                let _ = durable_tx.send(Committed { finishes, commit, handed });
            } else {
                if commit.is_err() {
                    // Whatever it claimed or scheduled is back in the database.
                    slots.mark_all_backlogged();
                }
                syncer::hand_over(&handoff, handed, commit.is_ok());
                finishes.into_iter().for_each(|f| f(commit.clone()));
            }
        }
    }
    drop(durable_tx);
    let _ = syncer.await;
    let _ = conn.close().await;
}

/// Adds whatever is queued now to `group`, without waiting.
fn take_waiting(rx: &mut mpsc::Receiver<Command>, group: &mut Vec<Command>) {
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(command) => group.push(command),
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
    /// The database file (its `-wal` is what the syncer fsyncs).
    pub db_path: std::path::PathBuf,
}

impl Command {
    /// Must survive a power loss before it is answered.
    fn is_durable(&self) -> bool {
        matches!(self, Command::Ingest { .. } | Command::Redeliver { .. })
    }
}

async fn apply_group(
    conn: &mut SqliteConnection,
    group: Vec<Command>,
    ctx: Plan<'_>,
) -> (Vec<Finish>, Result<(), String>, Vec<Claimed>) {
    let (ordered, slots) = (ctx.ordered, ctx.slots);
    if let [Command::Cycle { .. } | Command::Redeliver { .. } | Command::ReleaseClaims { .. }] = group.as_slice() {
        let command = group.into_iter().next().expect("one command");
        return apply_alone(conn, command, ordered, slots).await;
    }
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let finishes = group.into_iter().map(|c| fail(c, &e.to_string())).collect();
            return (finishes, Err(e.to_string()), Vec::new());
        }
    };
    // Ingest first, in bulk; the other commands see its rows (a completion then unblocks a
    // status stored behind it in this group, a claim may take new work at once).
    let (ingests, others): (Vec<_>, Vec<_>) = group.into_iter().partition(|c| matches!(c, Command::Ingest { .. }));
    let (mut finishes, handed) = apply_ingests(&mut tx, ingests, ctx).await;
    for command in others {
        finishes.push(apply_one(&mut tx, command, ordered, slots).await);
    }
    let commit = tx.commit().await.map_err(|e| {
        tracing::error!(error = %e, "outbox commit failed");
        e.to_string()
    });
    (finishes, commit, handed)
}

/// A group of one non-ingest command (the delivery loop's usual round trip): its transaction
/// is all the undo it needs, which saves the savepoint's two round trips to SQLite.
async fn apply_alone(
    conn: &mut SqliteConnection,
    command: Command,
    ordered: bool,
    slots: &Slots,
) -> (Vec<Finish>, Result<(), String>, Vec<Claimed>) {
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => return (vec![fail(command, &e.to_string())], Err(e.to_string()), Vec::new()),
    };
    let ran = run_command(&mut tx, command, ordered, slots).await;
    if !ran.ok() {
        let undone = tx.rollback().await;
        // Whatever it had claimed or scheduled is back in the database.
        slots.mark_all_backlogged();
        return (vec![ran.finish(undone)], Ok(()), Vec::new());
    }
    let commit = tx.commit().await;
    let reported = commit.as_ref().map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "outbox commit failed");
        e.to_string()
    });
    (vec![ran.finish(commit)], reported, Vec::new())
}

/// A command that could not run: its caller gets the storage error.
fn fail(command: Command, msg: &str) -> Finish {
    fn err<T>(msg: &str) -> anyhow::Result<T> {
        Err(anyhow::anyhow!("outbox unavailable: {msg}"))
    }
    match command {
        Command::Ingest { reply, .. } => finish(reply, err(msg)),
        Command::Cycle { reply, .. } => finish(reply, err(msg)),
        Command::Redeliver { reply, .. } => finish(reply, err(msg)),
        Command::ReleaseClaims { reply } => finish(reply, err(msg)),
    }
}

/// Applies every ingest request of the group in one savepoint.
async fn apply_ingests(
    tx: &mut Transaction<'_, Sqlite>,
    ingests: Vec<Command>,
    ctx: Plan<'_>,
) -> (Vec<Finish>, Vec<Claimed>) {
    let requests: Vec<_> = ingests
        .into_iter()
        .filter_map(|c| match c {
            Command::Ingest { items, now, reply } => Some((items, now, reply)),
            _ => None,
        })
        .collect();
    if requests.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let planned: Vec<Request<'_>> = requests.iter().map(|(items, now, _)| Request { items, now: *now }).collect();
    let result = ingest_in_savepoint(tx, &planned, ctx).await;
    drop(planned);
    match result {
        Ok((outcomes, handed)) => {
            let finishes = requests.into_iter().zip(outcomes).map(|((_, _, reply), o)| finish(reply, Ok(o))).collect();
            (finishes, handed)
        }
        Err(e) => {
            tracing::error!(error = %e, "bulk ingest failed");
            let msg = e.to_string();
            let finishes =
                requests.into_iter().map(|(_, _, reply)| finish(reply, Err(anyhow::anyhow!("{msg}")))).collect();
            (finishes, Vec::new())
        }
    }
}

/// Runs the bulk ingest in a savepoint; on failure nothing of it stays, ids and slots included.
async fn ingest_in_savepoint(
    tx: &mut Transaction<'_, Sqlite>,
    planned: &[Request<'_>],
    ctx: Plan<'_>,
) -> anyhow::Result<(Vec<IngestOutcome>, Vec<Claimed>)> {
    let before = *ctx.ids;
    let slots = ctx.slots;
    let mut sp = tx.begin().await?;
    let result = match ingest::apply(&mut sp, planned, Plan { ids: &mut *ctx.ids, ..ctx }).await {
        Ok((outcomes, handed)) => match sp.commit().await {
            Ok(()) => Ok((outcomes, handed)),
            Err(e) => {
                ingest::give_back(slots, &handed);
                Err(e.into())
            }
        },
        Err(e) => {
            let _ = sp.rollback().await;
            Err(e)
        }
    };
    if result.is_err() {
        *ctx.ids = before;
    }
    result
}

/// A non-ingest command that has run, with its answer not yet sent: whether it is kept
/// depends on the commit (or savepoint release) that follows.
enum Ran {
    Cycle(Reply<ClaimBatch>, anyhow::Result<ClaimBatch>),
    Redeliver(Reply<u64>, anyhow::Result<u64>),
    ReleaseClaims(Reply<()>, anyhow::Result<()>),
    Refused(Finish),
}

impl Ran {
    fn ok(&self) -> bool {
        match self {
            Ran::Cycle(_, r) => r.is_ok(),
            Ran::Redeliver(_, r) => r.is_ok(),
            Ran::ReleaseClaims(_, r) => r.is_ok(),
            Ran::Refused(_) => false,
        }
    }

    /// The answer, given how keeping (or undoing) the command's changes went.
    fn finish(self, kept: Result<(), sqlx::Error>) -> Finish {
        fn with<T>(kept: Result<(), sqlx::Error>, r: anyhow::Result<T>) -> anyhow::Result<T> {
            kept.map_err(anyhow::Error::from).and(r)
        }
        match self {
            Ran::Cycle(reply, r) => finish(reply, with(kept, r)),
            Ran::Redeliver(reply, r) => finish(reply, with(kept, r)),
            Ran::ReleaseClaims(reply, r) => finish(reply, with(kept, r)),
            Ran::Refused(f) => f,
        }
    }
}

/// Applies one non-ingest command inside a savepoint, so a failing command undoes only itself.
async fn apply_one(tx: &mut Transaction<'_, Sqlite>, command: Command, ordered: bool, slots: &Slots) -> Finish {
    let mut sp = match tx.begin().await {
        Ok(sp) => sp,
        Err(e) => return fail(command, &e.to_string()),
    };
    let ran = run_command(&mut sp, command, ordered, slots).await;
    let kept = if ran.ok() { sp.commit().await } else { sp.rollback().await };
    ran.finish(kept)
}

/// Runs one non-ingest command. Keeps the subscribers' backlog marks (see [`Slots`]) in step
/// with what it leaves claimable in the database.
async fn run_command(conn: &mut SqliteConnection, command: Command, ordered: bool, slots: &Slots) -> Ran {
    match command {
        Command::Cycle { done, wants, now, reply } => {
            let result = async {
                deliveries::complete(conn, &done, ordered).await?;
                // A retry falls due later; a finished status lets the next one of its call go.
                for c in done.iter().filter(|c| ordered || matches!(c.next, NextState::RetryAt(_))) {
                    slots.mark_backlog(&c.subscriber);
                }
                let batch = deliveries::claim(conn, &wants, now).await?;
                batch.drained.iter().for_each(|s| slots.clear_backlog(s));
                Ok(batch)
            }
            .await;
            Ran::Cycle(reply, result)
        }
        Command::Redeliver { filter, now, reply } => {
            slots.mark_all_backlogged();
            Ran::Redeliver(reply, deliveries::redeliver(conn, &filter, now, ordered).await)
        }
        Command::ReleaseClaims { reply } => {
            slots.mark_all_backlogged();
            Ran::ReleaseClaims(reply, deliveries::release_claims(conn).await)
        }
        Command::Ingest { reply, .. } => {
            Ran::Refused(fail(Command::Ingest { items: vec![], now: 0, reply }, "ingest is applied in bulk"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::sql_tests::{delivery, migrated};

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

    #[tokio::test]
    async fn a_failing_command_alone_answers_its_own_error_and_changes_nothing() {
        let (_dir, mut conn) = migrated().await;
        delivery(&mut conn, 1, "a", 0, false).await;
        sqlx::query("UPDATE deliveries SET claimed = 1").execute(&mut conn).await.unwrap();
        // Recording the result works; the claim after it fails (its statement reads events).
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut conn).await.unwrap();
        sqlx::query("DROP TABLE events").execute(&mut conn).await.unwrap();
        let slots = Slots::new(10, 5, ["a"]);
        slots.clear_backlog("a");
        let completion = Completion {
            id: 1,
            subscriber: "a".into(),
            call_id: "ev-1".into(),
            attempt: 1,
            at: 0,
            status: Some(200),
            error: None,
            latency_ms: 1,
            next: NextState::Delivered,
        };
        let (reply, answer) = oneshot::channel();
        let cycle = Command::Cycle { done: Arc::new(vec![completion]), wants: vec![("a".into(), 5)], now: 0, reply };
        let mut ids = RowIds::default();
        let plan = Plan { ids: &mut ids, ordered: false, slots: &slots };
        let (finishes, commit, handed) = apply_group(&mut conn, vec![cycle], plan).await;
        assert!(handed.is_empty());
        finishes.into_iter().for_each(|f| f(commit.clone()));
        let err = answer.await.expect("answered").expect_err("the claim failed");
        assert!(err.to_string().contains("no such table: events"), "its own error, not a generic one: {err}");
        let row: (String, i64) =
            sqlx::query_as("SELECT state, claimed FROM deliveries WHERE id = 1").fetch_one(&mut conn).await.unwrap();
        assert_eq!(row, ("pending".to_string(), 1), "the recorded result was undone with the claim");
        assert!(!slots.hand_over_one("a"), "the backlog is marked again: what it changed is back in the database");
    }
}
