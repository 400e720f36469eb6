//! Delivery semantics (SPEC §4): retry schedule, persisted attempts, dead deliveries,
//! timeouts, Retry-After, 410, subscriber isolation, graceful shutdown.

use std::time::Duration;

use push_core::{
    testing::{eventually, seed_cdr, subscriber, test_settings, TestApp, TestReceiver},
    Service,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

async fn delivery_of(app: &TestApp, state: &str) -> Value {
    app.deliveries_eventually(&format!("state={state}"), 1).await.remove(0)
}

fn millis_between(a: &push_core::testing::Received, b: &push_core::testing::Received) -> u128 {
    b.at.duration_since(a.at).as_millis()
}

#[tokio::test]
async fn retries_follow_the_configured_schedule_then_the_delivery_is_dead_and_kept() {
    let receiver = TestReceiver::start().await;
    receiver.answer(500);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(300), Duration::from_millis(600)];
    let app = TestApp::spawn(Service::Cdr, settings).await;
    assert_eq!(app.ingest(&seed_cdr("retry-1")).await.status(), 202);

    let dead = delivery_of(&app, "dead").await;
    let pushes = receiver.received();
    assert_eq!(pushes.len(), 3, "1 attempt + 2 retries, then dead");
    let attempts: Vec<_> = pushes.iter().map(|p| p.header("x-push-attempt").unwrap().to_string()).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(pushes.iter().all(|p| p.header("webhook-id") == pushes[0].header("webhook-id")));
    assert!(pushes.iter().all(|p| p.body == pushes[0].body), "body bytes never change");
    let (gap1, gap2) = (millis_between(&pushes[0], &pushes[1]), millis_between(&pushes[1], &pushes[2]));
    assert!((300..1500).contains(&gap1), "first retry after ~300 ms, was {gap1} ms");
    assert!((600..2000).contains(&gap2), "second retry after ~600 ms, was {gap2} ms");

    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["lastStatus"], 500);
    assert_eq!(dead["nextAttemptAt"], Value::Null);
    let (status, detail) = app.get_json(&format!("/v1/deliveries/{}", dead["id"])).await;
    assert_eq!(status, 200);
    let log = detail["attemptLog"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|a| a["status"] == 500 && a["error"].as_str().unwrap().contains("HTTP 500")));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_answer_slower_than_the_timeout_is_a_failure() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|r| match r.header("x-push-attempt") {
        Some("1") => (200, Duration::from_millis(1500)),
        _ => (200, Duration::ZERO),
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.delivery.timeout = Duration::from_millis(300);
    let app = TestApp::spawn(Service::Cdr, settings).await;
    app.ingest(&seed_cdr("slow-1")).await;

    let delivered = delivery_of(&app, "delivered").await;
    assert_eq!(delivered["attempts"], 2);
    let (_, detail) = app.get_json(&format!("/v1/deliveries/{}", delivered["id"])).await;
    let first = &detail["attemptLog"][0];
    assert_eq!(first["status"], Value::Null);
    assert!(first["error"].as_str().unwrap().contains("timeout"), "{first}");
    assert!(first["latencyMs"].as_i64().unwrap() < 1000);
    assert_eq!(detail["attemptLog"][1]["status"], 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_schedule_survives_a_restart() {
    let receiver = TestReceiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(1500)];
    let app = TestApp::spawn(Service::Cdr, settings.clone()).await;
    app.ingest(&seed_cdr("restart-1")).await;
    eventually(WAIT, "the first attempt recorded", || async {
        let (_, page) = app.get_json("/v1/deliveries?state=pending").await;
        (page["items"][0]["attempts"] == 1).then_some(())
    })
    .await;
    app.stop().await.unwrap();

    receiver.answer(200);
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let pushes = receiver.wait_for_successes(1, WAIT).await;
    assert_eq!(pushes.len(), 2);
    assert_eq!(pushes[1].header("x-push-attempt"), Some("2"), "the attempt count was persisted");
    let gap = millis_between(&pushes[0], &pushes[1]);
    assert!(gap >= 1500, "the persisted due time was kept across the restart ({gap} ms)");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn retry_after_lengthens_the_wait_and_gone_kills_at_once() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|r| match (r.path.as_str(), r.header("x-push-attempt")) {
        ("/gone/cdr", _) => (410, Duration::ZERO),
        (_, Some("1")) => (429, Duration::ZERO),
        _ => (200, Duration::ZERO),
    });
    receiver.set_retry_after(Some(1));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.subscribers.push(subscriber("gone", &format!("{}/gone", receiver.url())));
    let app = TestApp::spawn(Service::Cdr, settings).await;
    app.ingest(&seed_cdr("ra-1")).await;

    let pushes = receiver.wait_for_successes(1, WAIT).await;
    let demo: Vec<_> = pushes.iter().filter(|p| p.path == "/cdr").collect();
    assert_eq!(demo.len(), 2);
    let gap = millis_between(demo[0], demo[1]);
    assert!(gap >= 1000, "Retry-After: 1 beats the 50 ms schedule ({gap} ms)");

    let (_, dead) = app.get_json("/v1/deliveries?state=dead&subscriber=gone").await;
    assert_eq!(dead["items"][0]["attempts"], 1, "410 Gone is dead after one attempt");
    assert_eq!(receiver.received().iter().filter(|p| p.path == "/gone/cdr").count(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_stuck_subscriber_does_not_delay_a_healthy_one() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|r| match r.path.as_str() {
        "/stuck/cdr" => (200, Duration::from_secs(15)),
        _ => (200, Duration::ZERO),
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.subscribers.insert(0, subscriber("stuck", &format!("{}/stuck", receiver.url())));
    settings.delivery.timeout = Duration::from_secs(10);
    settings.delivery.max_in_flight = 16;
    settings.delivery.max_in_flight_per_subscriber = 8;
    settings.delivery.shutdown_grace = Duration::from_millis(100);
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let batch: Vec<Value> = (0..200).map(|i| seed_cdr(&format!("iso-{i}"))).collect();
    let started = std::time::Instant::now();
    assert_eq!(app.ingest(&Value::Array(batch)).await.status(), 202);

    let healthy = receiver.wait_for_successes(200, WAIT).await;
    let elapsed = started.elapsed();
    assert_eq!(healthy.iter().filter(|p| p.path == "/cdr").count(), 200);
    assert!(
        elapsed < Duration::from_secs(8),
        "all 200 healthy deliveries landed in {elapsed:?}, before any stuck attempt could even time out (10 s)"
    );
    app.stop().await.unwrap();
}

/// Concurrent requests are all stored and answered once each. (That requests waiting for the
/// writer share one commit is shown deterministically in `outbox::writer`'s tests: how many
/// share one here depends on how fast the writer is against the requests' arrival.)
#[tokio::test]
async fn concurrent_ingest_requests_are_all_stored() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(Service::Cdr, test_settings(dir.path(), &receiver.url())).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let (client, url) = (app.client.clone(), format!("{}/v1/cdrs", app.url));
        tasks.spawn(async move { client.post(url).json(&seed_cdr(&format!("gc-{i}"))).send().await.unwrap().status() });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 202);
    }
    let (_, stats) = app.get_json("/v1/stats").await;
    assert_eq!(stats["outbox"]["ingestRequests"], 200, "{stats}");
    let demo = &stats["subscribers"]["demo"];
    let stored: u64 = ["pending", "delivered", "dead"].iter().map(|s| demo[*s].as_u64().unwrap()).sum();
    assert_eq!(stored, 200, "one delivery per request: {stats}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_loop_does_not_poll_and_connections_are_reused() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.delivery.max_in_flight_per_subscriber = 4;
    let app = TestApp::spawn(Service::Cdr, settings).await;
    for i in 0..40 {
        assert_eq!(app.ingest(&seed_cdr(&format!("reuse-{i}"))).await.status(), 202);
    }
    let pushes = receiver.wait_for_successes(40, WAIT).await;
    let peers: std::collections::HashSet<_> = pushes.iter().map(|p| p.peer).collect();
    assert!(peers.len() <= 4, "40 pushes over at most 4 kept-alive connections, saw {}", peers.len());

    let claims = |stats: &Value| stats["outbox"]["claims"].as_u64().unwrap();
    eventually(WAIT, "all 40 recorded as delivered", || async {
        let (_, stats) = app.get_json("/v1/stats").await;
        (stats["subscribers"]["demo"]["delivered"] == 40).then_some(())
    })
    .await;
    let (_, before) = app.get_json("/v1/stats").await;
    tokio::time::sleep(Duration::from_millis(500)).await; // observing an absence needs a window
    let (_, after) = app.get_json("/v1/stats").await;
    assert!(
        claims(&after) - claims(&before) <= 1,
        "idle loop claimed {} times in 500 ms",
        claims(&after) - claims(&before)
    );
    assert_eq!(app.ingest(&seed_cdr("reuse-wake")).await.status(), 202);
    receiver.wait_for_successes(41, WAIT).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_graceful_stop_lets_an_attempt_in_flight_finish() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|_| (200, Duration::from_millis(400)));
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), &receiver.url());
    let app = TestApp::spawn(Service::Cdr, settings.clone()).await;
    app.ingest(&seed_cdr("grace-1")).await;
    eventually(WAIT, "the attempt to be in flight", || async { (receiver.arrivals() == 1).then_some(()) }).await;
    app.stop().await.unwrap();
    assert_eq!(receiver.received().len(), 1, "the attempt in flight was answered before the stop completed");

    let app = TestApp::spawn(Service::Cdr, settings).await;
    let delivered = delivery_of(&app, "delivered").await;
    assert_eq!(delivered["attempts"], 1, "its result was recorded; no second attempt after restart");
    app.stop().await.unwrap();
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn an_attempt_cut_off_by_the_grace_period_is_made_again_after_restart() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|_| (200, Duration::from_secs(3)));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.delivery.shutdown_grace = Duration::from_millis(200);
    settings.delivery.timeout = Duration::from_secs(5);
    let app = TestApp::spawn(Service::Cdr, settings.clone()).await;
    let body: Value = app.ingest(&seed_cdr("cut-1")).await.json().await.unwrap();
    eventually(WAIT, "the attempt to be in flight", || async { (receiver.arrivals() == 1).then_some(()) }).await;
    let started = std::time::Instant::now();
    app.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "the stop waited only for the grace period");

    receiver.answer(200);
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let delivered = delivery_of(&app, "delivered").await;
    assert_eq!(delivered["eventId"], body["accepted"][0]["eventId"]);
    assert_eq!(receiver.arrivals(), 2, "made again after the restart");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn attempts_in_flight_stay_within_the_per_subscriber_and_total_limits() {
    const ANSWER_AFTER: Duration = Duration::from_millis(150);
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|_| (200, ANSWER_AFTER));
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.subscribers.push(subscriber("second", &format!("{}/second", receiver.url())));
    settings.delivery.max_in_flight_per_subscriber = 3;
    settings.delivery.max_in_flight = 4;
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let batch: Vec<Value> = (0..12).map(|i| seed_cdr(&format!("limit-{i}"))).collect();
    assert_eq!(app.ingest(&Value::Array(batch)).await.status(), 202);
    let pushes = receiver.wait_for_successes(24, WAIT).await;

    // Each attempt is answered ANSWER_AFTER its arrival, and a slot is reused only after the
    // answer, so the arrivals inside any window of that length are attempts in flight at once.
    let most_at_once = |path: Option<&str>| {
        let at: Vec<_> = pushes.iter().filter(|p| path.is_none_or(|x| p.path == x)).map(|p| p.at).collect();
        at.iter().map(|start| at.iter().filter(|t| **t >= *start && **t - *start < ANSWER_AFTER).count()).max()
    };
    assert_eq!(most_at_once(None), Some(4), "the total limit is reached and holds");
    assert!(most_at_once(Some("/cdr")).unwrap() <= 3, "per-subscriber limit for demo");
    assert!(most_at_once(Some("/second/cdr")).unwrap() <= 3, "per-subscriber limit for second");
    app.stop().await.unwrap();
}
