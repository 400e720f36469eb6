//! Retention in PostgreSQL: one small batch per call, in its own transaction. A sweep walks
//! `events` by id from a cursor (kept per replica) with each event's deliveries beside it; what
//! goes is decided by [`RetentionPolicy::purges`], as in SQLite. The cursor stops at the first
//! event too young to go; events passed over (pending, or dead and not yet old enough) are
//! looked at again by a sweep from the start every [`RESCAN_MS`].

use std::time::Instant;

use sqlx::{Postgres, Row as _, Transaction};

use super::{PurgeReport, RetentionPolicy, Shared, StoreError};

/// Events looked at per batch.
const BATCH: i64 = 500;
/// Clock time between sweeps from the start of the table.
const RESCAN_MS: i64 = 10 * 60 * 1000;

/// Where this replica's sweep is.
#[derive(Debug, Clone, Default)]
pub(super) struct Cursor {
    event: i64,
    rescanned_at: Option<i64>,
}

/// What one batch removes.
#[derive(Default)]
struct Gone {
    events: Vec<i64>,
    deliveries: Vec<i64>,
    keys: Vec<(String, String, String, i64)>,
    calls: Vec<String>,
}

/// Runs one batch; says whether more is waiting.
pub(super) async fn batch(shared: &Shared, policy: RetentionPolicy, now: i64) -> Result<PurgeReport, StoreError> {
    let mut cursor = shared.purge.lock().map(|c| c.clone()).unwrap_or_default();
    if cursor.rescanned_at.is_none_or(|at| now - at >= RESCAN_MS) {
        cursor = Cursor { event: 0, rescanned_at: Some(now) };
    }
    let started = Instant::now();
    let mut tx = shared.pool.begin().await.map_err(StoreError::transaction)?;
    let report = purge(&mut tx, &mut cursor, &policy, now).await.map_err(|e| StoreError::statement(e.into()))?;
    tx.commit().await.map_err(StoreError::transaction)?;
    if let Ok(mut kept) = shared.purge.lock() {
        *kept = cursor;
    }
    let micros = started.elapsed().as_micros() as u64;
    shared.counters.longest_purge_micros.fetch_max(micros, std::sync::atomic::Ordering::Relaxed);
    Ok(report)
}

async fn purge(
    tx: &mut Transaction<'_, Postgres>,
    cursor: &mut Cursor,
    policy: &RetentionPolicy,
    now: i64,
) -> sqlx::Result<PurgeReport> {
    let mut report = PurgeReport::default();
    let cutoff = policy.dedup_window_ms.map_or(i64::MAX, |w| now - w);
    let expired: Vec<String> = sqlx::query_scalar(
        "DELETE FROM purged_keys WHERE dedup_key IN
             (SELECT dedup_key FROM purged_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2)
         RETURNING call_id",
    )
    .bind(cutoff)
    .bind(BATCH)
    .fetch_all(&mut **tx)
    .await?;
    report.more |= expired.len() as i64 == BATCH;
    let mut gone = Gone { calls: expired, ..Gone::default() };
    if let Some(young) = policy.youngest_purgeable(now) {
        let rows = sqlx::query(
            "SELECT e.id, e.created_at, e.dedup_key, e.event_id, e.call_id,
                    COALESCE(bool_or(d.state = 'pending'), FALSE),
                    COALESCE(bool_or(d.state IN ('dead', 'superseded')), FALSE),
                    COALESCE(array_agg(d.id) FILTER (WHERE d.id IS NOT NULL), '{}')
             FROM (SELECT * FROM events WHERE id > $1 ORDER BY id LIMIT $2) AS e
             LEFT JOIN deliveries d ON d.event_row = e.id
             GROUP BY e.id, e.created_at, e.dedup_key, e.event_id, e.call_id ORDER BY e.id",
        )
        .bind(cursor.event)
        .bind(BATCH)
        .fetch_all(&mut **tx)
        .await?;
        report.more |= rows.len() as i64 == BATCH;
        let window_starts = policy.dedup_window_ms.map(|w| now - w);
        for row in &rows {
            let created_at: i64 = row.try_get(1)?;
            if created_at >= young {
                report.more = false;
                break;
            }
            cursor.event = row.try_get(0)?;
            if policy.purges(row.try_get(5)?, row.try_get(6)?, created_at, now) {
                gone.events.push(cursor.event);
                gone.deliveries.extend(row.try_get::<Vec<i64>, _>(7)?);
                let call_id: String = row.try_get(4)?;
                match window_starts.is_some_and(|start| created_at >= start) {
                    true => gone.keys.push((row.try_get(2)?, row.try_get(3)?, call_id, created_at)),
                    false => gone.calls.push(call_id),
                }
            }
        }
    }
    delete(tx, gone, &mut report).await?;
    Ok(report)
}

async fn delete(tx: &mut Transaction<'_, Postgres>, gone: Gone, report: &mut PurgeReport) -> sqlx::Result<()> {
    if !gone.events.is_empty() {
        let run = |sql: &'static str, ids: &Vec<i64>| sqlx::query(sql).bind(ids.clone());
        report.attempts += run("DELETE FROM attempts WHERE delivery_id = ANY($1)", &gone.deliveries)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        // A delivery redelivered by another replica since the walk read it stays, and so does its event.
        report.deliveries += run("DELETE FROM deliveries WHERE id = ANY($1) AND state <> 'pending'", &gone.deliveries)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        report.events += run(
            "DELETE FROM events WHERE id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_row = events.id)",
            &gone.events,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
        let col = |f: fn(&(String, String, String, i64)) -> &str| gone.keys.iter().map(f).collect::<Vec<&str>>();
        sqlx::query(
            "INSERT INTO purged_keys (dedup_key, event_id, call_id, created_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(col(|k| &k.0))
        .bind(col(|k| &k.1))
        .bind(col(|k| &k.2))
        .bind(gone.keys.iter().map(|k| k.3).collect::<Vec<_>>())
        .execute(&mut **tx)
        .await?;
    }
    if !gone.calls.is_empty() {
        sqlx::query(
            "DELETE FROM calls WHERE call_id = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.call_id = calls.call_id)
               AND NOT EXISTS (SELECT 1 FROM purged_keys p WHERE p.call_id = calls.call_id)",
        )
        .bind(&gone.calls)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
