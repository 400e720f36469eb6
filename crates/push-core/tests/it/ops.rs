//! The operations API (SPEC §5) and `/metrics`.

use std::{sync::Arc, time::Duration};

use push_core::{
    testing::{eventually, seed_cdr, subscriber, test_settings, ManualClock, TestApp, TestReceiver},
    Service, Settings,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

async fn post_json(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let r = app.client.post(format!("{}{path}", app.url)).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn wait_state(app: &TestApp, query: &str, n: usize) -> Vec<Value> {
    app.deliveries_eventually(query, n).await
}

#[tokio::test]
async fn lists_filter_and_page_deliveries_newest_first() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|r| if r.path.starts_with("/bad") { (500, Duration::ZERO) } else { (200, Duration::ZERO) });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![];
    settings.subscribers.push(subscriber("bad", &format!("{}/bad", receiver.url())));
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let batch: Vec<Value> = (0..7).map(|i| seed_cdr(&format!("list-{i}"))).collect();
    assert_eq!(app.ingest(&Value::Array(batch)).await.status(), 202);

    let delivered = wait_state(&app, "state=delivered", 7).await;
    let dead = wait_state(&app, "state=dead&subscriber=bad", 7).await;
    assert!(delivered.iter().all(|d| d["subscriber"] == "demo" && d["state"] == "delivered"));
    assert!(dead.iter().all(|d| d["lastStatus"] == 500 && d["attempts"] == 1));
    let ids: Vec<i64> = delivered.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for key in [
        "id",
        "eventId",
        "subscriber",
        "callId",
        "state",
        "attempts",
        "nextAttemptAt",
        "lastStatus",
        "lastError",
        "createdAt",
        "deliveredAt",
    ] {
        assert!(delivered[0].get(key).is_some(), "listed delivery has {key}");
    }

    let (_, by_call) = app.get_json("/v1/deliveries?callId=list-3").await;
    assert_eq!(by_call["items"].as_array().unwrap().len(), 2, "one per subscriber");

    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app.get_json(&format!("/v1/deliveries?limit=3&cursor={cursor}")).await;
        assert_eq!(status, 200);
        seen.extend(page["items"].as_array().unwrap().iter().map(|d| d["id"].as_i64().unwrap()));
        match page["next"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 14, "paging visits every delivery once");
    seen.dedup();
    assert_eq!(seen.len(), 14);

    let (status, err) = app.get_json("/v1/deliveries?state=lost").await;
    assert_eq!((status, err["details"][0]["field"].as_str()), (400, Some("state")));
    let (status, _) = app.get_json("/v1/deliveries?limit=0").await;
    assert_eq!(status, 400);
    let (status, _) = app.get_json("/v1/deliveries/999999").await;
    assert_eq!(status, 404);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn redelivery_one_and_in_bulk_brings_dead_deliveries_back() {
    let receiver = TestReceiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(10)];
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let batch: Vec<Value> = (0..5).map(|i| seed_cdr(&format!("re-{i}"))).collect();
    app.ingest(&Value::Array(batch)).await;
    let dead = wait_state(&app, "state=dead", 5).await;
    receiver.answer(200);

    let one = dead[0]["id"].as_i64().unwrap();
    let (status, body) = post_json(&app, &format!("/v1/deliveries/{one}/redeliver"), &json!({})).await;
    assert_eq!((status, body["redelivered"].as_u64()), (202, Some(1)));
    let detail = eventually(WAIT, "the redelivered one delivered", || async {
        let (_, d) = app.get_json(&format!("/v1/deliveries/{one}")).await;
        (d["state"] == "delivered").then_some(d)
    })
    .await;
    let log = detail["attemptLog"].as_array().unwrap();
    assert_eq!(log.len(), 3, "two failed attempts, then the redelivered one");
    assert_eq!((log[2]["attempt"].as_i64(), log[2]["status"].as_i64()), (Some(3), Some(200)));

    let (status, body) =
        post_json(&app, "/v1/deliveries/redeliver", &json!({"state": "dead", "subscriber": "demo"})).await;
    assert_eq!((status, body["redelivered"].as_u64()), (202, Some(4)));
    wait_state(&app, "state=delivered", 5).await;
    let (_, stats) = app.get_json("/v1/stats").await;
    assert_eq!(
        stats["subscribers"]["demo"],
        json!({"pending": 0, "delivered": 5, "dead": 0, "superseded": 0, "oldestDueAt": null, "oldestDueAgeMs": null})
    );

    let (status, _) = post_json(&app, "/v1/deliveries/redeliver", &json!({"subscriber": "nobody"})).await;
    assert_eq!(status, 400);
    let (status, _) = post_json(&app, "/v1/deliveries/123456/redeliver", &json!({})).await;
    assert_eq!(status, 404);
    app.stop().await.unwrap();
}

