//! The storage seam's contract (issue 12, point 2): delivery semantics written against
//! `outbox::Store` alone, run against every backend [`backends`] lists: SQLite, and
//! PostgreSQL (issue 15; a database of its own per case on `testing::PostgresServer`).
//!
//! The delivery loop's slots are given no room, so nothing is handed over at ingest and every
//! delivery is claimed through `Store::cycle`, the way every backend is asked.

use std::{path::Path, sync::Arc};

use push_core::{
    outbox::{
        self, ClaimBatch, Completion, IngestItem, IngestOutcome, NextState, RedeliverFilter, RetentionPolicy, Store,
    },
    schema,
    slots::Slots,
    testing::{seed_cdr, status_event, PostgresServer},
    Service,
};
use serde_json::Value;

const NOW: i64 = 1_900_000_000_000;
const DAY: i64 = 86_400_000;

/// Database URLs of every backend under test, each fresh: a SQLite file in `dir`, and a new
/// database on `postgres`.
async fn backends(dir: &Path, service: Service, postgres: &PostgresServer) -> Vec<String> {
    vec![format!("sqlite://{}", dir.join(format!("{service:?}.db")).display()), postgres.database().await]
}

/// Runs `case` on a fresh store of each backend.
async fn each_backend<F, Fut>(service: Service, case: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    each_backend_with(service, false, case).await;
}

/// As [`each_backend`], with `status.supersede` on or off.
async fn each_backend_with<F, Fut>(service: Service, supersede: bool, case: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let postgres = PostgresServer::start().await;
    for url in backends(dir.path(), service, &postgres).await {
        let slots = Arc::new(Slots::new(0, 0, ["a", "b"]));
        let replica = outbox::Replica::from_env(outbox::DEFAULT_LEASE);
        let opened = outbox::open_replica(&url, service, slots, replica, supersede)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:#}"));
        case(opened.store.clone()).await;
        opened.store.close().await;
        drop(opened.store);
        opened.task.await.unwrap();
    }
}

/// Items of `body` (validated for `service`) for subscribers `subs`, with ids `id-<callId>-<n>`.
fn items(service: Service, body: Value, subs: &[&str]) -> Vec<IngestItem> {
    let events = schema::validate_body(service, &body).expect("valid");
    let item = |(i, e): (usize, schema::ValidEvent)| {
        let event = e.into_stored();
        let event_id = format!("id-{}-{i}", event.call_id);
        IngestItem { event, event_id, subscribers: subs.iter().map(|s| s.to_string()).collect() }
    };
    events.into_iter().enumerate().map(item).collect()
}

async fn ingest(store: &dyn Store, items: Vec<IngestItem>, now: i64) -> IngestOutcome {
    store.ingest(items, now).await.expect("ingest")
}

async fn claim(store: &dyn Store, sub: &str, n: usize, now: i64) -> ClaimBatch {
    store.cycle(Arc::new(vec![]), vec![(sub.to_string(), n)], now).await.expect("cycle")
}

/// Records one attempt of `claimed` delivery `id` with outcome `next`.
async fn finish(store: &dyn Store, batch: &ClaimBatch, i: usize, next: NextState, now: i64) {
    store.cycle(Arc::new(vec![completion(&batch.items[i], next, now)]), vec![], now).await.expect("record");
}

/// The result of the next attempt of claimed delivery `c` at `now`: 200 when delivered,
/// 500 otherwise.
fn completion(c: &outbox::Claimed, next: NextState, now: i64) -> Completion {
    Completion {
        id: c.id,
        subscriber: c.subscriber.clone(),
        call_id: c.call_id.clone(),
        attempt: c.attempts + 1,
        at: now,
        status: Some(if next == NextState::Delivered { 200 } else { 500 }),
        error: None,
        latency_ms: 1,
        next,
    }
}

fn counts(rows: &[outbox::StatsRow], sub: &str, state: &str) -> i64 {
    rows.iter().filter(|r| r.subscriber == sub && r.state == state).map(|r| r.count).sum()
}

