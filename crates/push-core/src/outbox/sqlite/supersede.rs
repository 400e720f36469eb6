//! Stale statuses (`status.supersede`, status-pusher only): a status that keeps failing for
//! one subscriber is given up as `superseded` once a later status of its call is pending for
//! that subscriber, so the call's chain goes on exactly as after a dead one. Both paths only
//! look at chains that already hold a failed status: the common case costs nothing.

use rusqlite::Connection;

use super::{ingest::Request, Completion, IngestOutcome, NextState};
use crate::outbox::stale;
use crate::slots::Slots;

/// Supersedes the deliveries whose ids are in `?1` (JSON) that are still pending and have a
/// later pending status of their call for their subscriber (found by call); returns each one's
/// `id, subscriber, call_id`.
pub(super) const SUPERSEDE_RETRIES: &str = "UPDATE deliveries SET state = 'superseded', updated_at = ?2
     WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'pending' AND claimed = 0
       AND EXISTS (SELECT 1 FROM deliveries d INDEXED BY deliveries_call
                   WHERE d.call_id = deliveries.call_id AND d.subscriber = deliveries.subscriber
                     AND d.state = 'pending' AND d.id > deliveries.id)
     RETURNING id, subscriber, call_id";

/// Supersedes the head of each `[subscriber, call_id]` chain of `?1` (JSON) that has failed
/// at least once this round and is not in flight; returns each one's `subscriber, call_id`.
pub(super) const SUPERSEDE_HEADS: &str = "UPDATE deliveries SET state = 'superseded', updated_at = ?2
     FROM json_each(?1) AS v
     WHERE deliveries.claimed = 0 AND deliveries.attempts > deliveries.round_start
       AND deliveries.id = (SELECT d.id FROM deliveries d INDEXED BY deliveries_call
                            WHERE d.subscriber = v.value->>0 AND d.call_id = v.value->>1 AND d.state = 'pending'
                            ORDER BY d.id LIMIT 1)
     RETURNING subscriber, call_id";

