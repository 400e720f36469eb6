//! One writer group applied in one transaction: bulk ingest, then the delivery loop's and the
//! operations API's commands, each as a unit that either stays whole or leaves no trace.

use sqlx::{Connection as _, SqliteConnection, Transaction};

use crate::slots::Slots;

use super::{
    deliveries,
    ingest::{self, Plan, Request},
    writer::{finish, Command, Finish, Reply},
    ClaimBatch, Claimed, IngestOutcome, NextState,
};

type Sqlite = sqlx::Sqlite;

/// Applies one group in one transaction: its ingest requests first, in bulk (the other
/// commands see their rows: a completion then unblocks a status stored behind it, a claim
/// may take new work at once), then each other command. When the transaction holds more
/// than one of these units, each runs in a savepoint, so a failing one undoes only itself;
/// a unit alone (the delivery loop's usual round trip, or an ingest chunk) needs no
/// savepoint: the transaction is rolled back instead, which saves two round trips to SQLite.
pub(super) async fn apply_group(
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
    let (ingests, others): (Vec<_>, Vec<_>) = group.into_iter().partition(|c| matches!(c, Command::Ingest { .. }));
    let savepoints = usize::from(!ingests.is_empty()) + others.len() > 1;
    let (mut finishes, handed, mut keep) = apply_ingests(&mut tx, ingests, ctx, savepoints).await;
    for command in others {
        let (finish, kept) = apply_one(&mut tx, command, ordered, slots, savepoints).await;
        finishes.push(finish);
        keep &= kept;
    }
    if !keep {
        // A unit alone failed: each answer carries its own error; whatever it had claimed
        // or scheduled is back in the database.
        let _ = tx.rollback().await;
        slots.mark_all_backlogged();
        return (finishes, Ok(()), Vec::new());
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

/// Applies every ingest request of the group as one unit (see [`apply_group`]). Also
/// returns whether the transaction may be committed (false: the unit failed without a
/// savepoint).
async fn apply_ingests(
    tx: &mut Transaction<'_, Sqlite>,
    ingests: Vec<Command>,
    ctx: Plan<'_>,
    savepoint: bool,
) -> (Vec<Finish>, Vec<Claimed>, bool) {
    let requests: Vec<_> = ingests
        .into_iter()
        .filter_map(|c| match c {
            Command::Ingest { items, now, reply } => Some((items, now, reply)),
            _ => None,
        })
        .collect();
    if requests.is_empty() {
        return (Vec::new(), Vec::new(), true);
    }
    let planned: Vec<Request<'_>> = requests.iter().map(|(items, now, _)| Request { items, now: *now }).collect();
    let result = ingest_unit(tx, &planned, ctx, savepoint).await;
    drop(planned);
    match result {
        Ok((outcomes, handed)) => {
            let finishes = requests.into_iter().zip(outcomes).map(|((_, _, reply), o)| finish(reply, Ok(o))).collect();
            (finishes, handed, true)
        }
        Err(e) => {
            tracing::error!(error = %e, "bulk ingest failed");
            let msg = e.to_string();
            let finishes =
                requests.into_iter().map(|(_, _, reply)| finish(reply, Err(anyhow::anyhow!("{msg}")))).collect();
            (finishes, Vec::new(), savepoint)
        }
    }
}

/// Runs the bulk ingest, in a savepoint if asked; on failure nothing of it stays, ids and
/// slots included (without a savepoint, the caller rolls the transaction back).
async fn ingest_unit(
    tx: &mut Transaction<'_, Sqlite>,
    planned: &[Request<'_>],
    ctx: Plan<'_>,
    savepoint: bool,
) -> anyhow::Result<(Vec<IngestOutcome>, Vec<Claimed>)> {
    let before = *ctx.ids;
    let slots = ctx.slots;
    let result = if savepoint {
        let mut sp = tx.begin().await?;
        match ingest::apply(&mut sp, planned, Plan { ids: &mut *ctx.ids, ..ctx }).await {
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
        }
    } else {
        ingest::apply(tx, planned, Plan { ids: &mut *ctx.ids, ..ctx }).await
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

/// Applies one non-ingest command as one unit (see [`apply_group`]); also returns whether the
/// transaction may be committed (false: it failed without a savepoint).
async fn apply_one(
    tx: &mut Transaction<'_, Sqlite>,
    command: Command,
    ordered: bool,
    slots: &Slots,
    savepoint: bool,
) -> (Finish, bool) {
    if !savepoint {
        let ran = run_command(tx, command, ordered, slots).await;
        let ok = ran.ok();
        return (ran.finish(Ok(())), ok);
    }
    let mut sp = match tx.begin().await {
        Ok(sp) => sp,
        Err(e) => return (fail(command, &e.to_string()), true),
    };
    let ran = run_command(&mut sp, command, ordered, slots).await;
    let kept = if ran.ok() { sp.commit().await } else { sp.rollback().await };
    (ran.finish(kept), true)
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
    use std::sync::Arc;

    use tokio::sync::oneshot;

    use super::*;
    use crate::outbox::{
        ingest::RowIds,
        sql_tests::{delivery, migrated},
        Completion,
    };

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
