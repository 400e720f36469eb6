//! The single writer: group commit of ingest, claims, results and redeliveries.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use sqlx::{Connection as _, Row as _, SqliteConnection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::{Accepted, ClaimBatch, Claimed, Completion, IngestItem, IngestOutcome, NextState, RedeliverFilter};

type Sqlite = sqlx::Sqlite;
type Reply<T> = oneshot::Sender<anyhow::Result<T>>;

/// Commands applied in one transaction at most.
const MAX_GROUP: usize = 512;

/// Counters of the writer's work: how well group commit batches, how often the delivery loop
/// asks for work. Read by `/v1/stats`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed (one fsync each).
    pub transactions: AtomicU64,
    /// Ingest requests stored.
    pub ingests: AtomicU64,
    /// Claims made by the delivery loop.
    pub claims: AtomicU64,
}

impl WriterStats {
    fn count(&self, group: &[Command]) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let ingests = group.iter().filter(|c| matches!(c, Command::Ingest { .. })).count() as u64;
        let claims = group.iter().filter(|c| matches!(c, Command::Claim { .. })).count() as u64;
        self.ingests.fetch_add(ingests, Ordering::Relaxed);
        self.claims.fetch_add(claims, Ordering::Relaxed);
    }
}

/// A request to the writer.
pub(super) enum Command {
    Ingest {
        items: Vec<IngestItem>,
        now: i64,
        reply: Reply<IngestOutcome>,
    },
    Claim {
        wants: Vec<(String, usize)>,
        now: i64,
        reply: Reply<ClaimBatch>,
    },
    Complete {
        done: Vec<Completion>,
        reply: Reply<()>,
    },
    Redeliver {
        filter: RedeliverFilter,
        now: i64,
        reply: Reply<u64>,
    },
    ReleaseClaims {
        reply: Reply<()>,
    },
}

/// Sends a command's result once the commit's fate is known.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;

fn finish<T: Send + 'static>(reply: Reply<T>, result: anyhow::Result<T>) -> Finish {
    Box::new(move |commit| {
        let result = match commit {
            Ok(()) => result,
            Err(e) => Err(anyhow::anyhow!("outbox commit failed: {e}")),
        };
        let _ = reply.send(result);
    })
}

/// The writer loop: takes every waiting command, applies them in one transaction, commits
/// once, then answers them all. `ordered` turns on per-call chains (status-pusher).
pub(super) async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Command>,
    ordered: bool,
    stats: Arc<WriterStats>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        stats.count(&group);
        let finishes = apply_group(&mut conn, group.drain(..), ordered).await;
        match finishes {
            Ok((finishes, commit)) => finishes.into_iter().for_each(|f| f(commit.clone())),
            Err((finishes, e)) => finishes.into_iter().for_each(|f| f(Err(e.clone()))),
        }
    }
    let _ = conn.close().await;
}

type GroupResult = Result<(Vec<Finish>, Result<(), String>), (Vec<Finish>, String)>;

async fn apply_group(conn: &mut SqliteConnection, group: impl Iterator<Item = Command>, ordered: bool) -> GroupResult {
    let mut finishes = Vec::new();
    let mut tx = match conn.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            let msg = e.to_string();
            group.for_each(|c| fail(c, &msg));
            return Err((finishes, msg));
        }
    };
    for command in group {
        finishes.push(apply_one(&mut tx, command, ordered).await);
    }
    let commit = tx.commit().await.map_err(|e| {
        tracing::error!(error = %e, "outbox commit failed");
        e.to_string()
    });
    Ok((finishes, commit))
}

fn fail(command: Command, msg: &str) {
    fn err<T>(msg: &str) -> anyhow::Result<T> {
        Err(anyhow::anyhow!("outbox unavailable: {msg}"))
    }
    match command {
        Command::Ingest { reply, .. } => drop(reply.send(err(msg))),
        Command::Claim { reply, .. } => drop(reply.send(err(msg))),
        Command::Complete { reply, .. } => drop(reply.send(err(msg))),
        Command::Redeliver { reply, .. } => drop(reply.send(err(msg))),
        Command::ReleaseClaims { reply } => drop(reply.send(err(msg))),
    }
}

