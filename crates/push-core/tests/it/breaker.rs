//! Issue 14, point 1: a breaker per subscriber. Time is a `ManualClock`: a probe falls due
//! when the test moves the clock, so a ten-minute outage takes seconds.

use std::time::Duration;

use push_core::{
    config::Settings,
    testing::{eventually, seed_cdr, subscriber, test_settings, ManualClock, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};

const T0: i64 = 1_900_000_000_000;
const WAIT: Duration = Duration::from_secs(20);

fn cdrs(prefix: &str, n: usize) -> Value {
    Value::Array((0..n).map(|i| seed_cdr(&format!("{prefix}-{i}"))).collect())
}

fn settings(dir: &std::path::Path, receiver: &TestReceiver, failures: u32) -> Settings {
    let mut s = test_settings(dir, &receiver.url());
    s.breaker.failures = failures;
    s
}

/// Waits until the receiver has had exactly `n` requests.
async fn arrivals(receiver: &TestReceiver, n: usize) {
    eventually(WAIT, &format!("{n} arrivals"), || async { (receiver.arrivals() >= n).then_some(()) }).await;
    assert_eq!(receiver.arrivals(), n, "exactly {n} arrivals");
}

/// Waits until the breaker planned a probe after `now` (the last failure is recorded), so
/// moving the clock cannot race with it.
async fn probe_recorded(app: &TestApp, now: i64) {
    eventually(WAIT, "the next probe planned", || async {
        (app.subscriber_health("demo").await["nextProbeAt"].as_i64() > Some(now)).then_some(())
    })
    .await;
}

async fn stats(app: &TestApp, sub: &str) -> Value {
    app.get_json("/v1/stats").await.1["subscribers"][sub].clone()
}

#[tokio::test]
async fn it_opens_after_the_failures_in_a_row_probes_at_doubling_intervals_and_closes_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    receiver.answer(500);
    let mut s = settings(dir.path(), &receiver, 3);
    s.subscribers[0].max_in_flight = Some(1);
    let clock = ManualClock::at(T0);
    let app = TestApp::spawn_with_clock(Service::Cdr, s, clock.clone()).await;
    assert_eq!(app.ingest(&cdrs("c", 20)).await.status(), 202);

    arrivals(&receiver, 3).await;
    let health = eventually(WAIT, "the breaker open", || async {
        let h = app.subscriber_health("demo").await;
        (h["state"] == "open").then_some(h)
    })
    .await;
    assert_eq!(health["consecutiveFailures"], 3);
    assert_eq!(health["lastError"], "HTTP 500");
    assert_eq!(health["nextProbeAt"], T0 + 5_000);
    assert_eq!(health["queueDepth"], 20);
    // While it is open nothing goes: the witness is the clock's own probe below, which the
    // loop sends at once when due; before it, the count stands still.
    let mut now = T0;
    for (k, wait) in [5_000, 10_000, 20_000, 40_000].into_iter().enumerate() {
        assert_eq!(receiver.arrivals(), 3 + k, "no attempt between probes");
        now += wait;
        clock.set(now);
        arrivals(&receiver, 4 + k).await;
        let next = eventually(WAIT, "the next probe planned", || async {
            let h = app.subscriber_health("demo").await;
            (h["nextProbeAt"].as_i64() > Some(now)).then_some(h["nextProbeAt"].as_i64().unwrap())
        })
        .await;
        assert_eq!(next - now, 2 * wait, "the interval doubles");
    }
    assert_eq!(stats(&app, "demo").await["dead"], 0, "an outage kills nothing");

    receiver.answer(200);
    clock.set(now + 80_000);
    receiver.wait_for_successes(20, WAIT).await;
    let health = app.subscriber_health("demo").await;
    assert_eq!(health["state"], "closed");
    assert_eq!(health["consecutiveFailures"], 0);
    assert_eq!(health["failedAttempts"], 7, "3 that opened it and 4 failed probes");
    let s = stats(&app, "demo").await;
    assert_eq!((s["delivered"].clone(), s["dead"].clone()), (json!(20), json!(0)));
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_probe_does_not_advance_its_deliverys_retry_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    receiver.answer(503);
    let mut s = settings(dir.path(), &receiver, 1);
    // One retry: without the breaker, the second failed attempt would make it dead.
    s.retry.schedule = vec![Duration::from_millis(50)];
    let clock = ManualClock::at(T0);
    let app = TestApp::spawn_with_clock(Service::Cdr, s, clock.clone()).await;
    assert_eq!(app.ingest(&cdrs("p", 1)).await.status(), 202);
    arrivals(&receiver, 1).await;
    let mut now = T0;
    for probe in 1..=5 {
        probe_recorded(&app, now).await;
        now += 300_000;
        clock.set(now);
        arrivals(&receiver, 1 + probe).await;
    }
    probe_recorded(&app, now).await;
    let [delivery] = app.deliveries_eventually("subscriber=demo", 1).await.try_into().unwrap();
    let id = delivery["id"].as_i64().unwrap();
    let detail = eventually(WAIT, "six attempts logged", || async {
        let (_, d) = app.get_json(&format!("/v1/deliveries/{id}")).await;
        (d["attemptLog"].as_array().map(Vec::len) == Some(6)).then_some(d)
    })
    .await;
    assert_eq!(detail["state"], "pending", "six failed attempts, still pending: {detail}");
    receiver.answer(200);
    now += 300_000;
    clock.set(now);
    receiver.wait_for_successes(1, WAIT).await;
    let delivered = app.deliveries_eventually("state=delivered", 1).await;
    assert_eq!(delivered[0]["attempts"], 7);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_subscriber_within_the_timeout_never_opens_and_a_failing_one_never_holds_another() {
    let dir = tempfile::tempdir().unwrap();
    let (slow, failing) = (TestReceiver::start().await, TestReceiver::start().await);
    slow.set_behavior(|_| (200, Duration::from_millis(300)));
    failing.answer(500);
    let mut s = test_settings(dir.path(), &slow.url());
    s.breaker.failures = 2;
    s.subscribers = vec![subscriber("slow", &slow.url()), subscriber("failing", &failing.url())];
    let clock = ManualClock::at(T0);
    let app = TestApp::spawn_with_clock(Service::Cdr, s, clock).await;
    assert_eq!(app.ingest(&cdrs("s", 40)).await.status(), 202);
    slow.wait_for_successes(40, WAIT).await;
    let (slow_h, failing_h) = (app.subscriber_health("slow").await, app.subscriber_health("failing").await);
    assert_eq!(slow_h["state"], "closed", "{slow_h}");
    assert_eq!(slow_h["consecutiveFailures"], 0);
    assert_eq!(failing_h["state"], "open", "{failing_h}");
    assert_eq!(stats(&app, "failing").await["pending"], 40, "its deliveries wait");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn ten_minutes_down_with_100000_queued_costs_a_few_dozen_attempts_and_kills_none() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    receiver.answer(503);
    // The defaults: 10 failures, probes from 5 s doubling to 5 min, 32 in flight.
    let s = test_settings(dir.path(), &receiver.url());
    let clock = ManualClock::at(T0);
    let app = TestApp::spawn_with_clock(Service::Cdr, s, clock.clone()).await;
    for batch in 0..100 {
        assert_eq!(app.ingest(&cdrs(&format!("b{batch}"), 1000)).await.status(), 202);
    }
    eventually(WAIT, "the breaker open", || async {
        (app.subscriber_health("demo").await["state"] == "open").then_some(())
    })
    .await;
    let opened_with = receiver.arrivals();
    let mut now = T0;
    let mut probes = 0;
    while now < T0 + 600_000 {
        let next = app.subscriber_health("demo").await["nextProbeAt"].as_i64().expect("open, probing");
        if next > T0 + 600_000 {
            break;
        }
        now = next;
        clock.set(now);
        probes += 1;
        arrivals(&receiver, opened_with + probes).await;
        eventually(WAIT, "the probe recorded", || async {
            let h = app.subscriber_health("demo").await;
            (h["nextProbeAt"].as_i64() > Some(now)).then_some(())
        })
        .await;
    }
    let failed = receiver.arrivals();
    eprintln!(
        "ten minutes down: {failed} failed attempts ({opened_with} until it opened and in flight, {probes} probes)"
    );
    assert!(failed <= 60, "{failed} failed attempts in ten minutes ({opened_with} before it opened, {probes} probes)");
    assert_eq!(probes, 6, "5, 15, 35, 75, 155 and 315 s after it opened (the next at 615 s)");

    receiver.answer(200);
    clock.set(T0 + 1_000_000);
    eventually(Duration::from_secs(240), "100000 delivered", || async {
        (stats(&app, "demo").await["delivered"] == 100_000).then_some(())
    })
    .await;
    let s = stats(&app, "demo").await;
    assert_eq!((s["pending"].clone(), s["dead"].clone()), (json!(0), json!(0)));
    let mut ids: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.header("webhook-id").unwrap().into())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100_000, "every event once");
    app.stop().await.unwrap();
}
