//! One writer group applied in one transaction: bulk ingest, then the delivery loop's and the
//! operations API's commands, each as a unit that either stays whole or leaves no trace.

use std::sync::Arc;

use rusqlite::Connection;

use super::{
    deliveries,
    ingest::{self, Plan, Request},
    supersede,
    writer::{finish, Command, Finish, Reply, Settle},
    ClaimBatch, Claimed, Completion, IngestItem, IngestOutcome, MoveReport, RedeliverFilter, SourceNotes, StoreError,
};
use crate::slots::Slots;

/// The savepoint a unit runs in when the transaction holds more than one: begun, kept, undone.
const BEGIN_UNIT: &str = "SAVEPOINT unit";
const KEEP_UNIT: &str = "RELEASE unit";
const UNDO_UNIT: &str = "ROLLBACK TO unit; RELEASE unit";

/// Applies one group in one transaction: its ingest requests first, in bulk (the other
/// commands see their rows: a completion then unblocks a status stored behind it, a claim
/// may take new work at once), then each other command. When the transaction holds more
/// than one of these units, each runs in a savepoint, so a failing one undoes only itself;
/// a unit alone (the delivery loop's usual round trip, or an ingest chunk) needs no
/// savepoint: the transaction is rolled back instead.
pub(super) fn apply_group(
    conn: &Connection,
    group: Vec<Command>,
    ctx: Plan<'_>,
) -> (Vec<Finish>, Result<(), StoreError>, Vec<Claimed>) {
    let (ordered, supersede, slots) = (ctx.ordered, ctx.supersede, ctx.slots);
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = StoreError::transaction(e);
        let finishes = group.into_iter().map(|c| fail(c, &e)).collect();
        return (finishes, Err(e), Vec::new());
    }
    let (mut ingests, mut others) = (Vec::new(), Vec::new());
    for command in group {
        match command {
            Command::Ingest { items, notes, now, reply } => ingests.push((items, notes, now, reply)),
            Command::Cycle { done, wants, now, reply } => others.push(LoopCommand::Cycle { done, wants, now, reply }),
            Command::Redeliver { filter, now, reply } => others.push(LoopCommand::Redeliver { filter, now, reply }),
            Command::ReleaseClaims { reply } => others.push(LoopCommand::ReleaseClaims { reply }),
            Command::Pause { subscriber, paused, now, reply } => {
                others.push(LoopCommand::Pause { subscriber, paused, now, reply })
            }
            Command::Settle { settle, now, reply } => others.push(LoopCommand::Settle { settle, now, reply }),
        }
    }
    let savepoints = usize::from(!ingests.is_empty()) + others.len() > 1;
    let (mut finishes, handed, mut keep) = apply_ingests(conn, ingests, ctx, savepoints);
    for command in others {
        let (finish, kept) = apply_one(conn, command, (ordered, supersede), slots, savepoints);
        finishes.push(finish);
        keep &= kept;
    }
    if !keep {
        // A unit alone failed: each answer carries its own error; whatever it had claimed
        // or scheduled is back in the database.
        let _ = conn.execute_batch("ROLLBACK");
        slots.mark_all_backlogged();
        return (finishes, Ok(()), Vec::new());
    }
    let commit = conn.execute_batch("COMMIT").map_err(|e| {
        tracing::error!(error = %e, "outbox commit failed");
        // A failed COMMIT may leave the transaction open; nothing of it may stay.
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::transaction(e)
    });
    (finishes, commit, handed)
}

/// A command that could not run: its caller gets the storage error.
fn fail(command: Command, e: &StoreError) -> Finish {
    match command {
        Command::Ingest { reply, .. } => finish(reply, Err(e.clone())),
        Command::Cycle { reply, .. } => finish(reply, Err(e.clone())),
        Command::Redeliver { reply, .. } => finish(reply, Err(e.clone())),
        Command::ReleaseClaims { reply } => finish(reply, Err(e.clone())),
        Command::Pause { reply, .. } => finish(reply, Err(e.clone())),
        Command::Settle { reply, .. } => finish(reply, Err(e.clone())),
    }
}