/// Applies one command inside a savepoint, so a failing command undoes only itself.
async fn apply_one(tx: &mut Transaction<'_, Sqlite>, command: Command, ordered: bool) -> Finish {
    let mut sp = match tx.begin().await {
        Ok(sp) => sp,
        Err(e) => {
            let msg = e.to_string();
            return Box::new(move |_| fail(command, &msg));
        }
    };
    macro_rules! run {
        ($reply:expr, $body:expr, $keep:expr) => {{
            let result = $body.await;
            let keep = $keep(&result);
            let done = if keep { sp.commit().await } else { sp.rollback().await };
            let result = done.map_err(anyhow::Error::from).and(result);
            finish($reply, result)
        }};
    }
    match command {
        Command::Ingest { items, now, reply } => {
            run!(reply, ingest(&mut sp, &items, now, ordered), |r: &anyhow::Result<
                IngestOutcome,
            >| matches!(
                r,
                Ok(IngestOutcome::Accepted(_))
            ))
        }
        Command::Claim { wants, now, reply } => {
            run!(reply, claim(&mut sp, &wants, now), |r: &anyhow::Result<_>| r.is_ok())
        }
        Command::Complete { done, reply } => {
            run!(reply, complete(&mut sp, &done, ordered), |r: &anyhow::Result<_>| r
                .is_ok())
        }
        Command::Redeliver { filter, now, reply } => {
            run!(
                reply,
                redeliver(&mut sp, &filter, now, ordered),
                |r: &anyhow::Result<_>| r.is_ok()
            )
        }
        Command::ReleaseClaims { reply } => {
            run!(reply, release(&mut sp), |r: &anyhow::Result<_>| r.is_ok())
        }
    }
}

/// Clears claims a previous process left behind: their attempts never finished.
pub(super) async fn reset_claims(conn: &mut SqliteConnection) -> anyhow::Result<()> {
    sqlx::query("UPDATE deliveries SET claimed = 0 WHERE claimed = 1")
        .execute(conn)
        .await?;
    Ok(())
}

async fn release(tx: &mut SqliteConnection) -> anyhow::Result<()> {
    sqlx::query("UPDATE deliveries SET claimed = 0 WHERE claimed = 1")
        .execute(tx)
        .await?;
    Ok(())
}

async fn ingest(
    tx: &mut SqliteConnection,
    items: &[IngestItem],
    now: i64,
    ordered: bool,
) -> anyhow::Result<IngestOutcome> {
    let mut accepted = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let event = &item.event;
        let existing: Option<String> = sqlx::query_scalar("SELECT event_id FROM events WHERE dedup_key = ?1")
            .bind(event.dedup_key())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(event_id) = existing {
            accepted.push(Accepted {
                call_id: event.call_id.clone(),
                event_id,
                duplicate: true,
            });
            continue;
        }
        let sequence = match &event.status {
            Some(_) => {
                let hung_up = sqlx::query("SELECT 1 FROM events WHERE dedup_key = ?1")
                    .bind(event.hangup_key())
                    .fetch_optional(&mut *tx)
                    .await?;
                if hung_up.is_some() {
                    return Ok(IngestOutcome::AfterHangup {
                        index,
                        call_id: event.call_id.clone(),
                    });
                }
                Some(next_sequence(tx, &event.call_id).await?)
            }
            None => None,
        };
        store_event(tx, item, sequence, now, ordered).await?;
        accepted.push(Accepted {
            call_id: event.call_id.clone(),
            event_id: item.event_id.clone(),
            duplicate: false,
        });
    }
    Ok(IngestOutcome::Accepted(accepted))
}

async fn next_sequence(tx: &mut SqliteConnection, call_id: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO calls (call_id, next_sequence) VALUES (?1, 1)
         ON CONFLICT (call_id) DO UPDATE SET next_sequence = next_sequence + 1
         RETURNING next_sequence - 1",
    )
    .bind(call_id)
    .fetch_one(tx)
    .await?)
}