fn metric(text: &str, name: &str, subscriber: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| subscriber.is_none_or(|s| l.contains(&format!("subscriber=\"{s}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_as_events_flow() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|r| match r.header("x-push-attempt") {
        Some("1") => (500, Duration::ZERO),
        _ => (200, Duration::ZERO),
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.subscribers = vec![subscriber("metered", &receiver.url())];
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let scrape = || async {
        let r = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let before = scrape().await;
    let batch: Vec<Value> = (0..4).map(|i| seed_cdr(&format!("m-{i}"))).collect();
    app.ingest(&Value::Array(batch)).await;
    app.ingest(&seed_cdr("m-0")).await;
    receiver.wait_for_successes(4, WAIT).await;

    let after = eventually(WAIT, "delivered_total 4 and queue depth 0", || async {
        let text = scrape().await;
        let delivered = metric(&text, "voice_push_delivered_total", Some("metered"));
        let depth = metric(&text, "voice_push_queue_depth", Some("metered"));
        (delivered == 4.0 && depth == 0.0).then_some(text)
    })
    .await;
    let delta = |name: &str, sub: Option<&str>| metric(&after, name, sub) - metric(&before, name, sub);
    assert!(delta("voice_push_events_accepted_total", None) >= 4.0);
    assert!(delta("voice_push_events_duplicate_total", None) >= 1.0);
    assert_eq!(delta("voice_push_attempts_failed_total", Some("metered")), 4.0);
    assert_eq!(metric(&before, "voice_push_queue_depth", Some("metered")), 0.0);
    assert_eq!(metric(&after, "voice_push_attempt_latency_seconds_count", Some("metered")), 8.0);
    assert_eq!(metric(&after, "voice_push_dead_total", Some("metered")), 0.0);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn redelivering_a_delivered_one_keeps_its_first_success_in_the_log() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(Service::Cdr, test_settings(dir.path(), &receiver.url())).await;
    app.ingest(&seed_cdr("again-1")).await;
    let id = wait_state(&app, "state=delivered", 1).await[0]["id"].as_i64().unwrap();
    let (status, _) = post_json(&app, &format!("/v1/deliveries/{id}/redeliver"), &json!({})).await;
    assert_eq!(status, 202);
    let detail = eventually(WAIT, "delivered a second time", || async {
        let (_, d) = app.get_json(&format!("/v1/deliveries/{id}")).await;
        (d["state"] == "delivered" && d["attempts"] == 2).then_some(d)
    })
    .await;
    let log: Vec<(i64, i64)> = detail["attemptLog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["attempt"].as_i64().unwrap(), a["status"].as_i64().unwrap()))
        .collect();
    assert_eq!(log, [(1, 200), (2, 200)]);
    let pushes = receiver.wait_for_successes(2, WAIT).await;
    assert_eq!(pushes[1].header("x-push-attempt"), Some("2"));
    assert_eq!(pushes[0].header("webhook-id"), pushes[1].header("webhook-id"));
    app.stop().await.unwrap();
}

const T0: i64 = 1_800_000_000_000;
const HOUR_MS: i64 = 3_600_000;

/// `GET /v1/stats`'s entry of `subscriber`.
async fn stats_of(app: &TestApp, subscriber: &str) -> Value {
    let (status, stats) = app.get_json("/v1/stats").await;
    assert_eq!(status, 200);
    stats["subscribers"][subscriber].clone()
}

/// Runs subscriber `starved` (of `settings`) against a receiver answering 503, with the next
/// attempt an hour away on a clock standing at T0: two deliveries, attempted once, and
/// nothing due. Returns the time the earlier one falls due.
async fn two_retries_an_hour_away(settings: &Settings, clock: &Arc<ManualClock>) -> i64 {
    let app = TestApp::spawn_with_clock(Service::Cdr, settings.clone(), clock.clone()).await;
    let blank =
        json!({"pending": 0, "delivered": 0, "dead": 0, "superseded": 0, "oldestDueAt": null, "oldestDueAgeMs": null});
    assert_eq!(stats_of(&app, "starved").await, blank);
    let batch: Vec<Value> = (0..2).map(|i| seed_cdr(&format!("oldest-{i}"))).collect();
    assert_eq!(app.ingest(&Value::Array(batch)).await.status(), 202);
    // The retry is due an hour (plus the attempt's latency, in real milliseconds) after T0.
    let due = eventually(WAIT, "both answered 503 and rescheduled an hour later", || async {
        let (_, page) = app.get_json("/v1/deliveries?state=pending").await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let next: Vec<i64> =
            items.iter().filter(|d| d["attempts"] == 1).filter_map(|d| d["nextAttemptAt"].as_i64()).collect();
        (next.len() == 2).then(|| next.into_iter().min()).flatten()
    })
    .await;
    assert!((T0 + HOUR_MS..T0 + HOUR_MS + 10_000).contains(&due), "{due}");
    let nothing_due =
        json!({"pending": 2, "delivered": 0, "dead": 0, "superseded": 0, "oldestDueAt": null, "oldestDueAgeMs": null});
    assert_eq!(stats_of(&app, "starved").await, nothing_due, "the next attempt is an hour away");
    app.stop().await.unwrap();
    due
}

#[tokio::test]
async fn the_oldest_due_age_is_null_until_a_delivery_is_due_and_grows_while_nobody_claims_it() {
    let receiver = TestReceiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_secs(3600)];
    settings.subscribers = vec![subscriber("starved", &receiver.url())];
    let due = two_retries_an_hour_away(&settings, &clock).await;

    // Taken out of the configuration, the subscriber keeps its pending deliveries and
    // nobody claims them any more: once due, their age grows with the clock.
    settings.subscribers = vec![subscriber("fed", &receiver.url())];
    let app = TestApp::spawn_with_clock(Service::Cdr, settings, clock.clone()).await;
    for waited in [HOUR_MS, HOUR_MS + 1_500] {
        clock.set(due + waited);
        let starved = stats_of(&app, "starved").await;
        assert_eq!((starved["pending"].as_i64(), starved["oldestDueAt"].as_i64()), (Some(2), Some(due)));
        assert_eq!(starved["oldestDueAgeMs"].as_i64(), Some(waited));
        assert_eq!(stats_of(&app, "fed").await["oldestDueAgeMs"], Value::Null, "nothing of fed is due");
    }
    let r = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap();
    let text = r.text().await.unwrap();
    let gauge = "voice_push_oldest_due_age_seconds";
    assert_eq!(metric(&text, gauge, Some("starved")), 3601.5, "{text}");
    assert!(text.lines().any(|l| l.starts_with(&format!("{gauge}{{subscriber=\"fed\"}} 0"))), "{text}");
    app.stop().await.unwrap();
}