/// After the results of `done` are recorded: each status that failed with a retry to follow
/// is superseded instead when a later status of its call is pending. Returns their ids and
/// subscribers.
pub(super) fn retries(tx: &Connection, done: &[Completion], now: i64) -> anyhow::Result<Vec<(i64, String)>> {
    let ids: Vec<i64> = done.iter().filter(|c| matches!(c.next, NextState::RetryAt(_))).map(|c| c.id).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = tx.prepare_cached(SUPERSEDE_RETRIES)?;
    let rows = stmt.query_map(rusqlite::params![serde_json::to_string(&ids)?, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// In the ingest transaction, after the new rows are written: supersedes the failed, idle
/// head of each `(subscriber, call_id)` chain a new status was stored behind, and lets the
/// next status of each go. Returns the chains it superseded a head of.
pub(super) fn heads(tx: &Connection, chains: &[(&str, &str)], now: i64) -> anyhow::Result<Vec<(String, String)>> {
    if chains.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<(String, String)> = {
        let mut stmt = tx.prepare_cached(SUPERSEDE_HEADS)?;
        let rows =
            stmt.query_map(rusqlite::params![serde_json::to_string(chains)?, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let release: Vec<(&str, &str, bool)> = found.iter().map(|(s, c)| (s.as_str(), c.as_str(), false)).collect();
    super::deliveries::release_heads(tx, &release)?;
    Ok(found)
}

/// `status.supersede` at ingest: the failed, idle head of each chain a new status was stored
/// behind (`chains`: those of the new statuses that wait) is superseded, and the next status
/// of its call goes (see [`heads`]). Only chains that already had a pending head are looked
/// at: a call with nothing pending costs nothing.
/// Each superseded head is reported in the outcome of a request that stored a status of its
/// call for its subscriber, so the queue-depth gauges stay right.
pub(super) fn at_ingest(
    tx: &Connection,
    requests: &[Request<'_>],
    mut chains: Vec<(&str, &str)>,
    outcomes: &mut [IngestOutcome],
    slots: &Slots,
) -> anyhow::Result<()> {
    chains.sort_unstable();
    chains.dedup();
    let now = requests.first().map_or(0, |r| r.now);
    for (subscriber, call_id) in heads(tx, &chains, now)? {
        slots.mark_backlog(&subscriber);
        stale::credit(requests.iter().map(|r| r.items), outcomes, &subscriber, &call_id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection as _, Row as _};

    use super::super::MIGRATOR;

    /// `sqlite_master` of `deliveries` (table and indexes), the table's CHECK set aside.
    async fn schema(conn: &mut sqlx::SqliteConnection) -> Vec<(String, String)> {
        let rows = sqlx::query("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'deliveries' ORDER BY name")
            .fetch_all(conn)
            .await
            .expect("schema");
        rows.iter()
            .map(|r| (r.get(0), r.get::<String, _>(1).split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect()
    }

    #[tokio::test]
    async fn migration_0007_keeps_a_0006_databases_rows_states_and_indexes() {
        // A database as 0001-0006 left it, with rows in every state.
        let dir = tempfile::tempdir().expect("temp dir");
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).unwrap();
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        for entry in std::fs::read_dir(&all).unwrap().map(Result::unwrap) {
            if entry.file_name().to_string_lossy().as_ref() < "0007" {
                std::fs::copy(entry.path(), old.join(entry.file_name())).unwrap();
            }
        }
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
        sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&mut conn).await.expect("0001-0006");
        let before = schema(&mut conn).await;
        sqlx::query(
            "INSERT INTO events (id, event_id, dedup_key, call_id, payload, created_at) VALUES (1, 'e1', 'k1', 'c1', '{}', 5);
             INSERT INTO deliveries (id, event_row, subscriber, call_id, sequence, state, blocked, claimed, attempts,
                 round_start, next_attempt_at, last_status, last_error, created_at, updated_at, delivered_at,
                 last_attempt_at, last_latency_ms)
             VALUES (1, 1, 'a', 'c1', 0, 'delivered', 0, 0, 1, 0, 10, 200, NULL, 5, 6, 7, 8, 9),
                    (2, 1, 'b', 'c1', 1, 'dead', 0, 0, 3, 1, 11, 500, 'refused', 5, 6, NULL, 8, 9),
                    (3, 1, 'c', 'c1', 2, 'pending', 1, 0, 0, 0, 12, NULL, NULL, 5, 6, NULL, NULL, NULL);",
        )
        .execute(&mut conn)
        .await
        .expect("rows");
        let cols = "id, event_row, subscriber, call_id, sequence, state, blocked, claimed, attempts, round_start, \
                    next_attempt_at, last_status, last_error, created_at, updated_at, delivered_at, last_attempt_at, \
                    last_latency_ms";
        let quoted: Vec<String> = cols.split(", ").map(|c| format!("quote({c})")).collect();
        let rows = format!("SELECT {} FROM deliveries ORDER BY id", quoted.join(" || ',' || "));
        let rows = rows.as_str();
        let dump = |rows: Vec<sqlx::sqlite::SqliteRow>| -> Vec<String> { rows.iter().map(|r| r.get(0)).collect() };
        let kept = dump(sqlx::query(rows).fetch_all(&mut conn).await.unwrap());

        MIGRATOR.run(&mut conn).await.expect("0007 and later");
        assert_eq!(dump(sqlx::query(rows).fetch_all(&mut conn).await.unwrap()), kept, "every row and column kept");
        let after = schema(&mut conn).await;
        let names = |s: &[(String, String)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&after), names(&before), "the same indexes");
        assert_eq!(after[1..], before[1..], "indexes identical (deliveries_call, _due, _unfinished)");
        assert!(after[0].1.contains("'superseded'"), "{:?}", after[0]);
        sqlx::query("UPDATE deliveries SET state = 'superseded' WHERE id = 3")
            .execute(&mut conn)
            .await
            .expect("allowed");
        let bad = sqlx::query("UPDATE deliveries SET state = 'lost' WHERE id = 3").execute(&mut conn).await;
        assert!(bad.is_err(), "the CHECK still refuses other states");
    }
}
