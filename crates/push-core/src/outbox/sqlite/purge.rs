//! Retention in SQLite: one small batch of purging per writer command.
//!
//! A sweep walks the `deliveries` table by row id from a cursor, with `events` beside it:
//! the writer hands out both ids in the same order, so an event's deliveries are
//! consecutive and the walk meets events in id order without an index on `event_row`. An
//! event whose deliveries are all delivered (or that has none) goes once older than
//! `retention`; one with a dead delivery and none pending once older than `dead_retention`;
//! a pending one never. Its dedup key stays in `purged_keys` while inside the dedup window.
//!
//! The cursor stops where events are too young to go and the next sweep starts from there;
//! events passed over (pending, or dead and not old enough) are looked at again by a sweep
//! from the start, every [`RESCAN_MS`] of clock time. Each batch is sized to take about
//! [`TARGET`] of the writer's time, so ingest never waits long behind it.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::{bulk, PurgeReport, RetentionPolicy};

/// A batch should hold the writer about this long.
const TARGET: Duration = Duration::from_millis(1);
/// Deliveries read per batch: first, least and most.
const FIRST_BATCH: usize = 64;
const MIN_BATCH: usize = 16;
const MAX_BATCH: usize = 1024;
/// Clock time between sweeps from the start of the table.
pub(super) const RESCAN_MS: i64 = 10 * 60 * 1000;

/// Where the sweep is, kept by the writer between batches.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    /// Last delivery and event row looked at.
    delivery: i64,
    event: i64,
    /// Deliveries read per batch.
    batch: usize,
    /// When the current sweep from the start began (clock ms); `None` before the first.
    rescanned_at: Option<i64>,
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor { delivery: 0, event: 0, batch: FIRST_BATCH, rescanned_at: None }
    }
}

/// One event of the walk with what its deliveries say.
struct Seen {
    id: i64,
    created_at: i64,
    dedup_key: String,
    event_id: String,
    call_id: String,
    deliveries: Vec<i64>,
    pending: bool,
    dead: bool,
}

/// Runs one batch in its own transaction; sizes the next one from how long it took.
pub(super) fn batch(
    conn: &Connection,
    cursor: &mut Cursor,
    policy: &RetentionPolicy,
    now: i64,
) -> anyhow::Result<PurgeReport> {
    if cursor.rescanned_at.is_none_or(|at| now - at >= RESCAN_MS) {
        (cursor.delivery, cursor.event, cursor.rescanned_at) = (0, 0, Some(now));
    }
    let started = Instant::now();
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let mut walk = cursor.clone();
    let result = purge(conn, &mut walk, policy, now);
    // The batch's commit does not run the WAL's automatic checkpoint (two fsyncs and a
    // copy of the WAL into the database): the next ingest or loop commit runs it, as it
    // would have anyway, and a purge batch holds the writer only for its own work.
    let result = result.and_then(|report| Ok(commit_without_checkpoint(conn).map(|_| report)?));
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
        return result;
    }
    cursor.delivery = walk.delivery;
    cursor.event = walk.event;
    let took = started.elapsed();
    cursor.batch = if took > TARGET * 2 {
        (cursor.batch / 2).max(MIN_BATCH)
    } else if took < TARGET / 2 {
        (cursor.batch * 2).min(MAX_BATCH)
    } else {
        cursor.batch
    };
    result
}

/// COMMIT with `wal_autocheckpoint` off for it, then back to SQLite's default (1,000 pages).
fn commit_without_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")?;
    let committed = conn.execute_batch("COMMIT");
    conn.execute_batch("PRAGMA wal_autocheckpoint = 1000")?;
    committed
}

/// The batch's work, inside the transaction.
fn purge(conn: &Connection, cursor: &mut Cursor, policy: &RetentionPolicy, now: i64) -> anyhow::Result<PurgeReport> {
    let mut report = PurgeReport::default();
    let expired = expire_keys(conn, policy, now, cursor.batch)?;
    report.more |= expired.len() == cursor.batch;
    let Some(young) = policy.youngest_purgeable(now) else {
        forget_calls(conn, &expired)?;
        return Ok(report);
    };
    let (seen, reached_end) = walk(conn, cursor, young)?;
    report.more |= !reached_end;
    let mut gone = Gone { calls: expired, ..Gone::default() };
    let window_starts = policy.dedup_window_ms.map(|w| now - w);
    for event in seen {
        cursor.event = event.id;
        cursor.delivery = event.deliveries.last().copied().unwrap_or(cursor.delivery);
        if policy.purges(event.pending, event.dead, event.created_at, now) {
            let keep_key = window_starts.is_some_and(|start| event.created_at >= start);
            gone.add(event, keep_key);
        }
    }
    gone.delete(conn, &mut report)?;
    Ok(report)
}

