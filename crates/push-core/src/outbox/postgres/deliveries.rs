//! Delivery state changes in PostgreSQL: leased claims, recorded results, per-call chains,
//! redelivery, release. Each delivery-loop round trip is one transaction.
//!
//! A claim sets `lease_owner` (this replica) and `lease_until` (`now` + `delivery.lease`);
//! rows are picked with `FOR UPDATE SKIP LOCKED`, so two replicas claiming at once never take
//! the same row, and a row whose lease ran out is claimable again by anyone. A result is
//! recorded only while the delivery is still this replica's (or nobody's): an attempt whose
//! lease was taken over leaves the new owner's claim alone.

use std::sync::Arc;

use sqlx::{postgres::PgRow, Postgres, Row as _, Transaction};

use super::{
    ingest::{lock_all_calls, lock_calls},
    ClaimBatch, Completion, RedeliverFilter, Shared, StoreError,
};
use crate::outbox::{chains, stale, Claimed, NextState};

type Tx<'c> = Transaction<'c, Postgres>;

/// The NOTIFY channel of a pusher's replicas.
pub(super) fn channel(ordered: bool) -> &'static str {
    match ordered {
        true => "voice_push_status",
        false => "voice_push_cdr",
    }
}

/// Tells the other replicas (at this transaction's commit) that `subscribers` have new
/// claimable work.
pub(super) async fn notify(tx: &mut Tx<'_>, shared: &Shared, subscribers: &[String]) -> sqlx::Result<()> {
    if subscribers.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, $3 || chr(31) || s) FROM unnest($2::text[]) AS s")
        .bind(channel(shared.ordered))
        .bind(subscribers)
        .bind(&shared.owner)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Lets this replica's claims go, so they are attempted again at once (by any replica). No
/// index covers `lease_owner` (a lease change is then a HOT update, see `0003_hot_leases.sql`):
/// this walks the pending rows, at start and at shutdown.
pub(super) async fn release_claims(shared: &Shared) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL WHERE state = 'pending' AND lease_owner = $1",
    )
    .bind(&shared.owner)
    .execute(&shared.pool)
    .await?;
    shared.held.lock().expect("held lock").clear();
    Ok(())
}

/// One round trip of the delivery loop in one transaction (see `Store::cycle`).
pub(super) async fn cycle(
    shared: &Shared,
    done: Arc<Vec<Completion>>,
    wants: Vec<(String, usize)>,
    now: i64,
) -> Result<ClaimBatch, StoreError> {
    if done.is_empty() && wants.iter().all(|(_, n)| *n == 0) {
        return Ok(ClaimBatch::default());
    }
    let mut tx = shared.pool.begin().await.map_err(StoreError::transaction)?;
    match round(&mut tx, shared, &done, wants, now).await {
        Ok((batch, renewed)) => {
            tx.commit().await.map_err(|e| {
                shared.slots.mark_all_backlogged();
                StoreError::transaction(e)
            })?;
            shared.counters.transactions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // What this replica holds changes only once the round is committed.
            let mut held = shared.held.lock().expect("held lock");
            for c in done.iter() {
                held.remove(&c.id);
            }
            let until = now + shared.lease_ms;
            held.extend(batch.items.iter().map(|c| (c.id, until)));
            if let Some(renewed) = renewed {
                shared.last_renewal.store(now, std::sync::atomic::Ordering::Relaxed);
                held.extend(renewed.into_iter().map(|id| (id, until)));
            }
            Ok(batch)
        }
        Err(e) => {
            drop(tx); // rolled back
            shared.slots.mark_all_backlogged();
            Err(StoreError::statement(e.into()))
        }
    }
}

