//! The hot statements' query plans: each finds its rows through an index, never by walking
//! the deliveries table or every pending delivery (which grows with the backlog and made
//! status ingest scale with it).

use sqlx::{Connection as _, Row as _, SqliteConnection};

use super::{bulk, deliveries, ingest, read, DeliveryFilter, MIGRATOR};

/// The plan lines of `sql` on an empty, migrated database.
async fn plan(sql: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("plans.db").display());
    let mut conn = SqliteConnection::connect(&url).await.expect("open");
    MIGRATOR.run(&mut conn).await.expect("migrate");
    let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(&mut conn).await.expect("explain");
    rows.iter().map(|r| r.get::<String, _>(3)).collect()
}

/// Asserts `sql` touches `deliveries` only through `index` (or its primary key).
async fn assert_deliveries_by(sql: &str, index: &str) {
    let lines = plan(sql).await;
    let on_deliveries: Vec<_> = lines.iter().filter(|l| l.contains("deliveries") || l.contains(" d ")).collect();
    assert!(!on_deliveries.is_empty(), "{lines:?}");
    for line in on_deliveries {
        assert!(line.starts_with("SEARCH"), "a scan in {lines:?}");
        assert!(!lines.iter().any(|l| l.contains("TEMP B-TREE FOR ORDER BY")), "a sort in {lines:?}");
        assert!(line.contains(index) || line.contains("PRIMARY KEY"), "not by {index}: {lines:?}");
    }
}

#[tokio::test]
async fn pending_chains_are_found_by_call() {
    assert_deliveries_by(ingest::PENDING_CHAINS, "deliveries_call").await;
}

#[tokio::test]
async fn rechaining_finds_statuses_by_call() {
    assert_deliveries_by(deliveries::RECHAIN_BLOCK, "deliveries_call").await;
}

#[tokio::test]
async fn claims_walk_the_due_index() {
    assert_deliveries_by(deliveries::CLAIM, "deliveries_due").await;
}

#[tokio::test]
async fn released_heads_are_found_by_call_and_updated_by_id() {
    let sql = deliveries::RELEASE_HEADS.replace("{values}", &bulk::values(2, 3));
    assert_deliveries_by(&sql, "deliveries_call").await;
}

#[tokio::test]
async fn pending_and_dead_deliveries_are_listed_and_counted_through_the_unfinished_index() {
    for state in ["pending", "dead"] {
        let filter = DeliveryFilter { state: Some(state.into()), limit: 10, ..DeliveryFilter::default() };
        let sql = read::list_query(&filter).sql().to_string();
        assert_deliveries_by(&sql, "deliveries_unfinished").await;
    }
    assert_deliveries_by(read::PENDING_COUNTS, "deliveries_unfinished").await;
}

#[tokio::test]
async fn the_oldest_due_deliveries_are_found_in_the_due_index() {
    assert_deliveries_by(read::OLDEST_DUE, "deliveries_due").await;
}

#[tokio::test]
async fn superseding_finds_chains_by_call() {
    assert_deliveries_by(super::supersede::SUPERSEDE_RETRIES, "deliveries_call").await;
    assert_deliveries_by(super::supersede::SUPERSEDE_HEADS, "deliveries_call").await;
}