/// Reads the next events of the walk, up to the first too young to go (`young`: created at
/// or after it). Also says whether the walk reached that point or the end of the table.
fn walk(conn: &Connection, cursor: &Cursor, young: i64) -> anyhow::Result<(Vec<Seen>, bool)> {
    let mut limit = cursor.batch;
    let (rows, full) = loop {
        let rows = delivery_rows(conn, cursor.delivery, limit)?;
        let full = rows.len() == limit;
        // A full read may end inside an event's deliveries: that event waits for the next
        // batch, unless it is the only one (then read more at once).
        if full && rows.first().map(|r| r.1) == rows.last().map(|r| r.1) {
            limit *= 2;
            continue;
        }
        break (rows, full);
    };
    let last_whole = match (full, rows.last()) {
        (true, Some(last)) => last.1 - 1,
        // Past the last delivery, events have none: walk them in batches too.
        _ => rows.last().map_or(cursor.event, |r| r.1).max(cursor.event) + cursor.batch as i64,
    };
    let mut events = event_rows(conn, cursor.event, last_whole)?;
    let mut rows = rows.into_iter().peekable();
    for event in &mut events {
        while let Some((id, _, state)) = rows.next_if(|r| r.1 == event.id) {
            event.deliveries.push(id);
            event.pending |= state == "pending";
            // A superseded status is kept as long as a dead one.
            event.dead |= state == "dead" || state == "superseded";
        }
    }
    let stop = events.iter().position(|e| e.created_at >= young);
    let reached = stop.is_some() || (!full && events.last().is_none_or(|e| e.id < last_whole));
    events.truncate(stop.unwrap_or(events.len()));
    Ok((events, reached))
}

/// `(id, event_row, state)` of the next deliveries after `after`, in id order.
fn delivery_rows(conn: &Connection, after: i64, limit: usize) -> anyhow::Result<Vec<(i64, i64, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, event_row, state FROM deliveries WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map((after, limit as i64), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events with ids in `(after, upto]`, in id order, their deliveries not yet attached.
fn event_rows(conn: &Connection, after: i64, upto: i64) -> anyhow::Result<Vec<Seen>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, created_at, dedup_key, event_id, call_id FROM events WHERE id > ?1 AND id <= ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map((after, upto), |r| {
        Ok(Seen {
            id: r.get(0)?,
            created_at: r.get(1)?,
            dedup_key: r.get(2)?,
            event_id: r.get(3)?,
            call_id: r.get(4)?,
            deliveries: Vec::new(),
            pending: false,
            dead: false,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes up to `limit` dedup keys that left the window; returns their calls.
fn expire_keys(conn: &Connection, policy: &RetentionPolicy, now: i64, limit: usize) -> anyhow::Result<Vec<String>> {
    let cutoff = policy.dedup_window_ms.map_or(i64::MAX, |w| now - w);
    let mut stmt = conn.prepare_cached(
        "DELETE FROM purged_keys WHERE dedup_key IN
             (SELECT dedup_key FROM purged_keys WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)
         RETURNING call_id",
    )?;
    let calls = stmt.query_map((cutoff, limit as i64), |r| r.get(0))?;
    Ok(calls.collect::<Result<_, _>>()?)
}

/// Forgets the next sequence of each of `calls` that has left no trace: no delivery and no
/// dedup key (a status of it is then a new call's).
fn forget_calls(conn: &Connection, calls: &[String]) -> anyhow::Result<u64> {
    if calls.is_empty() {
        return Ok(0);
    }
    let n = conn
        .prepare_cached(
            "DELETE FROM calls WHERE call_id IN (SELECT value FROM json_each(?1))
           AND NOT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_call WHERE deliveries.call_id = calls.call_id)
           AND NOT EXISTS (SELECT 1 FROM purged_keys WHERE purged_keys.call_id = calls.call_id)",
        )?
        .execute([serde_json::to_string(calls)?])?;
    Ok(n as u64)
}

/// What one batch removes.
#[derive(Default)]
struct Gone {
    events: Vec<i64>,
    deliveries: Vec<i64>,
    /// Keys still inside the dedup window: `(dedup_key, event_id, call_id, created_at)`.
    keys: Vec<(String, String, String, i64)>,
    /// Calls whose next sequence may go with this batch.
    calls: Vec<String>,
}

impl Gone {
    /// Adds an event to remove; `keep_key`: its dedup key stays (it is inside the window).
    fn add(&mut self, event: Seen, keep_key: bool) {
        self.events.push(event.id);
        self.deliveries.extend(event.deliveries);
        if keep_key {
            self.keys.push((event.dedup_key, event.event_id, event.call_id, event.created_at));
        } else {
            self.calls.push(event.call_id);
        }
    }

    fn delete(self, conn: &Connection, report: &mut PurgeReport) -> anyhow::Result<()> {
        let ids = |ids: &[i64]| serde_json::to_string(ids);
        let deliveries = ids(&self.deliveries)?;
        let run =
            |sql: &str, arg: &str| -> anyhow::Result<u64> { Ok(conn.prepare_cached(sql)?.execute([arg])? as u64) };
        report.attempts +=
            run("DELETE FROM attempts WHERE delivery_id IN (SELECT value FROM json_each(?1))", &deliveries)?;
        report.deliveries += run("DELETE FROM deliveries WHERE id IN (SELECT value FROM json_each(?1))", &deliveries)?;
        report.events += run("DELETE FROM events WHERE id IN (SELECT value FROM json_each(?1))", &ids(&self.events)?)?;
        bulk::execute(
            conn,
            "INSERT OR IGNORE INTO purged_keys (dedup_key, event_id, call_id, created_at) VALUES {values}",
            4,
            &self.keys,
            |args, (key, event_id, call_id, at)| {
                args.add(key)?;
                args.add(event_id)?;
                args.add(call_id)?;
                args.add(at)
            },
        )?;
        let mut calls = self.calls;
        calls.sort_unstable();
        calls.dedup();
        forget_calls(conn, &calls)?;
        Ok(())
    }
}
