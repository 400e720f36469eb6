//! Retention (issue 12, point 4): finished events go after `outbox.retention` or
//! `outbox.dead_retention`, pending ones never; idempotency outlives the bodies for
//! `outbox.dedup_window`; an outbox from before retention migrates. The clock is driven by
//! hand, so "7 days later" is one call.

use std::{path::Path, time::Duration};

use push_core::{
    testing::{eventually, seed_cdr, status_event, subscriber, test_settings, ManualClock, TestApp, TestReceiver},
    Service, Settings,
};
use serde_json::{json, Value};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_900_000_000_000;
const WAIT: Duration = Duration::from_secs(15);

/// Rows left in the outbox file's tables `events`, `deliveries`, `attempts`, `purged_keys`
/// and `calls`, read through a connection of the test's own.
fn rows(db: &Path) -> [i64; 5] {
    let conn = rusqlite::Connection::open(db).unwrap();
    ["events", "deliveries", "attempts", "purged_keys", "calls"]
        .map(|t| conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0)).unwrap())
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// Settings with the given windows (days) and a clock-driven app.
fn settings(dir: &Path, receiver: &str, retention: u64, dead: u64, window: u64) -> Settings {
    let mut s = test_settings(dir, receiver);
    (s.outbox.retention, s.outbox.dead_retention, s.outbox.dedup_window) = (days(retention), days(dead), days(window));
    s
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

async fn listed(app: &TestApp, query: &str) -> Vec<Value> {
    let (_, page) = app.get_json(&format!("/v1/deliveries?{query}&limit=500")).await;
    page["items"].as_array().cloned().unwrap_or_default()
}

/// The one item of a 202's `accepted` list.
async fn accepted(response: reqwest::Response) -> Value {
    let body: Value = response.json().await.unwrap();
    body["accepted"][0].clone()
}

/// Waits until the outbox file holds exactly `want` events.
async fn events_left(db: &Path, want: i64) {
    eventually(WAIT, &format!("{want} events left"), || async { (rows(db)[0] == want).then_some(()) }).await
}

#[tokio::test]
async fn delivered_events_go_after_the_retention_dead_ones_after_theirs_and_pending_ones_never() {
    let (ok, gone, failing) = (TestReceiver::start().await, TestReceiver::start().await, TestReceiver::start().await);
    gone.answer(410); // dead at the first attempt
    failing.answer(500); // retried in 100 days: pending all along
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cdr.db");
    let mut s = settings(dir.path(), &ok.url(), 7, 30, 7);
    s.retry.schedule = vec![days(100)];
    for (id, receiver, account) in [("gone", &gone, "acc-gone"), ("failing", &failing, "acc-failing")] {
        s.subscribers
            .push(push_core::config::Subscriber { accounts: vec![account.into()], ..subscriber(id, &receiver.url()) });
    }
    s.subscribers[0].accounts = vec!["acc-ok".into()];
    let clock = ManualClock::at(T0);
    let app = TestApp::spawn_with_clock(Service::Cdr, s, clock.clone()).await;
    let cdr = |call: &str, account: &str| {
        let mut cdr = seed_cdr(call);
        cdr["accountId"] = json!(account);
        cdr
    };
    let batch = json!([
        cdr("ok-1", "acc-ok"),
        cdr("ok-2", "acc-ok"),
        cdr("gone-1", "acc-gone"),
        cdr("failing-1", "acc-failing")
    ]);
    assert_eq!(app.ingest(&batch).await.status(), 202);
    app.deliveries_eventually("state=delivered", 2).await;
    app.deliveries_eventually("state=dead", 1).await;
    eventually(WAIT, "the failing delivery's first attempt", || async {
        listed(&app, "subscriber=failing").await.first().filter(|d| d["attempts"] == 1).cloned()
    })
    .await;
    assert_eq!(rows(&db)[..3], [4, 4, 2], "4 events, 4 deliveries, the two failed attempts' rows");

    clock.set(T0 + 7 * DAY);
    tokio::time::sleep(push_core::retention::IDLE * 2).await;
    assert_eq!(rows(&db)[0], 4, "exactly 7 days old: nothing goes yet");

    // The recorder is the test binary's, shared with the other tests: count from here.
    let purged_before = metric(&app, "voice_push_purged_total").await;
    clock.set(T0 + 7 * DAY + 1);
    events_left(&db, 2).await;
    assert!(listed(&app, "subscriber=demo").await.is_empty(), "the delivered ones went with their deliveries");
    assert_eq!(rows(&db)[1..3], [2, 2]);
    assert_eq!(listed(&app, "state=dead").await.len(), 1, "a dead one waits for dead_retention");
    assert!(metric(&app, "voice_push_purged_total").await >= purged_before + 2.0);

    clock.set(T0 + 30 * DAY + 1);
    events_left(&db, 1).await;
    let left = listed(&app, "").await;
    assert_eq!(left.len(), 1);
    assert_eq!((left[0]["subscriber"].as_str(), left[0]["state"].as_str()), (Some("failing"), Some("pending")));
    assert_eq!(rows(&db)[..3], [1, 1, 1], "the pending delivery keeps its event and its attempt");
    assert!(metric(&app, "voice_push_purged_total").await >= purged_before + 3.0);

    clock.set(T0 + 99 * DAY);
    tokio::time::sleep(push_core::retention::IDLE * 2).await;
    assert_eq!(rows(&db)[0], 1, "pending: never purged, however old");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_duplicate_of_a_purged_cdr_is_answered_with_its_event_id_inside_the_window_and_is_new_after() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cdr.db");
    let clock = ManualClock::at(T0);
    let app =
        TestApp::spawn_with_clock(Service::Cdr, settings(dir.path(), &receiver.url(), 1, 1, 7), clock.clone()).await;
    let first = accepted(app.ingest(&seed_cdr("dup-1")).await).await;
    receiver.wait_for_successes(1, WAIT).await;
    clock.set(T0 + 2 * DAY);
    events_left(&db, 0).await;
    assert_eq!(rows(&db)[3], 1, "its dedup key stays while inside the window");

    let again = app.ingest(&seed_cdr("dup-1")).await;
    assert_eq!(again.status(), 202);
    let again = accepted(again).await;
    assert_eq!(again["eventId"], first["eventId"], "answered with the original eventId");
    assert_eq!(again["duplicate"], true);
    assert_eq!(rows(&db)[0], 0, "not stored again");

    clock.set(T0 + 7 * DAY + 1);
    eventually(WAIT, "the key leaves with the window", || async { (rows(&db)[3] == 0).then_some(()) }).await;
    let later = accepted(app.ingest(&seed_cdr("dup-1")).await).await;
    assert_ne!(later["eventId"], first["eventId"], "after the window it is a new record");
    receiver.wait_for_successes(2, WAIT).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn after_a_purge_inside_the_window_statuses_keep_their_sequences_and_a_status_after_hangup_is_409() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("status.db");
    let clock = ManualClock::at(T0);
    let app =
        TestApp::spawn_with_clock(Service::Status, settings(dir.path(), &receiver.url(), 1, 1, 7), clock.clone()).await;
    for (call, status) in
        [("hung", "DIALING"), ("hung", "RINGING"), ("hung", "HANGUP"), ("open", "DIALING"), ("open", "RINGING")]
    {
        assert_eq!(app.ingest(&status_event(call, status, T0)).await.status(), 202);
    }
    receiver.wait_for_successes(5, WAIT).await;
    clock.set(T0 + 2 * DAY);
    events_left(&db, 0).await;
    assert_eq!(rows(&db)[3..], [5, 2], "five dedup keys and both calls' sequences kept");

    let dup = accepted(app.ingest(&status_event("hung", "RINGING", T0)).await).await;
    assert_eq!(dup["duplicate"], true);
    let after_hangup = app.ingest(&status_event("hung", "ANSWERED", T0)).await;
    assert_eq!(after_hangup.status(), 409, "the HANGUP was purged; its key still refuses");
    assert_eq!(app.ingest(&status_event("open", "ANSWERED", T0 + 2 * DAY)).await.status(), 202);
    let pushed = receiver.wait_for_successes(6, WAIT).await;
    let answered = pushed.iter().map(|r| r.json()).find(|b| b["status"] == "ANSWERED").expect("ANSWERED pushed");
    assert_eq!(answered["sequence"], 2, "the call's sequence went on counting after its statuses were purged");
    assert_eq!(receiver.arrivals(), 6, "the duplicate and the refused status were not pushed");

    // Past the window the call is forgotten, once its last event is gone too.
    clock.set(T0 + 10 * DAY);
    eventually(WAIT, "keys and calls leave with the window", || async { (rows(&db) == [0; 5]).then_some(()) }).await;
    assert_eq!(app.ingest(&status_event("hung", "ANSWERED", T0 + 10 * DAY)).await.status(), 202, "a new call now");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_outbox_from_before_retention_migrates_and_is_purged() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cdr.db");
    // The schema as the previous release left it: the migrations before retention only.
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().as_ref() < "0005" {
            std::fs::copy(&path, old.join(path.file_name().unwrap())).unwrap();
        }
    }
    {
        use sqlx::ConnectOptions as _;
        let options: sqlx::sqlite::SqliteConnectOptions = format!("sqlite://{}", db.display())
            .parse::<sqlx::sqlite::SqliteConnectOptions>()
            .unwrap()
            .create_if_missing(true);
        let mut conn = options.connect().await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&mut conn).await.unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO events (id, event_id, dedup_key, call_id, party, payload, created_at)
                 VALUES (1, 'old-event', 'old-call|CALLER', 'old-call', 'CALLER', '{{}}', {T0});
             INSERT INTO deliveries (id, event_row, subscriber, call_id, state, next_attempt_at, created_at, updated_at)
                 VALUES (1, 1, 'demo', 'old-call', 'delivered', {T0}, {T0}, {T0});"
        ))
        .unwrap();
    }
    let clock = ManualClock::at(T0 + 8 * DAY);
    let app = TestApp::spawn_with_clock(Service::Cdr, settings(dir.path(), &receiver.url(), 7, 30, 7), clock).await;
    events_left(&db, 0).await;
    assert_eq!(rows(&db)[1], 0, "its delivery went with it");
    let fresh = app.ingest(&seed_cdr("after-migration")).await;
    assert_eq!(fresh.status(), 202);
    receiver.wait_for_successes(1, WAIT).await;
    app.stop().await.unwrap();
}
