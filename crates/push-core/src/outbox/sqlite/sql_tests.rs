//! The writer's statements against a real, migrated SQLite file.

use rusqlite::{params, Connection};
use sqlx::Connection as _;

use super::{bulk, deliveries, read, Completion, NextState, MIGRATOR};

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
    assert_eq!(batch.unfilled, [("a".to_string(), Some(10))]);

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 60).expect("claim");
    let ids: Vec<i64> = batch.items.iter().map(|c| c.id).collect();
    assert_eq!(ids, [5, 4, 2], "oldest due first, blocked and other subscribers' left alone");
    assert_eq!(batch.items[0].event_id, "ev-5");
    assert_eq!(batch.items[0].payload, "{\"n\":5}");
    assert!(batch.unfilled.is_empty(), "filled: more may be due");

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 60).expect("claim");
    let ids: Vec<i64> = batch.items.iter().map(|c| c.id).collect();
    assert_eq!(ids, [3, 1], "claimed ones are not claimed again");
    assert_eq!(batch.unfilled, [("a".to_string(), Some(100))], "the one not yet due");

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 100).expect("claim");
    assert_eq!(batch.items.iter().map(|c| c.id).collect::<Vec<_>>(), [6]);
    assert_eq!(batch.unfilled, [("a".to_string(), None)], "nothing claimable is left");

    let batch = deliveries::claim(&conn, &[("a".into(), 3)], 200).expect("claim");
    assert!(batch.items.is_empty());
    assert_eq!(batch.unfilled, [("a".to_string(), None)]);
}

/// Stores `statuses` deliveries of call `call_id` to subscriber "a" from id `first` on, the
/// first one delivered and the rest waiting behind it.
fn chain(conn: &Connection, call_id: &str, first: i64, statuses: i64) {
    for id in first..first + statuses {
        conn.execute(
            "INSERT INTO events (id, event_id, dedup_key, call_id, payload, created_at) VALUES (?1, ?2, ?2, ?3, ?4, 0)",
            params![id, format!("ev-{id}"), call_id, format!("{{\"n\":{id}}}")],
        )
        .expect("event");
        conn.execute(
            "INSERT INTO deliveries (id, event_row, subscriber, call_id, sequence, state, blocked, next_attempt_at,
                                     created_at, updated_at)
             VALUES (?1, ?1, 'a', ?2, ?3, ?4, ?5, 0, 0, 0)",
            params![id, call_id, id - first, if id == first { "delivered" } else { "pending" }, id > first],
        )
        .expect("delivery");
    }
}

/// Delivery `id` of subscriber "a" (call `call_id`) was delivered at its first attempt.
pub(super) fn finished(call_id: &str, id: i64) -> Completion {
    Completion {
        id,
        subscriber: "a".into(),
        call_id: call_id.into(),
        attempt: 1,
        at: 0,
        status: Some(200),
        error: None,
        latency_ms: 1,
        next: NextState::Delivered,
    }
}

/// (blocked, claimed) of delivery `id`.
fn flags(conn: &Connection, id: i64) -> (bool, bool) {
    conn.query_row("SELECT blocked, claimed FROM deliveries WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("row")
}

#[tokio::test]
async fn released_heads_are_claimed_while_the_loop_has_room_and_only_unblocked_after() {
    let (_dir, conn) = migrated().await;
    chain(&conn, "x", 1, 3);
    chain(&conn, "y", 4, 2);
    let done = [finished("y", 4), finished("x", 1)];
    let mut wants = vec![("a".to_string(), 1)];

    let claimed = deliveries::release_chains(&conn, &done, &mut wants).expect("release");
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [2], "one claim was asked for: call x's head");
    assert_eq!((claimed[0].event_id.as_str(), claimed[0].payload.as_str()), ("ev-2", "{\"n\":2}"));
    assert_eq!(wants, [("a".to_string(), 0)], "the claim that follows asks for that many fewer");
    assert_eq!(flags(&conn, 2), (false, true), "claimed in the same write");
    assert_eq!(flags(&conn, 3), (true, false), "the status after it still waits");
    assert_eq!(flags(&conn, 5), (false, false), "call y's head is let go for a later claim");
    let due = deliveries::claim(&conn, &[("a".into(), 5)], 0).expect("claim");
    assert_eq!(due.items.iter().map(|c| c.id).collect::<Vec<_>>(), [5], "only the unclaimed head is due");
}

#[tokio::test]
async fn a_claim_set_aside_for_a_finished_call_goes_back_to_the_claim() {
    let (_dir, conn) = migrated().await;
    chain(&conn, "x", 1, 2);
    chain(&conn, "z", 3, 1);
    let done = [finished("x", 1), finished("z", 3), finished("x", 1)];
    let mut wants = vec![("a".to_string(), 5), ("b".to_string(), 2)];

    let claimed = deliveries::release_chains(&conn, &done, &mut wants).expect("release");
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), [2], "call z has nothing left; x is there once");
    assert_eq!(wants, [("a".to_string(), 4), ("b".to_string(), 2)]);
}

#[tokio::test]
async fn the_oldest_due_is_the_earliest_claimable_delivery_that_is_due() {
    let (_dir, conn) = migrated().await;
    for (id, subscriber, due) in [(1, "a", 5), (2, "a", 5), (3, "a", 20), (4, "a", 10), (5, "a", 100), (6, "b", 80)] {
        delivery(&conn, id, subscriber, due, id == 2);
    }
    delivery(&conn, 7, "c", 0, false);
    conn.execute_batch(
        "UPDATE deliveries SET claimed = 1 WHERE id = 1;
         UPDATE deliveries SET state = 'delivered' WHERE id IN (4, 7);",
    )
    .unwrap();
    let oldest: Vec<(String, Option<i64>)> = conn
        .prepare(read::OLDEST_DUE)
        .unwrap()
        .query_map([50], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // a: claimed (1), blocked (2) and delivered (4) ones do not count; b: nothing due yet;
    // c: nothing left to claim.
    assert_eq!(oldest, [("a".to_string(), Some(20)), ("b".to_string(), None)]);
}