async fn round(
    tx: &mut Tx<'_>,
    shared: &Shared,
    done: &[Completion],
    mut wants: Vec<(String, usize)>,
    now: i64,
) -> sqlx::Result<(ClaimBatch, Option<Vec<i64>>)> {
    let (ordered, supersede) = (shared.ordered, shared.ordered && shared.supersede);
    let renewed = renew_leases(tx, shared, done, now).await?;
    if ordered {
        // The chains' next heads (and, with `status.supersede`, the stale statuses) are
        // decided under the calls' locks, as ingest decides whether a new status is blocked
        // (see `ingest::lock_calls`).
        let decides = |c: &&Completion| c.next.finishes() || (supersede && matches!(c.next, NextState::RetryAt(_)));
        let mut calls: Vec<&str> = done.iter().filter(decides).map(|c| c.call_id.as_str()).collect();
        calls.sort_unstable();
        calls.dedup();
        lock_calls(tx, &calls).await?;
    }
    complete(tx, shared, done).await?;
    let superseded = match supersede {
        true => super::supersede::retries(tx, done, now).await?,
        false => Vec::new(),
    };
    let as_finished = stale::as_finished(done, &superseded);
    let finished = chains::finished(&as_finished);
    let chained = match ordered {
        true => release_chains(tx, shared, &finished, &mut wants, now).await?,
        false => Vec::new(),
    };
    // A retry falls due later, a returned claim is claimable again; a finished status lets
    // the next one of its call go.
    for c in done.iter().filter(|c| ordered || !c.next.finishes()) {
        shared.slots.mark_backlog(&c.subscriber);
    }
    if wants.iter().any(|(_, n)| *n > 0) {
        shared.counters.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut batch = claim(tx, shared, &wants, now).await?;
    batch.unfilled.iter().filter(|(_, due)| due.is_none()).for_each(|(s, _)| shared.slots.clear_backlog(s));
    batch.items.splice(0..0, chained);
    batch.superseded = stale::per_subscriber(superseded.iter().map(|(_, s)| s.as_str()));
    Ok((batch, renewed))
}

/// Renews this replica's leases that are past half their time; returns their ids. Every
/// claim a replica holds (running, or waiting in its delivery loop's ready queue) stays its
/// own while the replica lives and its loop turns (at least once per `delivery.timeout`
/// while attempts run): a lease runs out only when its holder died or stopped. The replica
/// knows its claims ([`Shared::held`]), so the statement names them by id; it runs at most
/// once per quarter lease (a claim past half its time is then renewed before three
/// quarters), and not for the claims this round records. `None`: not its time. The time of
/// a renewal is kept once its round is committed, so a failed round renews at the next one.
async fn renew_leases(
    tx: &mut Tx<'_>,
    shared: &Shared,
    done: &[Completion],
    now: i64,
) -> sqlx::Result<Option<Vec<i64>>> {
    let last = shared.last_renewal.load(std::sync::atomic::Ordering::Relaxed);
    if now >= last && now.saturating_sub(last) < shared.lease_ms / 4 {
        return Ok(None);
    }
    let due: Vec<i64> = {
        let held = shared.held.lock().expect("held lock");
        let late = now + shared.lease_ms / 2;
        held.iter()
            .filter(|(id, until)| **until < late && !done.iter().any(|c| c.id == **id))
            .map(|(id, _)| *id)
            .collect()
    };
    if due.is_empty() {
        return Ok(Some(due));
    }
    sqlx::query("UPDATE deliveries SET lease_until = $2 WHERE id = ANY($1) AND lease_owner = $3")
        .bind(&due)
        .bind(now + shared.lease_ms)
        .bind(&shared.owner)
        .execute(&mut **tx)
        .await?;
    Ok(Some(due))
}

/// Claims this replica leases: up to `$3` due, unblocked, unleased deliveries of subscriber
/// `$1` at `$2`, oldest due first, with their events.
const CLAIM: &str = "WITH picked AS (
         SELECT id FROM deliveries
         WHERE subscriber = $1 AND state = 'pending' AND NOT blocked AND next_attempt_at <= $2
           AND (lease_until IS NULL OR lease_until <= $2)
         ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED),
     leased AS (
         UPDATE deliveries d SET lease_owner = $4, lease_until = $5 FROM picked WHERE d.id = picked.id
         RETURNING d.id, d.call_id, d.attempts, d.round_start, d.next_attempt_at, d.event_row, d.subscriber)
     SELECT l.id, l.call_id, l.attempts, l.round_start, l.subscriber, e.event_id, e.payload
     FROM leased l JOIN events e ON e.id = l.event_row ORDER BY l.next_attempt_at, l.id";

/// When subscriber `$1`'s next delivery becomes claimable by this replica (`$2`): its due
/// time, or the end of another replica's lease on it.
const NEXT_DUE: &str = "SELECT MIN(GREATEST(next_attempt_at, COALESCE(lease_until, 0))) FROM deliveries
     WHERE subscriber = $1 AND state = 'pending' AND NOT blocked AND lease_owner IS DISTINCT FROM $2";

