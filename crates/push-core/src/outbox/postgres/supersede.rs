//! Stale statuses on PostgreSQL (`status.supersede`, status-pusher only), as in
//! `sqlite::supersede`: a status that keeps failing for one subscriber is given up as
//! `superseded` once a later status of its call is pending for that subscriber, and the
//! call's chain goes on as after a dead one. Both statements run only for chains that hold a
//! failed status, under the calls' locks (`ingest::lock_calls`), so two replicas decide on
//! committed truth. "Idle" means not leased, or leased by a replica whose lease ran out.

use sqlx::{Postgres, Transaction};

use super::{deliveries::let_go, Completion, Shared};
use crate::outbox::NextState;

type Tx<'c> = Transaction<'c, Postgres>;

/// Supersedes the deliveries of `$1` still pending (`$3`, per row: the state compared with a
/// column, not a constant, so the planner joins on the primary key only) and idle at `$2`
/// that have a later pending status of their call for their subscriber.
const SUPERSEDE_RETRIES: &str = "UPDATE deliveries SET state = 'superseded', updated_at = $2
     FROM unnest($1::bigint[], $3::text[]) AS v(id, was)
     WHERE deliveries.id = v.id AND deliveries.state = v.was
       AND (deliveries.lease_until IS NULL OR deliveries.lease_until <= $2)
       AND EXISTS (SELECT 1 FROM deliveries d
                   WHERE d.call_id = deliveries.call_id AND d.subscriber = deliveries.subscriber
                     AND d.state = 'pending' AND d.sequence > deliveries.sequence)
     RETURNING deliveries.id, deliveries.subscriber";

/// Supersedes the head of each `($1, $2)` (subscriber, call) chain that failed at least once
/// in its current round and is idle at `$3`; returns each one's subscriber and call.
const SUPERSEDE_HEADS: &str = "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[]) AS v(s, c)),
     heads AS (
         SELECT DISTINCT ON (v.s, v.c) d.id, d.attempts, d.round_start, d.lease_until FROM v
         JOIN deliveries d ON d.subscriber = v.s AND d.call_id = v.c AND d.state = 'pending'
         ORDER BY v.s, v.c, d.sequence, d.id)
     UPDATE deliveries d SET state = 'superseded', updated_at = $3 FROM heads
     WHERE d.id = heads.id AND heads.attempts > heads.round_start
       AND (heads.lease_until IS NULL OR heads.lease_until <= $3)
     RETURNING d.subscriber, d.call_id";

/// After the results of `done` are recorded: each status that failed with a retry to follow
/// is superseded instead when a later status of its call is pending. Returns their ids and
/// subscribers.
pub(super) async fn retries(tx: &mut Tx<'_>, done: &[Completion], now: i64) -> sqlx::Result<Vec<(i64, String)>> {
    let ids: Vec<i64> = done.iter().filter(|c| matches!(c.next, NextState::RetryAt(_))).map(|c| c.id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(SUPERSEDE_RETRIES)
        .bind(&ids)
        .bind(now)
        .bind(vec!["pending"; ids.len()])
        .fetch_all(&mut **tx)
        .await?;
    super::two_columns(&rows)
}

/// In the ingest transaction, after the new rows are written: supersedes the failed, idle
/// head of each `(subscriber, call)` chain a new status was stored behind, and lets the next
/// status of each go. Returns the chains it superseded a head of.
pub(super) async fn heads(
    tx: &mut Tx<'_>,
    shared: &Shared,
    chains: &[(&str, &str)],
    now: i64,
) -> sqlx::Result<Vec<(String, String)>> {
    if chains.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(SUPERSEDE_HEADS)
        .bind(chains.iter().map(|c| c.0).collect::<Vec<_>>())
        .bind(chains.iter().map(|c| c.1).collect::<Vec<_>>())
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    let found: Vec<(String, String)> = super::two_columns(&rows)?;
    let_go(tx, shared, &found, now).await?;
    Ok(found)
}