async fn store_event(
    tx: &mut SqliteConnection,
    item: &IngestItem,
    sequence: Option<i64>,
    now: i64,
    ordered: bool,
) -> anyhow::Result<()> {
    let event = &item.event;
    let row: i64 = sqlx::query_scalar(
        "INSERT INTO events (event_id, dedup_key, call_id, party, status, sequence, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
    )
    .bind(&item.event_id)
    .bind(event.dedup_key())
    .bind(&event.call_id)
    .bind(event.party.as_deref().unwrap_or(""))
    .bind(event.status.as_deref())
    .bind(sequence)
    .bind(event.body_json(sequence))
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    for subscriber in &item.subscribers {
        sqlx::query(
            "INSERT INTO deliveries (event_row, subscriber, call_id, sequence, blocked, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4,
                     ?6 AND EXISTS (SELECT 1 FROM deliveries
                                    WHERE subscriber = ?2 AND call_id = ?3 AND state = 'pending'),
                     ?5, ?5, ?5)",
        )
        .bind(row)
        .bind(subscriber)
        .bind(&event.call_id)
        .bind(sequence.unwrap_or(0))
        .bind(now)
        .bind(ordered)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn claim(tx: &mut SqliteConnection, wants: &[(String, usize)], now: i64) -> anyhow::Result<ClaimBatch> {
    let mut batch = ClaimBatch::default();
    for (subscriber, limit) in wants.iter().filter(|(_, n)| *n > 0) {
        let rows = sqlx::query(
            "SELECT d.id, d.call_id, d.attempts, d.round_start, e.event_id, e.payload
             FROM deliveries d JOIN events e ON e.id = d.event_row
             WHERE d.subscriber = ?1 AND d.state = 'pending' AND d.blocked = 0 AND d.claimed = 0
               AND d.next_attempt_at <= ?2
             ORDER BY d.next_attempt_at LIMIT ?3",
        )
        .bind(subscriber)
        .bind(now)
        .bind(*limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let start = batch.items.len();
        for row in rows {
            batch.items.push(Claimed {
                id: row.try_get(0)?,
                call_id: row.try_get(1)?,
                attempts: row.try_get(2)?,
                round_start: row.try_get(3)?,
                event_id: row.try_get(4)?,
                payload: row.try_get(5)?,
                subscriber: subscriber.clone(),
            });
        }
        let ids: Vec<i64> = batch.items[start..].iter().map(|c| c.id).collect();
        if !ids.is_empty() {
            sqlx::query("UPDATE deliveries SET claimed = 1 WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(serde_json::to_string(&ids)?)
                .execute(&mut *tx)
                .await?;
        }
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM deliveries
             WHERE subscriber = ?1 AND state = 'pending' AND blocked = 0 AND claimed = 0",
        )
        .bind(subscriber)
        .fetch_one(&mut *tx)
        .await?;
        batch.next_due = match (batch.next_due, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(batch)
}

async fn complete(tx: &mut SqliteConnection, done: &[Completion], ordered: bool) -> anyhow::Result<()> {
    for c in done {
        sqlx::query("INSERT OR REPLACE INTO attempts (delivery_id, attempt, at, status, error, latency_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .bind(c.id)
            .bind(c.attempt)
            .bind(c.at)
            .bind(c.status)
            .bind(c.error.as_deref())
            .bind(c.latency_ms)
            .execute(&mut *tx)
            .await?;
        let (state, next_at, delivered_at) = match c.next {
            NextState::Delivered => ("delivered", None, Some(c.at + c.latency_ms)),
            NextState::RetryAt(at) => ("pending", Some(at), None),
            NextState::Dead => ("dead", None, None),
        };
        sqlx::query(
            "UPDATE deliveries SET state = ?2, claimed = 0, attempts = ?3,
                 next_attempt_at = COALESCE(?4, next_attempt_at), last_status = ?5, last_error = ?6,
                 delivered_at = ?7, updated_at = ?8
             WHERE id = ?1",
        )
        .bind(c.id)
        .bind(state)
        .bind(c.attempt)
        .bind(next_at)
        .bind(c.status)
        .bind(c.error.as_deref())
        .bind(delivered_at)
        .bind(c.at + c.latency_ms)
        .execute(&mut *tx)
        .await?;
        if ordered && !matches!(c.next, NextState::RetryAt(_)) {
            unblock_chain_head(tx, &c.subscriber, &c.call_id).await?;
        }
    }
    Ok(())
}

/// Lets the earliest unfinished status of (subscriber, call) go, unless one is in flight.
async fn unblock_chain_head(tx: &mut SqliteConnection, subscriber: &str, call_id: &str) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE deliveries SET blocked = 0
         WHERE id = (SELECT id FROM deliveries
                     WHERE subscriber = ?1 AND call_id = ?2 AND state = 'pending'
                     ORDER BY sequence LIMIT 1)
           AND claimed = 0
           AND NOT EXISTS (SELECT 1 FROM deliveries
                           WHERE subscriber = ?1 AND call_id = ?2 AND state = 'pending' AND claimed = 1)",
    )
    .bind(subscriber)
    .bind(call_id)
    .execute(tx)
    .await?;
    Ok(())
}

async fn redeliver(
    tx: &mut SqliteConnection,
    filter: &RedeliverFilter,
    now: i64,
    ordered: bool,
) -> anyhow::Result<u64> {
    let rows = sqlx::query(
        "UPDATE deliveries SET state = 'pending', blocked = ?5, round_start = attempts,
             next_attempt_at = ?4, updated_at = ?4, delivered_at = NULL
         WHERE state != 'pending'
           AND (?1 IS NULL OR id = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR subscriber = ?3)
         RETURNING subscriber, call_id",
    )
    .bind(filter.id)
    .bind(filter.state.as_deref())
    .bind(filter.subscriber.as_deref())
    .bind(now)
    .bind(ordered)
    .fetch_all(&mut *tx)
    .await?;
    let count = rows.len() as u64;
    if ordered {
        let mut chains: Vec<(String, String)> = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        chains.sort();
        chains.dedup();
        for (subscriber, call_id) in chains {
            sqlx::query("UPDATE deliveries SET blocked = 1 WHERE subscriber = ?1 AND call_id = ?2 AND state = 'pending' AND claimed = 0")
                .bind(&subscriber)
                .bind(&call_id)
                .execute(&mut *tx)
                .await?;
            unblock_chain_head(tx, &subscriber, &call_id).await?;
        }
    }
    Ok(count)
}