fn claimed_row(row: &PgRow) -> sqlx::Result<Claimed> {
    Ok(Claimed {
        id: row.try_get(0)?,
        call_id: row.try_get(1)?,
        attempts: row.try_get::<i64, _>(2)? as u32,
        round_start: row.try_get::<i64, _>(3)? as u32,
        subscriber: row.try_get(4)?,
        event_id: row.try_get(5)?,
        payload: row.try_get(6)?,
    })
}

async fn claim(tx: &mut Tx<'_>, shared: &Shared, wants: &[(String, usize)], now: i64) -> sqlx::Result<ClaimBatch> {
    let mut batch = ClaimBatch::default();
    for (subscriber, limit) in wants.iter().filter(|(_, n)| *n > 0) {
        let rows = sqlx::query(CLAIM)
            .bind(subscriber)
            .bind(now)
            .bind(*limit as i64)
            .bind(&shared.owner)
            .bind(now + shared.lease_ms)
            .fetch_all(&mut **tx)
            .await?;
        let got = rows.len();
        for row in &rows {
            batch.items.push(claimed_row(row)?);
        }
        if got >= *limit {
            continue; // more may be due already
        }
        let due: Option<i64> =
            sqlx::query_scalar(NEXT_DUE).bind(subscriber).bind(&shared.owner).fetch_one(&mut **tx).await?;
        batch.unfilled.push((subscriber.clone(), due));
    }
    Ok(batch)
}

