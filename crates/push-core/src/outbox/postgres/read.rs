//! Read-only queries of the operations API and the sources, on the shared pool: every
//! replica reads the database's truth, whichever replica wrote it.

use sqlx::{postgres::PgRow, PgPool, QueryBuilder, Row as _};

use super::{DeliveryDetail, DeliveryFilter, Page, RejectRecord, StatsRow};
use crate::outbox::{AttemptRecord, DeliveryRecord};

const SELECT: &str = "SELECT d.id, e.event_id, d.subscriber, d.call_id, d.state, d.attempts,
    CASE WHEN d.state = 'pending' THEN d.next_attempt_at END, d.last_status, d.last_error,
    d.created_at, d.delivered_at FROM deliveries d JOIN events e ON e.id = d.event_row";

fn record(row: &PgRow) -> sqlx::Result<DeliveryRecord> {
    Ok(DeliveryRecord {
        id: row.try_get(0)?,
        event_id: row.try_get(1)?,
        subscriber: row.try_get(2)?,
        call_id: row.try_get(3)?,
        state: row.try_get(4)?,
        attempts: row.try_get(5)?,
        next_attempt_at: row.try_get(6)?,
        last_status: row.try_get(7)?,
        last_error: row.try_get(8)?,
        created_at: row.try_get(9)?,
        delivered_at: row.try_get(10)?,
    })
}

/// Deliveries matching `filter`, newest first, one page.
pub(super) async fn list_deliveries(pool: &PgPool, filter: &DeliveryFilter) -> sqlx::Result<Page> {
    let mut q = QueryBuilder::<sqlx::Postgres>::new(SELECT);
    q.push(" WHERE TRUE");
    if let Some(state) = &filter.state {
        q.push(" AND d.state = ").push_bind(state.as_str());
    }
    if let Some(subscriber) = &filter.subscriber {
        q.push(" AND d.subscriber = ").push_bind(subscriber.as_str());
    }
    if let Some(call_id) = &filter.call_id {
        q.push(" AND d.call_id = ").push_bind(call_id.as_str());
    }
    if let Some(before) = filter.before_id {
        q.push(" AND d.id < ").push_bind(before);
    }
    q.push(" ORDER BY d.id DESC LIMIT ").push_bind(i64::from(filter.limit) + 1);
    let rows = q.build().fetch_all(pool).await?;
    let mut items = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
    let next = if items.len() > filter.limit as usize {
        items.truncate(filter.limit as usize);
        items.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Page { items, next })
}

/// One delivery with its attempt log (a successful last attempt is kept on its own row).
pub(super) async fn delivery(pool: &PgPool, id: i64) -> sqlx::Result<Option<DeliveryDetail>> {
    let row = sqlx::query(&format!("{SELECT} WHERE d.id = $1")).bind(id).fetch_optional(pool).await?;
    let Some(row) = row else { return Ok(None) };
    let delivery = record(&row)?;
    let rows = sqlx::query(
        "SELECT attempt, at, status, error, latency_ms FROM attempts WHERE delivery_id = $1
         UNION ALL
         SELECT attempts, last_attempt_at, last_status, NULL, last_latency_ms FROM deliveries d
         WHERE id = $1 AND state = 'delivered' AND last_attempt_at IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = $1 AND a.attempt = d.attempts)
         ORDER BY 1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let attempt_log = rows
        .iter()
        .map(|r| {
            Ok(AttemptRecord {
                attempt: r.try_get(0)?,
                at: r.try_get(1)?,
                status: r.try_get(2)?,
                error: r.try_get(3)?,
                latency_ms: r.try_get(4)?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    Ok(Some(DeliveryDetail { delivery, attempt_log }))
}

/// Delivery counts per subscriber and state.
pub(super) async fn stats(pool: &PgPool) -> sqlx::Result<Vec<StatsRow>> {
    let rows =
        sqlx::query("SELECT subscriber, state, COUNT(*) FROM deliveries GROUP BY subscriber, state ORDER BY 1, 2")
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|r| Ok(StatsRow { subscriber: r.try_get(0)?, state: r.try_get(1)?, count: r.try_get(2)? }))
        .collect()
}

/// Per subscriber with claimable deliveries (unleased, or whose lease ran out), when the
/// oldest due one fell due (`None`: none is due yet).
pub(super) async fn oldest_due(pool: &PgPool, now: i64) -> sqlx::Result<Vec<(String, Option<i64>)>> {
    let rows = sqlx::query(
        "SELECT subscriber, MIN(next_attempt_at) FILTER (WHERE next_attempt_at <= $1) FROM deliveries
         WHERE state = 'pending' AND NOT blocked AND (lease_until IS NULL OR lease_until <= $1)
         GROUP BY subscriber ORDER BY 1",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    super::two_columns(&rows)
}

/// Pending deliveries per subscriber (the queue depth).
pub(super) async fn pending_counts(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT subscriber, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY 1 ORDER BY 1")
        .fetch_all(pool)
        .await?;
    super::two_columns(&rows)
}

/// A source's last kept position.
pub(super) async fn source_mark(pool: &PgPool, source: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT mark FROM source_marks WHERE source = $1").bind(source).fetch_optional(pool).await
}

fn reject_record(r: &PgRow) -> sqlx::Result<RejectRecord> {
    Ok(RejectRecord {
        id: r.try_get(0)?,
        source: r.try_get(1)?,
        reason: r.try_get(2)?,
        raw: r.try_get(3)?,
        created_at: r.try_get(4)?,
    })
}

/// Rejects, newest first, of one source if given.
pub(super) async fn rejects(pool: &PgPool, source: Option<String>, limit: u32) -> sqlx::Result<Vec<RejectRecord>> {
    let rows = sqlx::query(
        "SELECT id, source, reason, raw, created_at FROM rejects
         WHERE $1::text IS NULL OR source = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(source)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(reject_record).collect()
}

/// One reject.
pub(super) async fn reject(pool: &PgPool, id: i64) -> sqlx::Result<Option<RejectRecord>> {
    let row = sqlx::query("SELECT id, source, reason, raw, created_at FROM rejects WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(reject_record).transpose()
}
