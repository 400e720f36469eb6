//! Issue 14, points 2, 3, 6 and 7: pause and resume, per-subscriber limits, removed
//! subscribers, and reloading the subscribers of a running program.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use push_core::{
    config::{Settings, Subscriber},
    reload::Loader,
    testing::{eventually, seed_cdr, subscriber, test_settings, ManualClock, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

fn cdrs(prefix: &str, n: usize) -> Value {
    Value::Array((0..n).map(|i| seed_cdr(&format!("{prefix}-{i}"))).collect())
}

async fn stats(app: &TestApp, sub: &str) -> Value {
    app.get_json("/v1/stats").await.1["subscribers"][sub].clone()
}

fn two(dir: &std::path::Path, a: &TestReceiver, b: &TestReceiver) -> Settings {
    let mut s = test_settings(dir, &a.url());
    s.subscribers = vec![subscriber("a", &a.url()), subscriber("b", &b.url())];
    s
}

/// Settings with the two subscribers `subs`, ids of the test's own (the metrics recorder is
/// shared by every test of the binary).
fn named(dir: &std::path::Path, subs: [(&str, &TestReceiver); 2]) -> Settings {
    let mut s = test_settings(dir, &subs[0].1.url());
    s.subscribers = subs.iter().map(|(id, r)| subscriber(id, &r.url())).collect();
    s
}

#[tokio::test]
async fn a_paused_subscriber_waits_across_a_restart_and_gets_everything_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (TestReceiver::start().await, TestReceiver::start().await);
    let app = TestApp::spawn(Service::Cdr, named(dir.path(), [("pa", &a), ("pb", &b)])).await;
    assert_eq!(app.post_json("/v1/subscribers/pb/pause", &json!({})).await.0, 200);
    assert_eq!(app.post_json("/v1/subscribers/nobody/pause", &json!({})).await.0, 404);
    eventually(WAIT, "pb paused", || async { (app.subscriber_health("pb").await["state"] == "paused").then_some(()) })
        .await;
    assert_eq!(app.ingest(&cdrs("p", 30)).await.status(), 202);
    // a, the witness, gets all 30; b, paused, none of them.
    a.wait_for_successes(30, WAIT).await;
    assert_eq!(b.arrivals(), 0);
    app.stop().await.unwrap();

    let app = TestApp::spawn(Service::Cdr, named(dir.path(), [("pa", &a), ("pb", &b)])).await;
    assert_eq!(app.subscriber_health("pb").await["state"], "paused", "kept across the restart");
    assert_eq!(app.ingest(&cdrs("q", 10)).await.status(), 202);
    a.wait_for_successes(40, WAIT).await;
    assert_eq!(b.arrivals(), 0);
    let health = app.subscriber_health("pb").await;
    assert_eq!((health["queueDepth"].clone(), health["dead"].clone()), (json!(40), json!(0)));
    let (_, metrics) = (0, app.client.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap());
    assert!(metrics.contains("voice_push_subscriber_state{subscriber=\"pb\"} 2"), "paused on the gauge");

    assert_eq!(app.post_json("/v1/subscribers/pb/resume", &json!({})).await.0, 200);
    b.wait_for_successes(40, WAIT).await;
    let s = stats(&app, "pb").await;
    assert_eq!((s["delivered"].clone(), s["dead"].clone()), (json!(40), json!(0)));
    assert_eq!(app.subscriber_health("pb").await["state"], "closed");
    app.stop().await.unwrap();
}

/// The most requests that overlapped in time at the receiver, each lasting `hold`.
fn most_at_once(arrivals: &[Instant], hold: Duration) -> usize {
    arrivals.iter().map(|&t| arrivals.iter().filter(|&&u| u <= t && t < u + hold).count()).max().unwrap_or(0)
}

