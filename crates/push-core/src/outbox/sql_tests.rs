//! The writer's statements against a real, migrated SQLite file.

use rusqlite::{params, Connection};
use sqlx::Connection as _;

use super::{bulk, deliveries, MIGRATOR};

/// A migrated database file (migrated by sqlx, as `Outbox::open` does) and a direct
/// connection to it, like the writer's.
pub(super) async fn migrated() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("outbox.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
    MIGRATOR.run(&mut conn).await.expect("migrate");
    conn.close().await.expect("close");
    let conn = Connection::open(&path).expect("open directly");
    conn.execute_batch("PRAGMA foreign_keys = ON").expect("foreign keys");
    (dir, conn)
}

/// Stores one event and its delivery to `subscriber`, due at `due`.
pub(super) fn delivery(conn: &Connection, id: i64, subscriber: &str, due: i64, blocked: bool) {
    conn.execute(
        "INSERT INTO events (id, event_id, dedup_key, call_id, payload, created_at) VALUES (?1, ?2, ?2, ?2, ?3, 0)",
        params![id, format!("ev-{id}"), format!("{{\"n\":{id}}}")],
    )
    .expect("event");
    conn.execute(
        "INSERT INTO deliveries (id, event_row, subscriber, call_id, blocked, next_attempt_at, created_at, updated_at)
         VALUES (?1, ?1, ?2, ?3, ?4, ?5, 0, 0)",
        params![id, subscriber, format!("ev-{id}"), blocked, due],
    )
    .expect("delivery");
}

#[tokio::test]
async fn a_padded_update_applies_each_row_once() {
    let (_dir, conn) = migrated().await;
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
         INSERT INTO t VALUES (1, 0), (2, 0), (3, 0), (4, 0), (5, 0);",
    )
    .unwrap();
    // Three rows go as four (the last repeated): an increment shows whether it ran twice.
    let rows = [(1_i64, 10_i64), (3, 30), (5, 50)];
    let sql = "UPDATE t SET v = t.v + v.column2 FROM (VALUES {values}) AS v WHERE t.id = v.column1";
    bulk::execute_padded(&conn, sql, 2, &rows, |args, (id, add)| {
        args.add(*id)?;
        args.add(*add)
    })
    .expect("update");
    let values: Vec<i64> = conn
        .prepare("SELECT v FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(values, [10, 0, 30, 0, 50]);
}

#[tokio::test]
async fn claims_take_the_oldest_due_first_and_tell_when_the_rest_falls_due() {
    let (_dir, conn) = migrated().await;
    for (id, due) in [(1, 50), (2, 30), (3, 40), (4, 20), (5, 10), (6, 100)] {
        delivery(&conn, id, "a", due, false);
    }
    delivery(&conn, 7, "a", 0, true);
    delivery(&conn, 8, "b", 0, false);

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 5).expect("claim");
    assert!(batch.items.is_empty(), "nothing is due yet");
    assert_eq!(batch.next_due, Some(10));
    assert!(batch.drained.is_empty());

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 60).expect("claim");
    let ids: Vec<i64> = batch.items.iter().map(|c| c.id).collect();
    assert_eq!(ids, [5, 4, 2], "oldest due first, blocked and other subscribers' left alone");
    assert_eq!(batch.items[0].event_id, "ev-5");
    assert_eq!(batch.items[0].payload, "{\"n\":5}");
    assert!(batch.drained.is_empty());

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 60).expect("claim");
    let ids: Vec<i64> = batch.items.iter().map(|c| c.id).collect();
    assert_eq!(ids, [3, 1], "claimed ones are not claimed again");
    assert_eq!(batch.next_due, Some(100), "the one not yet due");
    assert!(batch.drained.is_empty(), "something is still pending");

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 100).expect("claim");
    assert_eq!(batch.items.iter().map(|c| c.id).collect::<Vec<_>>(), [6]);
    assert_eq!(batch.drained, ["a"], "nothing claimable is left");
    assert_eq!(batch.next_due, None);

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 200).expect("claim");
    assert!(batch.items.is_empty());
    assert_eq!(batch.drained, ["a"]);
}
