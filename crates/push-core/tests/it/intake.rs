//! The intake without HTTP, as a new source would use it: validated events in, ids and
//! routing assigned, stored through the real outbox (a SQLite file in a temporary
//! directory), counted, and the delivery loop woken; duplicates, a status after HANGUP and a
//! stopping program answered as ingest answers them.

use std::{sync::Arc, time::Duration};

use push_core::{
    clock::SystemClock,
    intake::{Intake, IntakeError},
    outbox::{RedeliverFilter, Store},
    schema,
    slots::Slots,
    subscribers::{Roster, Routes},
    testing::{status_event, subscriber},
    Service,
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// An intake on a fresh outbox with subscribers `all` (every account) and `acme` (account
/// `acme` only), and the loop's wake-up to watch.
async fn intake(dir: &std::path::Path) -> (Intake, Arc<dyn Store>, Arc<Notify>, CancellationToken) {
    let mut acme = subscriber("acme", "http://127.0.0.1:9");
    acme.accounts = vec!["acme".into()];
    let routes = Roster::new(Routes::new(&[subscriber("all", "http://127.0.0.1:9"), acme], Service::Status));
    let slots = Arc::new(Slots::new(10, 10, ["all", "acme"]));
    let url = format!("sqlite://{}", dir.join("status.db").display());
    let outbox = push_core::outbox::open(&url, Service::Status, slots).await.unwrap().store;
    let (wake, stopping) = (Arc::new(Notify::new()), CancellationToken::new());
    let intake = Intake::new(routes, outbox.clone(), wake.clone(), Arc::new(SystemClock), stopping.clone());
    (intake, outbox, wake, stopping)
}

fn events(body: Value) -> Vec<schema::ValidEvent> {
    schema::validate_body(Service::Status, &body).expect("valid events")
}

async fn woken(wake: &Notify) -> bool {
    tokio::time::timeout(Duration::from_millis(500), wake.notified()).await.is_ok()
}

#[tokio::test]
async fn events_are_stored_for_their_subscribers_counted_and_the_loop_woken() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, outbox, wake, _) = intake(dir.path()).await;
    let mut acme_call = status_event("c2", "DIALING", 1_701_388_800_000);
    acme_call["accountId"] = "acme".into();
    let batch = Value::Array(vec![status_event("c1", "DIALING", 1_701_388_800_000), acme_call]);
    let accepted = intake.accept_events(events(batch.clone())).await.expect("stored");
    assert_eq!(accepted.len(), 2);
    assert!(accepted.iter().all(|a| !a.duplicate && a.event_id.len() == 36), "new uuid ids: {accepted:?}");
    assert!(woken(&wake).await, "the delivery loop is woken");
    let mut pending = outbox.pending_counts().await.unwrap();
    pending.sort();
    assert_eq!(pending, [("acme".to_string(), 1), ("all".to_string(), 2)], "routed by account");

    let again = intake.accept_events(events(batch)).await.expect("duplicates are accepted");
    assert!(again.iter().all(|a| a.duplicate));
    assert_eq!(
        again.iter().map(|a| &a.event_id).collect::<Vec<_>>(),
        accepted.iter().map(|a| &a.event_id).collect::<Vec<_>>()
    );
    assert!(!woken(&wake).await, "nothing new: no wake-up");
    assert_eq!(outbox.pending_counts().await.unwrap().iter().map(|(_, n)| n).sum::<i64>(), 3, "stored once");
}

#[tokio::test]
async fn a_status_after_hangup_or_a_stopping_program_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, outbox, _wake, stopping) = intake(dir.path()).await;
    intake.accept_events(events(status_event("c1", "HANGUP", 1_701_388_800_000))).await.unwrap();
    let late = Value::Array(vec![
        status_event("c9", "DIALING", 1_701_388_800_000),
        status_event("c1", "ANSWERED", 1_701_388_800_001),
    ]);
    match intake.accept_events(events(late)).await {
        Err(IntakeError::AfterHangup { index: 1, call_id }) => assert_eq!(call_id, "c1"),
        other => panic!("expected AfterHangup at 1, got {other:?}"),
    }
    stopping.cancel();
    let refused = intake.accept_events(events(status_event("c5", "DIALING", 1_701_388_800_000))).await;
    assert!(matches!(refused, Err(IntakeError::ShuttingDown)), "{refused:?}");
    assert!(intake.is_stopping());
    let stored: i64 = outbox.pending_counts().await.unwrap().iter().map(|(_, n)| n).sum();
    assert_eq!(stored, 1, "only the HANGUP (to `all`) was stored");
}

#[tokio::test]
async fn a_redelivery_goes_through_the_intake_and_wakes_the_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (intake, _outbox, wake, _) = intake(dir.path()).await;
    intake.accept_events(events(status_event("c1", "DIALING", 1_701_388_800_000))).await.unwrap();
    assert!(woken(&wake).await);
    let filter = RedeliverFilter { id: None, state: Some("dead".into()), subscriber: Some("all".into()) };
    assert_eq!(intake.redeliver(vec![filter]).await.unwrap(), 0, "nothing is dead");
    assert!(woken(&wake).await, "a redelivery wakes the loop");
}