#[tokio::test]
async fn max_in_flight_and_rate_limit_per_second_hold_per_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (TestReceiver::start().await, TestReceiver::start().await);
    a.set_behavior(|_| (200, Duration::from_millis(100)));
    let mut s = two(dir.path(), &a, &b);
    s.subscribers[0].max_in_flight = Some(3);
    s.subscribers[1].rate_limit_per_second = 40;
    let app = TestApp::spawn(Service::Cdr, s).await;
    assert_eq!(app.ingest(&cdrs("l", 120)).await.status(), 202);
    let (got_a, got_b) = (a.wait_for_successes(120, WAIT).await, b.wait_for_successes(120, WAIT).await);

    let at_a: Vec<Instant> = got_a.iter().map(|r| r.at).collect();
    // A request is in flight from its arrival for at least its 100 ms delay.
    assert!(most_at_once(&at_a, Duration::from_millis(95)) <= 3, "a's limit of 3 in flight");
    assert!(most_at_once(&at_a, Duration::from_millis(95)) >= 2, "a's attempts do overlap");

    let mut at_b: Vec<Instant> = got_b.iter().map(|r| r.at).collect();
    at_b.sort();
    let span = at_b[119].duration_since(at_b[0]);
    // 120 at 40/s with a burst of 4: at least (120 - 4) / 40 = 2.9 s.
    assert!(span >= Duration::from_millis(2800), "b's 120 pushes took {span:?}");
    let in_any_second =
        at_b.iter().map(|&t| at_b.iter().filter(|&&u| u >= t && u < t + Duration::from_secs(1)).count());
    let most = in_any_second.max().unwrap();
    assert!(most <= 45, "{most} pushes in one second at 40/s");
    let health = app.subscriber_health("b").await;
    assert_eq!(
        (health["rateLimitPerSecond"].clone(), app.subscriber_health("a").await["maxInFlight"].clone()),
        (json!(40), json!(3))
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_removed_subscriber_is_shown_as_removed_and_not_attempted() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (TestReceiver::start().await, TestReceiver::start().await);
    let app = TestApp::spawn(Service::Cdr, two(dir.path(), &a, &b)).await;
    app.post_json("/v1/subscribers/b/pause", &json!({})).await;
    eventually(WAIT, "b paused", || async { (app.subscriber_health("b").await["state"] == "paused").then_some(()) })
        .await;
    assert_eq!(app.ingest(&cdrs("r", 25)).await.status(), 202);
    a.wait_for_successes(25, WAIT).await;
    app.stop().await.unwrap();

    let mut only_a = test_settings(dir.path(), &a.url());
    only_a.subscribers = vec![subscriber("a", &a.url())];
    let app = TestApp::spawn(Service::Cdr, only_a).await;
    let b_health = app.subscriber_health("b").await;
    assert_eq!((b_health["state"].clone(), b_health["queueDepth"].clone()), (json!("removed"), json!(25)));
    assert_eq!(app.ingest(&cdrs("s", 5)).await.status(), 202);
    a.wait_for_successes(30, WAIT).await;
    assert_eq!(b.arrivals(), 0, "removed: not attempted");
    assert_eq!(stats(&app, "b").await["pending"], 25, "and nothing deleted");
    app.stop().await.unwrap();
}

/// A loader returning whatever the test last put in `slot`, validated as a file would be.
fn loader(slot: &Arc<Mutex<Settings>>) -> Loader {
    let slot = slot.clone();
    Arc::new(move || {
        let s = slot.lock().unwrap().clone();
        s.validate()?;
        Ok(s)
    })
}