/// Records finished attempts: the attempt log (a successful attempt lives on the delivery
/// row only, as in SQLite) and each delivery's new state, unless another replica holds it.
async fn complete(tx: &mut Tx<'_>, shared: &Shared, done: &[Completion]) -> sqlx::Result<()> {
    if done.is_empty() {
        return Ok(());
    }
    // A returned claim was never attempted: only the claim goes.
    let (returned, done): (Vec<&Completion>, Vec<&Completion>) =
        done.iter().partition(|c| c.next == NextState::Returned);
    if !returned.is_empty() {
        sqlx::query(
            "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL
             WHERE id = ANY($1) AND lease_owner = $2",
        )
        .bind(returned.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(&shared.owner)
        .execute(&mut **tx)
        .await?;
    }
    let failed: Vec<&Completion> = done.iter().copied().filter(|c| c.next != NextState::Delivered).collect();
    if !failed.is_empty() {
        sqlx::query(
            "INSERT INTO attempts (delivery_id, attempt, at, status, error, latency_ms)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[])
             ON CONFLICT (delivery_id, attempt) DO UPDATE SET at = excluded.at, status = excluded.status,
                 error = excluded.error, latency_ms = excluded.latency_ms",
        )
        .bind(failed.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(failed.iter().map(|c| i64::from(c.attempt)).collect::<Vec<_>>())
        .bind(failed.iter().map(|c| c.at).collect::<Vec<_>>())
        .bind(failed.iter().map(|c| c.status.map(i64::from)).collect::<Vec<_>>())
        .bind(failed.iter().map(|c| c.error.as_deref()).collect::<Vec<_>>())
        .bind(failed.iter().map(|c| c.latency_ms).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    let next = |c: &Completion| match c.next {
        NextState::Delivered => ("delivered", None, Some(c.at + c.latency_ms)),
        NextState::RetryAt(at) => ("pending", Some(at), None),
        NextState::Dead => ("dead", None, None),
        // A held attempt (a failed probe) is logged and moves `round_start` along with
        // `attempts`, so the retry schedule does not advance.
        NextState::Held | NextState::Returned => ("held", None, None),
    };
    // `d.state = v.was` (every row's is 'pending') rather than `d.state = 'pending'`: with
    // the constant, the planner may walk a partial index of pending rows and join the results
    // to each of them, which stale statistics of a fast-filling queue make look cheap (seen:
    // 3 s for 225 results over 26,000 pending rows). Without it, only the primary key joins.
    sqlx::query(
        "UPDATE deliveries d SET state = CASE v.state WHEN 'held' THEN 'pending' ELSE v.state END,
             lease_owner = NULL, lease_until = NULL, attempts = v.attempt,
             round_start = d.round_start + CASE v.state WHEN 'held' THEN 1 ELSE 0 END,
             next_attempt_at = COALESCE(v.next_at, d.next_attempt_at), last_status = v.status,
             last_error = v.error, delivered_at = v.delivered_at, updated_at = v.at + v.latency,
             last_attempt_at = v.at, last_latency_ms = v.latency
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[],
                     $7::bigint[], $8::bigint[], $9::bigint[], $11::text[])
              AS v(id, state, attempt, next_at, status, error, delivered_at, at, latency, was)
         WHERE d.id = v.id AND d.state = v.was AND (d.lease_owner IS NULL OR d.lease_owner = $10)",
    )
    .bind(done.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(done.iter().map(|c| next(c).0).collect::<Vec<_>>())
    .bind(done.iter().map(|c| i64::from(c.attempt)).collect::<Vec<_>>())
    .bind(done.iter().map(|c| next(c).1).collect::<Vec<_>>())
    .bind(done.iter().map(|c| c.status.map(i64::from)).collect::<Vec<_>>())
    .bind(done.iter().map(|c| c.error.as_deref()).collect::<Vec<_>>())
    .bind(done.iter().map(|c| next(c).2).collect::<Vec<_>>())
    .bind(done.iter().map(|c| c.at).collect::<Vec<_>>())
    .bind(done.iter().map(|c| c.latency_ms).collect::<Vec<_>>())
    .bind(&shared.owner)
    .bind(vec!["pending"; done.len()])
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Lets the next status of each finished chain go; up to `wants` of each subscriber are
/// leased in the same statement and returned, and `wants` is lowered by as many.
async fn release_chains(
    tx: &mut Tx<'_>,
    shared: &Shared,
    finished: &[(&str, &str)],
    wants: &mut [(String, usize)],
    now: i64,
) -> sqlx::Result<Vec<Claimed>> {
    let rows = chains::plan(finished, wants);
    let claimed = release_heads(tx, shared, &rows, now).await?;
    chains::took(wants, &claimed);
    Ok(claimed)
}

/// Unblocks the head (lowest sequence pending) of each `(subscriber, call, claim)` chain that
/// is not leased, leasing it where `claim`; returns the leased ones with their events.
const RELEASE_HEADS: &str = "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bool[]) AS v(s, c, claim)),
     heads AS (
         SELECT DISTINCT ON (v.s, v.c) d.id, v.claim FROM v
         JOIN deliveries d ON d.subscriber = v.s AND d.call_id = v.c AND d.state = 'pending'
         ORDER BY v.s, v.c, d.sequence, d.id),
     freed AS (
         UPDATE deliveries d SET blocked = FALSE,
             lease_owner = CASE WHEN heads.claim THEN $4 END,
             lease_until = CASE WHEN heads.claim THEN $5::bigint END
         FROM heads WHERE d.id = heads.id AND (d.lease_until IS NULL OR d.lease_until <= $6)
         RETURNING d.id, d.call_id, d.attempts, d.round_start, d.subscriber, d.event_row, heads.claim)
     SELECT f.id, f.call_id, f.attempts, f.round_start, f.subscriber, e.event_id, e.payload
     FROM freed f JOIN events e ON e.id = f.event_row WHERE f.claim";

async fn release_heads(
    tx: &mut Tx<'_>,
    shared: &Shared,
    chains: &[(&str, &str, bool)],
    now: i64,
) -> sqlx::Result<Vec<Claimed>> {
    if chains.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(RELEASE_HEADS)
        .bind(chains.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(chains.iter().map(|c| c.1).collect::<Vec<_>>())
        .bind(chains.iter().map(|c| c.2).collect::<Vec<_>>())
        .bind(&shared.owner)
        .bind(now + shared.lease_ms)
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(claimed_row).collect()
}

/// Keeps (or forgets) that the operator paused `subscriber`, for every replica.
pub(super) async fn set_paused(shared: &Shared, subscriber: &str, paused: bool, now: i64) -> sqlx::Result<()> {
    let sql = match paused {
        true => "INSERT INTO subscriber_pauses (subscriber, paused_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        false => "DELETE FROM subscriber_pauses WHERE subscriber = $1 AND $2::bigint IS NOT NULL",
    };
    sqlx::query(sql).bind(subscriber).bind(now).execute(&shared.pool).await?;
    Ok(())
}

/// Puts matching finished deliveries back to pending with a fresh schedule; answers how many.
pub(super) async fn redeliver(shared: &Shared, filter: RedeliverFilter, now: i64) -> Result<u64, StoreError> {
    let mut tx = shared.pool.begin().await.map_err(StoreError::transaction)?;
    let count = redeliver_in(&mut tx, shared, &filter, now).await.map_err(|e| StoreError::statement(e.into()))?;
    tx.commit().await.map_err(StoreError::transaction)?;
    shared.slots.mark_all_backlogged();
    Ok(count)
}

async fn redeliver_in(tx: &mut Tx<'_>, shared: &Shared, filter: &RedeliverFilter, now: i64) -> sqlx::Result<u64> {
    if shared.ordered {
        lock_all_calls(tx).await?; // before any row: see `rechain`
    }
    let (id, state, subscriber) = (filter.id, filter.state.as_deref(), filter.subscriber.as_deref());
    const MATCHES: &str = "($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR state = $2)
         AND ($3::text IS NULL OR subscriber = $3)";
    sqlx::query(&format!(
        "INSERT INTO attempts (delivery_id, attempt, at, status, error, latency_ms)
         SELECT id, attempts, last_attempt_at, last_status, NULL, last_latency_ms FROM deliveries
         WHERE state = 'delivered' AND last_attempt_at IS NOT NULL AND {MATCHES}
         ON CONFLICT DO NOTHING"
    ))
    .bind(id)
    .bind(state)
    .bind(subscriber)
    .execute(&mut **tx)
    .await?;
    let rows = sqlx::query(&format!(
        "UPDATE deliveries SET state = 'pending', blocked = $5, round_start = attempts, next_attempt_at = $4,
             updated_at = $4, delivered_at = NULL, lease_owner = NULL, lease_until = NULL
         WHERE state <> 'pending' AND {MATCHES} RETURNING subscriber, call_id"
    ))
    .bind(id)
    .bind(state)
    .bind(subscriber)
    .bind(now)
    .bind(shared.ordered)
    .fetch_all(&mut **tx)
    .await?;
    let mut chains: Vec<(String, String)> = super::two_columns(&rows)?;
    let count = chains.len() as u64;
    chains.sort();
    chains.dedup();
    if shared.ordered && count > 0 {
        rechain(tx, shared, &chains, now).await?;
    }
    let mut subscribers: Vec<String> = chains.into_iter().map(|(s, _)| s).collect();
    subscribers.dedup();
    notify(tx, shared, &subscribers).await?;
    Ok(count)
}

/// Re-chains the pairs after a redelivery or a move: every waiting status is blocked, then
/// each chain's head goes unless one of its statuses is in flight (its completion lets it go).
/// The transaction holds every call ([`lock_all_calls`], taken before it touched a row: its
/// calls are known only from the rows it updated, and locking them after those rows could
/// deadlock with a transaction that locked a call and waits for one of the rows).
pub(super) async fn rechain(
    tx: &mut Tx<'_>,
    shared: &Shared,
    chains: &[(String, String)],
    now: i64,
) -> sqlx::Result<()> {
    let subs: Vec<&str> = chains.iter().map(|(s, _)| s.as_str()).collect();
    let cs: Vec<&str> = chains.iter().map(|(_, c)| c.as_str()).collect();
    sqlx::query(
        "UPDATE deliveries d SET blocked = TRUE FROM unnest($1::text[], $2::text[]) AS v(s, c)
         WHERE d.subscriber = v.s AND d.call_id = v.c AND d.state = 'pending'
           AND (d.lease_until IS NULL OR d.lease_until <= $3)",
    )
    .bind(&subs)
    .bind(&cs)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let idle = sqlx::query(
        "SELECT v.s, v.c FROM unnest($1::text[], $2::text[]) AS v(s, c)
         WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber = v.s AND d.call_id = v.c
                           AND d.state = 'pending' AND d.lease_until > $3)",
    )
    .bind(&subs)
    .bind(&cs)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    let idle: Vec<(String, String)> = super::two_columns(&idle)?;
    let_go(tx, shared, &idle, now).await
}

/// Unblocks the head of each `(subscriber, call)` chain, claiming none of them: the loop
/// claims them when it asks.
pub(super) async fn let_go(
    tx: &mut Tx<'_>,
    shared: &Shared,
    chains: &[(String, String)],
    now: i64,
) -> sqlx::Result<()> {
    let heads: Vec<(&str, &str, bool)> = chains.iter().map(|(s, c)| (s.as_str(), c.as_str(), false)).collect();
    release_heads(tx, shared, &heads, now).await.map(drop)
}