#[tokio::test]
async fn a_stored_event_is_claimed_once_per_subscriber_and_stays_delivered() {
    each_backend(Service::Cdr, |store| async move {
        let body = Value::Array((0..3).map(|i| seed_cdr(&format!("c{i}"))).collect());
        assert!(matches!(
            ingest(&*store, items(Service::Cdr, body, &["a", "b"]), NOW).await,
            IngestOutcome::Accepted { .. }
        ));
        let a = claim(&*store, "a", 10, NOW).await;
        assert_eq!(a.items.len(), 3);
        assert!(claim(&*store, "a", 10, NOW).await.items.is_empty(), "claimed deliveries are not claimed twice");
        assert_eq!(claim(&*store, "b", 10, NOW).await.items.len(), 3, "each subscriber has its own");
        for i in 0..3 {
            finish(&*store, &a, i, NextState::Delivered, NOW).await;
        }
        let stats = store.stats().await.unwrap();
        assert_eq!((counts(&stats, "a", "delivered"), counts(&stats, "b", "pending")), (3, 3));
        assert!(claim(&*store, "a", 10, NOW + DAY).await.items.is_empty(), "delivered stays delivered");
    })
    .await;
}

#[tokio::test]
async fn a_duplicate_is_answered_with_the_first_event_id_and_stored_once() {
    each_backend(Service::Cdr, |store| async move {
        ingest(&*store, items(Service::Cdr, seed_cdr("dup"), &["a"]), NOW).await;
        let mut again = items(Service::Cdr, seed_cdr("dup"), &["a"]);
        again[0].event_id = "another-id".into();
        match ingest(&*store, again, NOW + 1).await {
            IngestOutcome::Accepted { items, new_deliveries, .. } => {
                assert!(items[0].duplicate);
                assert_eq!(items[0].event_id, "id-dup-0");
                assert!(new_deliveries.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.pending_counts().await.unwrap(), [("a".to_string(), 1)]);
    })
    .await;
}

#[tokio::test]
async fn a_status_after_hangup_refuses_its_whole_request_and_sequences_count_per_call() {
    each_backend(Service::Status, |store| async move {
        let call = |s: &str| status_event("k1", s, NOW);
        ingest(&*store, items(Service::Status, Value::Array(vec![call("DIALING"), call("HANGUP")]), &["a"]), NOW).await;
        let late = Value::Array(vec![status_event("k2", "DIALING", NOW), call("ANSWERED")]);
        match ingest(&*store, items(Service::Status, late, &["a"]), NOW).await {
            IngestOutcome::AfterHangup { index, call_id } => assert_eq!((index, call_id.as_str()), (1, "k1")),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.pending_counts().await.unwrap(), [("a".to_string(), 2)], "nothing of the refused request");
        let head = claim(&*store, "a", 10, NOW).await;
        let body: Value = serde_json::from_str(&head.items[0].payload).unwrap();
        assert_eq!((body["status"].as_str(), body["sequence"].as_i64()), (Some("DIALING"), Some(0)));
    })
    .await;
}

#[tokio::test]
async fn a_calls_statuses_are_claimed_one_at_a_time_in_sequence() {
    each_backend(Service::Status, |store| async move {
        let statuses = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];
        let body = Value::Array(statuses.iter().map(|s| status_event("seq", s, NOW)).collect());
        ingest(&*store, items(Service::Status, body, &["a"]), NOW).await;
        for (i, status) in statuses.iter().enumerate() {
            let batch = claim(&*store, "a", 10, NOW).await;
            assert_eq!(batch.items.len(), 1, "only the head of the call is claimable");
            let body: Value = serde_json::from_str(&batch.items[0].payload).unwrap();
            assert_eq!((body["status"].as_str(), body["sequence"].as_i64()), (Some(*status), Some(i as i64)));
            assert!(claim(&*store, "a", 10, NOW).await.items.is_empty(), "the next waits for this one");
            finish(&*store, &batch, 0, NextState::Delivered, NOW).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_retry_waits_for_its_time_a_dead_delivery_is_redelivered_and_released_claims_return() {
    each_backend(Service::Cdr, |store| async move {
        ingest(&*store, items(Service::Cdr, seed_cdr("r1"), &["a"]), NOW).await;
        let first = claim(&*store, "a", 10, NOW).await;
        finish(&*store, &first, 0, NextState::RetryAt(NOW + 5_000), NOW).await;
        let early = claim(&*store, "a", 10, NOW + 4_999).await;
        assert!(early.items.is_empty());
        assert_eq!(early.unfilled, [("a".to_string(), Some(NOW + 5_000))], "says when the next one falls due");
        let retry = claim(&*store, "a", 10, NOW + 5_000).await;
        assert_eq!(retry.items[0].attempts, 1);
        finish(&*store, &retry, 0, NextState::Dead, NOW + 5_000).await;
        assert_eq!(counts(&store.stats().await.unwrap(), "a", "dead"), 1);
        let filter = RedeliverFilter { state: Some("dead".into()), ..RedeliverFilter::default() };
        assert_eq!(store.redeliver(filter, NOW + 6_000).await.unwrap(), 1);
        let again = claim(&*store, "a", 10, NOW + 6_000).await;
        assert_eq!(again.items.len(), 1, "redelivered");
        store.release_claims().await.unwrap();
        assert_eq!(claim(&*store, "a", 10, NOW + 6_000).await.items.len(), 1, "a released claim is claimable again");
    })
    .await;
}

/// Records every claimed delivery of `batch` with outcome `next`, in one round trip.
async fn finish_all(store: &dyn Store, batch: &ClaimBatch, next: NextState, now: i64) {
    let done = batch.items.iter().map(|c| completion(c, next, now)).collect();
    store.cycle(Arc::new(done), vec![], now).await.expect("record");
}

/// A redelivery re-chains every call it touches, thousands at once (PostgreSQL takes every
/// call with one lock for it, not one per call).
#[tokio::test]
async fn a_redelivery_of_thousands_of_dead_statuses_rechains_every_call() {
    const CALLS: usize = 5_000;
    const BATCH: usize = 1_000;
    each_backend(Service::Status, |store| async move {
        for b in 0..CALLS / BATCH {
            let body =
                Value::Array((0..BATCH).map(|i| status_event(&format!("dead-{b}-{i}"), "DIALING", NOW)).collect());
            ingest(&*store, items(Service::Status, body, &["a"]), NOW).await;
            let batch = claim(&*store, "a", BATCH, NOW).await;
            assert_eq!(batch.items.len(), BATCH);
            finish_all(&*store, &batch, NextState::Dead, NOW).await;
        }
        assert_eq!(counts(&store.stats().await.unwrap(), "a", "dead"), CALLS as i64);
        let filter = RedeliverFilter { state: Some("dead".into()), ..RedeliverFilter::default() };
        assert_eq!(store.redeliver(filter, NOW + 1).await.expect("redeliver"), CALLS as u64);
        let mut heads = 0;
        loop {
            let batch = claim(&*store, "a", 5 * BATCH, NOW + 1).await;
            if batch.items.is_empty() {
                break;
            }
            heads += batch.items.len();
        }
        assert_eq!(heads, CALLS, "every call's status is its chain's head again");
    })
    .await;
}

#[tokio::test]
async fn purging_removes_finished_events_and_their_keys_answer_inside_the_window() {
    each_backend(Service::Cdr, |store| async move {
        ingest(&*store, items(Service::Cdr, Value::Array(vec![seed_cdr("p1"), seed_cdr("p2")]), &["a"]), NOW).await;
        let batch = claim(&*store, "a", 10, NOW).await;
        finish(&*store, &batch, 0, NextState::Delivered, NOW).await;
        let policy =
            RetentionPolicy { retention_ms: Some(DAY), dead_retention_ms: Some(DAY), dedup_window_ms: Some(7 * DAY) };
        let mut purged = 0;
        loop {
            let report = store.purge(policy, NOW + 2 * DAY).await.unwrap();
            purged += report.events;
            if !report.more {
                break;
            }
        }
        assert_eq!(purged, 1, "the delivered one; the one in flight is pending");
        assert_eq!(counts(&store.stats().await.unwrap(), "a", "delivered"), 0);
        match ingest(&*store, items(Service::Cdr, seed_cdr("p1"), &["a"]), NOW + 2 * DAY).await {
            IngestOutcome::Accepted { items, .. } => assert!(items[0].duplicate, "its key outlives its body"),
            other => panic!("{other:?}"),
        }
    })
    .await;
}

/// The completion of one failed attempt of `c`, retried at `at`.
fn failed(c: &outbox::Claimed, at: i64) -> Completion {
    completion(c, NextState::RetryAt(at), NOW)
}

#[tokio::test]
async fn with_supersede_a_failed_status_with_a_later_one_pending_is_superseded_and_the_next_goes() {
    each_backend_with(Service::Status, true, |store| async move {
        // After its attempt: ANSWERED fails while HANGUP waits behind it.
        let body = Value::Array(vec![status_event("s1", "ANSWERED", NOW), status_event("s1", "HANGUP", NOW)]);
        ingest(&*store, items(Service::Status, body, &["a"]), NOW).await;
        let head = claim(&*store, "a", 10, NOW).await;
        let done = Arc::new(vec![failed(&head.items[0], NOW + 60_000)]);
        let batch = store.cycle(done, vec![("a".into(), 10)], NOW).await.expect("cycle");
        assert_eq!(batch.superseded, [("a".to_string(), 1)], "reported for the queue-depth gauge");
        let body: Value = serde_json::from_str(&batch.items[0].payload).unwrap();
        assert_eq!(body["status"], "HANGUP", "the next one goes at once, not after the retry");
        // At ingest: RINGING failed and waits for its retry when ANSWERED arrives.
        ingest(&*store, items(Service::Status, status_event("s2", "RINGING", NOW), &["a"]), NOW).await;
        let head = claim(&*store, "a", 10, NOW).await;
        store.cycle(Arc::new(vec![failed(&head.items[0], NOW + 60_000)]), vec![], NOW).await.expect("record");
        let mut later = items(Service::Status, status_event("s2", "ANSWERED", NOW), &["a"]);
        later[0].event_id = "id-s2-answered".into();
        match ingest(&*store, later, NOW).await {
            IngestOutcome::Accepted { superseded, .. } => assert_eq!(superseded, [("a".to_string(), 1)]),
            other => panic!("{other:?}"),
        }
        let next = claim(&*store, "a", 10, NOW).await;
        let body: Value = serde_json::from_str(&next.items[0].payload).unwrap();
        assert_eq!((body["callId"].as_str(), body["status"].as_str()), (Some("s2"), Some("ANSWERED")));
        let stats = store.stats().await.unwrap();
        assert_eq!(counts(&stats, "a", "superseded"), 2);
        let filter = RedeliverFilter { state: Some("superseded".into()), ..RedeliverFilter::default() };
        assert_eq!(store.redeliver(filter, NOW + 1).await.unwrap(), 2, "re-deliverable like dead");
    })
    .await;
}

#[tokio::test]
async fn without_supersede_a_failed_status_holds_the_next() {
    each_backend_with(Service::Status, false, |store| async move {
        let body = Value::Array(vec![status_event("s1", "ANSWERED", NOW), status_event("s1", "HANGUP", NOW)]);
        ingest(&*store, items(Service::Status, body, &["a"]), NOW).await;
        let head = claim(&*store, "a", 10, NOW).await;
        let batch = store.cycle(Arc::new(vec![failed(&head.items[0], NOW + 60_000)]), vec![("a".into(), 10)], NOW);
        let batch = batch.await.expect("cycle");
        assert!(batch.items.is_empty() && batch.superseded.is_empty(), "{batch:?}");
    })
    .await;
}

#[tokio::test]
async fn a_superseded_status_is_kept_for_dead_retention_like_a_dead_one() {
    each_backend_with(Service::Status, true, |store| async move {
        let body = Value::Array(vec![status_event("k1", "ANSWERED", NOW), status_event("k1", "HANGUP", NOW)]);
        ingest(&*store, items(Service::Status, body, &["a"]), NOW).await;
        let head = claim(&*store, "a", 10, NOW).await;
        let done = Arc::new(vec![failed(&head.items[0], NOW + 60_000)]);
        let next = store.cycle(done, vec![("a".into(), 10)], NOW).await.expect("cycle");
        finish(&*store, &next, 0, NextState::Delivered, NOW).await;
        let policy = RetentionPolicy {
            retention_ms: Some(DAY),
            dead_retention_ms: Some(10 * DAY),
            dedup_window_ms: Some(30 * DAY),
        };
        let purge_all = |at: i64| {
            let store = store.clone();
            async move {
                let mut purged = 0;
                loop {
                    let report = store.purge(policy, at).await.unwrap();
                    purged += report.events;
                    if !report.more {
                        break purged;
                    }
                }
            }
        };
        assert_eq!(purge_all(NOW + 2 * DAY).await, 1, "the delivered HANGUP; the superseded one waits");
        assert_eq!(counts(&store.stats().await.unwrap(), "a", "superseded"), 1);
        assert_eq!(purge_all(NOW + 11 * DAY).await, 1, "then it goes after dead_retention");
        assert_eq!(counts(&store.stats().await.unwrap(), "a", "superseded"), 0);
    })
    .await;
}

#[tokio::test]
async fn a_held_attempt_keeps_its_retry_step_and_a_returned_claim_changes_nothing() {
    each_backend(Service::Cdr, |store| async move {
        ingest(&*store, items(Service::Cdr, seed_cdr("h1"), &["a"]), NOW).await;
        let first = claim(&*store, "a", 10, NOW).await;
        finish(&*store, &first, 0, NextState::Held, NOW).await;
        let again = claim(&*store, "a", 10, NOW).await;
        assert_eq!(again.items.len(), 1, "held: pending, due as before");
        let c = &again.items[0];
        assert_eq!((c.attempts, c.round_start), (1, 1), "logged as an attempt that does not count");
        finish(&*store, &again, 0, NextState::Returned, NOW).await;
        let back = claim(&*store, "a", 10, NOW).await;
        assert_eq!((back.items[0].attempts, back.items[0].round_start), (1, 1), "returned: nothing changed");
        let detail = store.delivery(back.items[0].id).await.unwrap().unwrap();
        assert_eq!(detail.attempt_log.len(), 1, "the held attempt is in the log, the returned claim is not");
    })
    .await;
}

#[tokio::test]
async fn a_pause_is_kept_and_a_removed_subscribers_deliveries_are_dropped_or_moved() {
    each_backend(Service::Status, |store| async move {
        store.set_paused("b".into(), true, NOW).await.unwrap();
        assert_eq!(store.paused().await.unwrap(), ["b"]);
        store.set_paused("b".into(), false, NOW).await.unwrap();
        assert!(store.paused().await.unwrap().is_empty());

        let call = |id: &str| Value::Array(["DIALING", "HANGUP"].iter().map(|s| status_event(id, s, NOW)).collect());
        ingest(&*store, items(Service::Status, call("m1"), &["gone"]), NOW).await;
        ingest(&*store, items(Service::Status, call("m2"), &["gone", "a"]), NOW).await;
        let report = store.move_deliveries("gone".into(), "a".into(), NOW).await.unwrap();
        assert_eq!((report.moved, report.skipped), (2, 2), "m2's two are a's already");
        assert_eq!(store.drop_deliveries("gone".into(), NOW).await.unwrap(), 2);
        let stats = store.stats().await.unwrap();
        assert_eq!((counts(&stats, "gone", "dead"), counts(&stats, "gone", "pending")), (2, 0));
        assert_eq!(counts(&stats, "a", "pending"), 4);
        for _ in 0..2 {
            let batch = claim(&*store, "a", 10, NOW).await;
            assert_eq!(batch.items.len(), 2, "one head per call, m1's moved chain included");
            for i in 0..2 {
                finish(&*store, &batch, i, NextState::Delivered, NOW).await;
            }
        }
        assert_eq!(counts(&store.stats().await.unwrap(), "a", "delivered"), 4);
    })
    .await;
}