#[tokio::test]
async fn a_reload_adds_removes_and_changes_subscribers_without_losing_or_repeating_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let receivers = [TestReceiver::start().await, TestReceiver::start().await, TestReceiver::start().await];
    let [keep, moved_to, added] = &receivers;
    let changed_from = TestReceiver::start().await;
    let gone = TestReceiver::start().await;
    for r in [keep, moved_to, added, &changed_from, &gone] {
        r.set_behavior(|_| (200, Duration::from_millis(5)));
    }
    let mut s = test_settings(dir.path(), &keep.url());
    s.subscribers = vec![
        subscriber("keep", &keep.url()),
        subscriber("changed", &changed_from.url()),
        subscriber("gone", &gone.url()),
    ];
    let slot = Arc::new(Mutex::new(s.clone()));
    let app = TestApp::spawn_reloadable(
        Service::Cdr,
        s.clone(),
        Arc::new(push_core::clock::SystemClock),
        Some(loader(&slot)),
    )
    .await;
    // Load goes on while the configuration changes.
    for i in 0..10 {
        assert_eq!(app.ingest(&cdrs(&format!("before{i}"), 50)).await.status(), 202);
    }
    let mut new = s.clone();
    new.subscribers = vec![
        subscriber("keep", &keep.url()),
        Subscriber { rate_limit_per_second: 0, max_in_flight: Some(4), ..subscriber("changed", &moved_to.url()) },
        subscriber("added", &added.url()),
    ];
    *slot.lock().unwrap() = new;
    let (status, report) = app.post_json("/v1/reload", &json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report, json!({"added": ["added"], "removed": ["gone"], "changed": ["changed"], "restartNeeded": []}));
    for i in 0..10 {
        assert_eq!(app.ingest(&cdrs(&format!("after{i}"), 50)).await.status(), 202);
    }
    keep.wait_for_successes(1000, WAIT).await;
    added.wait_for_successes(500, WAIT).await;
    // `changed` got every event once, across its old and new URL.
    let ids = eventually(WAIT, "changed's 1000 deliveries", || async {
        let mut ids: Vec<String> = [&changed_from, moved_to]
            .iter()
            .flat_map(|r| r.received())
            .filter(|r| r.answered == 200)
            .map(|r| r.header("webhook-id").unwrap().to_string())
            .collect();
        ids.sort();
        (ids.len() >= 1000).then_some(ids)
    })
    .await;
    let total = ids.len();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!((total, unique.len()), (1000, 1000), "none lost, none repeated");
    assert!(moved_to.arrivals() >= 500, "the new URL took over");
    assert_eq!(stats(&app, "changed").await["pending"], 0);
    assert_eq!(app.subscriber_health("changed").await["maxInFlight"], 4);
    assert!(gone.arrivals() <= 500, "gone got nothing ingested after the reload");
    assert_eq!(app.subscriber_health("gone").await["state"], "removed");
    let gone_stats = stats(&app, "gone").await;
    let kept = gone_stats["pending"].as_i64().unwrap() + gone_stats["delivered"].as_i64().unwrap();
    assert_eq!(kept, 500, "what gone had stays, delivered or kept pending: {gone_stats}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_naming_the_key_and_the_running_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let s = test_settings(dir.path(), &receiver.url());
    let slot = Arc::new(Mutex::new(s.clone()));
    let clock = ManualClock::at(1_900_000_000_000);
    let app = TestApp::spawn_reloadable(Service::Cdr, s.clone(), clock, Some(loader(&slot))).await;
    let mut bad = s.clone();
    bad.subscribers[0].cdr_url = Some("ftp://example.com/cdr".into());
    bad.subscribers.push(subscriber("new", &receiver.url()));
    *slot.lock().unwrap() = bad;
    let (status, body) = app.post_json("/v1/reload", &json!({})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "invalid_configuration");
    assert_eq!(body["details"][0]["field"], "subscribers[0].cdr_url", "{body}");
    assert_eq!(app.subscriber_health("new").await, Value::Null, "nothing of it applied");
    assert_eq!(app.ingest(&cdrs("i", 3)).await.status(), 202);
    receiver.wait_for_successes(3, WAIT).await;
    app.stop().await.unwrap();
}

/// Sections other than the subscribers take effect at the next start, and a reload says
/// which differ, secrets included: a changed ingest token or source password reads the same
/// in a redacted `Debug` form, and was once missed.
#[tokio::test]
async fn a_reload_names_the_sections_that_need_a_restart_even_when_only_a_secret_changed() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let mut s = test_settings(dir.path(), &receiver.url());
    s.ingest.auth_tokens = vec![push_core::config::Secret::new("token-one")];
    let slot = Arc::new(Mutex::new(s.clone()));
    let clock = ManualClock::at(1_900_000_000_000);
    let app = TestApp::spawn_reloadable(Service::Cdr, s.clone(), clock, Some(loader(&slot))).await;
    let (status, report) = app.post_json("/v1/reload", &json!({})).await;
    assert_eq!((status, &report["restartNeeded"]), (200, &json!([])), "nothing changed: {report}");
    let mut new = s.clone();
    new.ingest.auth_tokens = vec![push_core::config::Secret::new("token-two")];
    new.retry.schedule.push(Duration::from_secs(7));
    *slot.lock().unwrap() = new;
    let (status, report) = app.post_json("/v1/reload", &json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["restartNeeded"], json!(["retry", "ingest"]), "{report}");
    app.stop().await.unwrap();
}