/// The commands that are not ingest, each applied as a unit of its own: ingest is applied
/// in bulk ([`apply_ingests`]), so it is not one of them.
enum LoopCommand {
    Cycle { done: Arc<Vec<Completion>>, wants: Vec<(String, usize)>, now: i64, reply: Reply<ClaimBatch> },
    Redeliver { filter: RedeliverFilter, now: i64, reply: Reply<u64> },
    ReleaseClaims { reply: Reply<()> },
    Pause { subscriber: String, paused: bool, now: i64, reply: Reply<()> },
    Settle { settle: Settle, now: i64, reply: Reply<MoveReport> },
}

/// An ingest request taken from its command.
type IngestRequest = (Vec<IngestItem>, SourceNotes, i64, Reply<IngestOutcome>);

/// Ends a unit's savepoint, if it has one: keeps its changes, or undoes them.
fn end_unit(conn: &Connection, savepoint: bool, ok: bool) -> rusqlite::Result<()> {
    match (savepoint, ok) {
        (false, _) => Ok(()),
        (true, true) => conn.execute_batch(KEEP_UNIT),
        (true, false) => conn.execute_batch(UNDO_UNIT),
    }
}

/// Applies every ingest request of the group as one unit (see [`apply_group`]). Also
/// returns whether the transaction may be committed (false: the unit failed without a
/// savepoint).
fn apply_ingests(
    conn: &Connection,
    requests: Vec<IngestRequest>,
    ctx: Plan<'_>,
    savepoint: bool,
) -> (Vec<Finish>, Vec<Claimed>, bool) {
    if requests.is_empty() {
        return (Vec::new(), Vec::new(), true);
    }
    let planned: Vec<Request<'_>> =
        requests.iter().map(|(items, notes, now, _)| Request { items, notes, now: *now }).collect();
    let result = ingest_unit(conn, &planned, ctx, savepoint);
    drop(planned);
    match result {
        Ok((outcomes, handed)) => {
            let finishes =
                requests.into_iter().zip(outcomes).map(|((_, _, _, reply), o)| finish(reply, Ok(o))).collect();
            (finishes, handed, true)
        }
        Err(e) => {
            tracing::error!(error = %e, "bulk ingest failed");
            let e = StoreError::statement(e);
            let finishes = requests.into_iter().map(|(_, _, _, reply)| finish(reply, Err(e.clone()))).collect();
            (finishes, Vec::new(), savepoint)
        }
    }
}

