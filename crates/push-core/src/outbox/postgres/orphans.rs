//! A removed subscriber's pending deliveries, dropped (dead, kept) or moved to another
//! subscriber by the operator (issue 14), as the SQLite backend does.

use super::{
    deliveries::{notify, rechain},
    ingest::lock_all_calls,
    MoveReport, Shared, StoreError,
};

/// They become dead ("dropped by operator"); answers how many.
pub(super) async fn drop_deliveries(shared: &Shared, subscriber: &str, now: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE deliveries SET state = 'dead', lease_owner = NULL, lease_until = NULL, updated_at = $2,
             last_error = 'dropped by operator: subscriber removed'
         WHERE subscriber = $1 AND state = 'pending'",
    )
    .bind(subscriber)
    .bind(now)
    .execute(&shared.pool)
    .await
    .map_err(|e| StoreError::statement(e.into()))?;
    Ok(done.rows_affected())
}

/// They become `to`'s, except those whose event `to` has; `to`'s chains are re-linked.
pub(super) async fn move_deliveries(shared: &Shared, from: &str, to: &str, now: i64) -> Result<MoveReport, StoreError> {
    let mut tx = shared.pool.begin().await.map_err(StoreError::transaction)?;
    let report = move_in(&mut tx, shared, from, to, now).await.map_err(|e| StoreError::statement(e.into()))?;
    tx.commit().await.map_err(StoreError::transaction)?;
    shared.slots.mark_backlog(to);
    Ok(report)
}

async fn move_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    shared: &Shared,
    from: &str,
    to: &str,
    now: i64,
) -> sqlx::Result<MoveReport> {
    if shared.ordered {
        lock_all_calls(tx).await?; // before any row: see `rechain`
    }
    let rows = sqlx::query(
        "UPDATE deliveries SET subscriber = $2, lease_owner = NULL, lease_until = NULL, blocked = $4, updated_at = $3
         WHERE subscriber = $1 AND state = 'pending'
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_row = deliveries.event_row AND d.subscriber = $2)
         RETURNING subscriber, call_id",
    )
    .bind(from)
    .bind(to)
    .bind(now)
    .bind(shared.ordered)
    .fetch_all(&mut **tx)
    .await?;
    let mut chains: Vec<(String, String)> = super::two_columns(&rows)?;
    let moved = chains.len() as u64;
    let skipped: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE subscriber = $1 AND state = 'pending'")
            .bind(from)
            .fetch_one(&mut **tx)
            .await?;
    chains.sort();
    chains.dedup();
    if shared.ordered && moved > 0 {
        rechain(tx, shared, &chains, now).await?;
    }
    notify(tx, shared, &[to.to_string()]).await?;
    Ok(MoveReport { moved, skipped: skipped as u64 })
}
