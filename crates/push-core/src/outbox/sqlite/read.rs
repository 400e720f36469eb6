//! Read-only queries of the operations API, on the reader pool.

use sqlx::{QueryBuilder, Row as _, SqlitePool};

use super::{AttemptRecord, DeliveryDetail, DeliveryFilter, DeliveryRecord, Outbox, Page, StatsRow};

const SELECT: &str = "SELECT d.id, e.event_id, d.subscriber, d.call_id, d.state, d.attempts,
    CASE WHEN d.state = 'pending' THEN d.next_attempt_at END, d.last_status, d.last_error,
    d.created_at, d.delivered_at FROM deliveries d JOIN events e ON e.id = d.event_row";

fn record(row: &sqlx::sqlite::SqliteRow) -> Result<DeliveryRecord, sqlx::Error> {
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

impl Outbox {
    /// Deliveries matching `filter`, newest first, one page.
    pub async fn list_deliveries(&self, filter: &DeliveryFilter) -> anyhow::Result<Page> {
        let rows = list_query(filter).build().fetch_all(&self.readers).await?;
        let mut items = rows.iter().map(record).collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > filter.limit as usize {
            items.truncate(filter.limit as usize);
            items.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// One delivery with its attempt log, if it exists.
    pub async fn delivery(&self, id: i64) -> anyhow::Result<Option<DeliveryDetail>> {
        let row = sqlx::query(&format!("{SELECT} WHERE d.id = ?1")).bind(id).fetch_optional(&self.readers).await?;
        let Some(row) = row else { return Ok(None) };
        let delivery = record(&row)?;
        let attempt_log = attempts(&self.readers, id).await?;
        Ok(Some(DeliveryDetail { delivery, attempt_log }))
    }

    /// Delivery counts per subscriber and state.
    pub async fn stats(&self) -> anyhow::Result<Vec<StatsRow>> {
        let rows =
            sqlx::query("SELECT subscriber, state, COUNT(*) FROM deliveries GROUP BY subscriber, state ORDER BY 1, 2")
                .fetch_all(&self.readers)
                .await?;
        rows.iter()
            .map(|r| Ok(StatsRow { subscriber: r.try_get(0)?, state: r.try_get(1)?, count: r.try_get(2)? }))
            .collect()
    }

    /// For each subscriber with deliveries waiting for a claim, when the oldest of them that
    /// is due at `now` fell due (`None`: none is due yet). A subscriber whose value stays put
    /// while `now` moves on is not being served: `/v1/stats` and `/metrics` show its age.
    pub async fn oldest_due(&self, now: i64) -> anyhow::Result<Vec<(String, Option<i64>)>> {
        let rows = sqlx::query(OLDEST_DUE).bind(now).fetch_all(&self.readers).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Pending deliveries per subscriber (the queue depth), read at start for the gauge.
    pub async fn pending_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(PENDING_COUNTS).fetch_all(&self.readers).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Subscribers the operator paused.
    pub async fn paused(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT subscriber FROM subscriber_pauses ORDER BY subscriber")
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

/// Pending deliveries per subscriber, through `deliveries_unfinished` (the second term lets
/// SQLite use that partial index).
pub(super) const PENDING_COUNTS: &str =
    "SELECT subscriber, COUNT(*) FROM deliveries WHERE state = 'pending' AND state != 'delivered' GROUP BY subscriber";

/// [`Outbox::oldest_due`] at `?1`, in a few index lookups per subscriber whatever the backlog:
/// `subs` hops from one subscriber of `deliveries_due` to the next (each `MIN` reads one
/// index entry), and each subscriber's oldest due delivery is the first entry of its part of
/// the index. The literal terms let SQLite use that partial index.
pub(super) const OLDEST_DUE: &str = "WITH RECURSIVE subs(s) AS (
         SELECT MIN(subscriber) FROM deliveries WHERE state = 'pending' AND blocked = 0 AND claimed = 0
         UNION ALL
         SELECT (SELECT MIN(subscriber) FROM deliveries
                 WHERE state = 'pending' AND blocked = 0 AND claimed = 0 AND subscriber > subs.s)
         FROM subs WHERE subs.s IS NOT NULL)
     SELECT s, (SELECT MIN(next_attempt_at) FROM deliveries
                WHERE subscriber = subs.s AND state = 'pending' AND blocked = 0 AND claimed = 0
                  AND next_attempt_at <= ?1)
     FROM subs WHERE s IS NOT NULL";

/// The listing's query. A state other than `delivered` also gets the literal term that lets
/// SQLite use the partial index `deliveries_unfinished` (it cannot know a bound value).
pub(super) fn list_query(filter: &DeliveryFilter) -> QueryBuilder<'_, sqlx::Sqlite> {
    let mut q = QueryBuilder::new(SELECT);
    q.push(" WHERE 1 = 1");
    if let Some(state) = &filter.state {
        q.push(" AND d.state = ").push_bind(state.as_str());
        if state != "delivered" {
            q.push(" AND d.state != 'delivered'");
        }
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
    q
}

async fn attempts(pool: &SqlitePool, id: i64) -> anyhow::Result<Vec<AttemptRecord>> {
    // Failed attempts are rows of `attempts`; a delivery's successful last attempt is kept on
    // its own row (see `deliveries::complete`).
    let rows = sqlx::query(
        "SELECT attempt, at, status, error, latency_ms FROM attempts WHERE delivery_id = ?1
         UNION ALL
         SELECT attempts, last_attempt_at, last_status, NULL, last_latency_ms FROM deliveries d
         WHERE id = ?1 AND state = 'delivered' AND last_attempt_at IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = ?1 AND a.attempt = d.attempts)
         ORDER BY 1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AttemptRecord {
                attempt: r.try_get(0)?,
                at: r.try_get(1)?,
                status: r.try_get(2)?,
                error: r.try_get(3)?,
                latency_ms: r.try_get(4)?,
            })
        })
        .collect()
}
