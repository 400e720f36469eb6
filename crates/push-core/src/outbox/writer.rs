//! The single writer: group commit of ingest, claims, results and redeliveries.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
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
/// Events planned and written in one ingest transaction at most (see [`chunk_by_events`]).
const MAX_GROUP_EVENTS: usize = 2000;

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

/// The writer loop: takes every waiting command and applies them in (at most) two
/// transactions: first the delivery loop's bookkeeping, answered at once, then ingest and
/// redelivery, answered by the [`syncer`] once the commit is on disk. `ordered` turns on
/// per-call chains (status-pusher).
pub(super) async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Command>, setup: WriterSetup) {
    let WriterSetup { ordered, stats, mut ids, handoff, db_path } = setup;
    let (durable_tx, syncer) = syncer::spawn(db_path, handoff.clone());
    let slots = handoff.slots.as_ref();
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        stats.count(&group);
        let (durable, light): (Vec<_>, Vec<_>) = group.drain(..).partition(Command::is_durable);
        let mut transactions = vec![(light, false)];
        transactions.extend(chunk_by_events(durable).into_iter().map(|c| (c, true)));
        for (commands, must_sync) in transactions {
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

/// Splits ingest work into transactions of at most [`MAX_GROUP_EVENTS`] events (a request is
/// never split), which bounds the memory one transaction's planning takes.
fn chunk_by_events(commands: Vec<Command>) -> Vec<Vec<Command>> {
    let mut chunks: Vec<Vec<Command>> = Vec::new();
    let mut events = 0;
    for command in commands {
        let n = match &command {
            Command::Ingest { items, .. } => items.len(),
            _ => 1,
        };
        match chunks.last_mut() {
            Some(chunk) if events + n <= MAX_GROUP_EVENTS => chunk.push(command),
            _ => {
                chunks.push(vec![command]);
                events = 0;
            }
        }
        events += n;
    }
    chunks
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

/// Applies one non-ingest command inside a savepoint, so a failing command undoes only itself.
/// Keeps the subscribers' backlog marks (see [`Slots`]) in step with what it leaves
/// claimable in the database.
async fn apply_one(tx: &mut Transaction<'_, Sqlite>, command: Command, ordered: bool, slots: &Slots) -> Finish {
    let mut sp = match tx.begin().await {
        Ok(sp) => sp,
        Err(e) => return fail(command, &e.to_string()),
    };
    macro_rules! run {
        ($reply:expr, $body:expr) => {{
            let result = $body.await;
            let done = if result.is_ok() { sp.commit().await } else { sp.rollback().await };
            finish($reply, done.map_err(anyhow::Error::from).and(result))
        }};
    }
    match command {
        Command::Cycle { done, wants, now, reply } => run!(reply, async {
            deliveries::complete(&mut sp, &done, ordered).await?;
            // A retry falls due later; a finished status lets the next one of its call go.
            for c in done.iter().filter(|c| ordered || matches!(c.next, NextState::RetryAt(_))) {
                slots.mark_backlog(&c.subscriber);
            }
            let batch = deliveries::claim(&mut sp, &wants, now).await?;
            batch.drained.iter().for_each(|s| slots.clear_backlog(s));
            Ok(batch)
        }),
        Command::Redeliver { filter, now, reply } => {
            slots.mark_all_backlogged();
            run!(reply, deliveries::redeliver(&mut sp, &filter, now, ordered))
        }
        Command::ReleaseClaims { reply } => {
            slots.mark_all_backlogged();
            run!(reply, deliveries::release_claims(&mut sp))
        }
        Command::Ingest { reply, .. } => {
            let _ = sp.rollback().await;
            fail(Command::Ingest { items: vec![], now: 0, reply }, "ingest is applied in bulk")
        }
    }
}