/// Runs the bulk ingest, in a savepoint if asked; on failure nothing of it stays, ids and
/// slots included (without a savepoint, the caller rolls the transaction back).
fn ingest_unit(
    conn: &Connection,
    planned: &[Request<'_>],
    ctx: Plan<'_>,
    savepoint: bool,
) -> anyhow::Result<(Vec<IngestOutcome>, Vec<Claimed>)> {
    if savepoint {
        conn.execute_batch(BEGIN_UNIT)?;
    }
    let before = *ctx.ids;
    let slots = ctx.slots;
    let result = ingest::apply(conn, planned, Plan { ids: &mut *ctx.ids, ..ctx });
    let kept = end_unit(conn, savepoint, result.is_ok());
    let result = match (result, kept) {
        (Ok(done), Ok(())) => Ok(done),
        (Ok((_, handed)), Err(e)) => {
            ingest::give_back(slots, &handed);
            Err(e.into())
        }
        (Err(e), _) => Err(e),
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
    Settle(Reply<MoveReport>, anyhow::Result<MoveReport>),
}

impl Ran {
    fn ok(&self) -> bool {
        match self {
            Ran::Cycle(_, r) => r.is_ok(),
            Ran::Redeliver(_, r) => r.is_ok(),
            Ran::ReleaseClaims(_, r) => r.is_ok(),
            Ran::Settle(_, r) => r.is_ok(),
        }
    }

    /// The answer, given how keeping (or undoing) the command's changes went.
    fn finish(self, kept: rusqlite::Result<()>) -> Finish {
        fn with<T>(kept: rusqlite::Result<()>, r: anyhow::Result<T>) -> Result<T, StoreError> {
            kept.map_err(StoreError::transaction).and(r.map_err(StoreError::statement))
        }
        match self {
            Ran::Cycle(reply, r) => finish(reply, with(kept, r)),
            Ran::Redeliver(reply, r) => finish(reply, with(kept, r)),
            Ran::ReleaseClaims(reply, r) => finish(reply, with(kept, r)),
            Ran::Settle(reply, r) => finish(reply, with(kept, r)),
        }
    }
}

/// Applies one non-ingest command as one unit (see [`apply_group`]); also returns whether the
/// transaction may be committed (false: it failed without a savepoint).
/// `chains`: per-call chains on (status-pusher), and stale statuses superseded.
fn apply_one(
    conn: &Connection,
    command: LoopCommand,
    chains: (bool, bool),
    slots: &Slots,
    savepoint: bool,
) -> (Finish, bool) {
    if savepoint {
        if let Err(e) = conn.execute_batch(BEGIN_UNIT) {
            let e = StoreError::transaction(e);
            let failed = match command {
                LoopCommand::Cycle { reply, .. } => finish(reply, Err(e)),
                LoopCommand::Redeliver { reply, .. } => finish(reply, Err(e)),
                LoopCommand::ReleaseClaims { reply } | LoopCommand::Pause { reply, .. } => finish(reply, Err(e)),
                LoopCommand::Settle { reply, .. } => finish(reply, Err(e)),
            };
            return (failed, true);
        }
    }
    let ran = run_command(conn, command, chains, slots);
    let ok = ran.ok();
    let kept = end_unit(conn, savepoint, ok);
    (ran.finish(kept), savepoint || ok)
}

/// Runs one non-ingest command. Keeps the subscribers' backlog marks (see [`Slots`]) in step
/// with what it leaves claimable in the database.
fn run_command(conn: &Connection, command: LoopCommand, (ordered, supersede): (bool, bool), slots: &Slots) -> Ran {
    match command {
        LoopCommand::Cycle { done, mut wants, now, reply } => {
            let result = (|| {
                deliveries::complete(conn, &done)?;
                // A failed status with a later one pending is given up (`status.supersede`).
                let superseded = match supersede {
                    true => supersede::retries(conn, &done, now)?,
                    false => Vec::new(),
                };
                // A status let go after the one before it is claimed with it while the loop
                // has room; the rest wait in the database.
                let chained = match ordered {
                    true => deliveries::release_chains(
                        conn,
                        &crate::outbox::stale::as_finished(&done, &superseded),
                        &mut wants,
                    )?,
                    false => Vec::new(),
                };
                // A retry falls due later, a returned claim is claimable again; a finished
                // status lets the next one of its call go.
                for c in done.iter().filter(|c| ordered || !c.next.finishes()) {
                    slots.mark_backlog(&c.subscriber);
                }
                let mut batch = deliveries::claim(conn, &wants, now)?;
                batch.unfilled.iter().filter(|(_, due)| due.is_none()).for_each(|(s, _)| slots.clear_backlog(s));
                batch.items.splice(0..0, chained);
                batch.superseded = crate::outbox::stale::per_subscriber(superseded.iter().map(|(_, s)| s.as_str()));
                Ok(batch)
            })();
            Ran::Cycle(reply, result)
        }
        LoopCommand::Redeliver { filter, now, reply } => {
            slots.mark_all_backlogged();
            Ran::Redeliver(reply, deliveries::redeliver(conn, &filter, now, ordered))
        }
        LoopCommand::ReleaseClaims { reply } => {
            slots.mark_all_backlogged();
            Ran::ReleaseClaims(reply, deliveries::release_claims(conn))
        }
        LoopCommand::Pause { subscriber, paused, now, reply } => {
            Ran::ReleaseClaims(reply, deliveries::set_paused(conn, &subscriber, paused, now))
        }
        LoopCommand::Settle { settle, now, reply } => {
            if let Settle::Move { to, .. } = &settle {
                slots.mark_backlog(to);
            }
            Ran::Settle(reply, deliveries::settle(conn, &settle, now, ordered))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::oneshot;

    use super::*;
    use crate::{
        config::Service,
        outbox::{
            sqlite::{
                ingest::RowIds,
                sql_tests::{delivery, finished, migrated},
            },
            IngestItem,
        },
        schema, testing,
    };

    #[tokio::test]
    async fn a_failing_command_in_a_group_undoes_only_itself() {
        let (_dir, conn) = migrated().await;
        delivery(&conn, 1, "a", 0, false);
        delivery(&conn, 2, "a", 0, false);
        // Delivery 1 is in flight; any claim now fails (a trigger refuses it).
        conn.execute_batch(
            "UPDATE deliveries SET claimed = 1 WHERE id = 1;
             CREATE TRIGGER refuse_claims BEFORE UPDATE OF claimed ON deliveries WHEN NEW.claimed = 1
             BEGIN SELECT RAISE(ABORT, 'claims refused'); END;",
        )
        .unwrap();
        let slots = Slots::new(10, 5, ["a"]);
        let event = schema::validate_body(Service::Cdr, &testing::seed_cdr("call-x")).expect("valid").remove(0);
        let item = IngestItem { event: event.into_stored(), event_id: "new-1".into(), subscribers: vec!["a".into()] };
        let (ingest_reply, ingest_answer) = oneshot::channel();
        let ingest = Command::Ingest { items: vec![item], notes: SourceNotes::default(), now: 0, reply: ingest_reply };
        let (cycle_reply, cycle_answer) = oneshot::channel();
        let done = Arc::new(vec![finished("ev-1", 1)]);
        let cycle = Command::Cycle { done, wants: vec![("a".into(), 5)], now: 0, reply: cycle_reply };
        let mut ids = RowIds::load(&conn).unwrap();
        let plan = Plan { ids: &mut ids, ordered: false, supersede: false, slots: &slots };

        let (finishes, commit, _handed) = apply_group(&conn, vec![cycle, ingest], plan);
        assert!(commit.is_ok(), "the group commits: {commit:?}");
        finishes.into_iter().for_each(|f| f(commit.clone()));
        let accepted = ingest_answer.await.expect("answered").expect("the ingest is kept");
        assert!(matches!(accepted, IngestOutcome::Accepted { .. }), "{accepted:?}");
        let err = cycle_answer.await.expect("answered").expect_err("the claim failed");
        assert!(err.to_string().contains("claims refused"), "its own error: {err}");
        let stored: i64 =
            conn.query_row("SELECT COUNT(*) FROM events WHERE event_id = 'new-1'", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 1, "the ingest was committed");
        let row: (String, i64) = conn
            .query_row("SELECT state, claimed FROM deliveries WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(row, ("pending".to_string(), 1), "the failed command's recorded result was undone with it");
    }

    #[tokio::test]
    async fn a_failing_command_alone_answers_its_own_error_and_changes_nothing() {
        let (_dir, conn) = migrated().await;
        delivery(&conn, 1, "a", 0, false);
        // Recording the result works; the claim after it fails (its statement reads events).
        conn.execute_batch("UPDATE deliveries SET claimed = 1; PRAGMA foreign_keys = OFF; DROP TABLE events;").unwrap();
        let slots = Slots::new(10, 5, ["a"]);
        slots.clear_backlog("a");
        let (reply, answer) = oneshot::channel();
        let cycle =
            Command::Cycle { done: Arc::new(vec![finished("ev-1", 1)]), wants: vec![("a".into(), 5)], now: 0, reply };
        let mut ids = RowIds::default();
        let plan = Plan { ids: &mut ids, ordered: false, supersede: false, slots: &slots };
        let (finishes, commit, handed) = apply_group(&conn, vec![cycle], plan);
        assert!(handed.is_empty());
        finishes.into_iter().for_each(|f| f(commit.clone()));
        let err = answer.await.expect("answered").expect_err("the claim failed");
        assert!(err.to_string().contains("no such table: events"), "its own error, not a generic one: {err}");
        let row: (String, i64) = conn
            .query_row("SELECT state, claimed FROM deliveries WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(row, ("pending".to_string(), 1), "the recorded result was undone with the claim");
        assert!(!slots.hand_over_one("a"), "the backlog is marked again: what it changed is back in the database");
    }
}
