//! Every subscriber is served, whatever their number and the limits (issue 11): for 1, 3,
//! 10, 100 and 1,000 subscribers, with the default limits and with tiny ones, a backlog
//! built while the receiver is down, live traffic, and a restart with a backlog all end with
//! every delivery delivered to every subscriber, each call's statuses in sequence order.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use push_core::{
    config::Settings,
    testing::{eventually, status_event, subscriber, test_settings, Received, TestApp, TestReceiver},
    Service,
};
use serde_json::Value;

const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];
const T0: i64 = 1_701_388_800_000;
/// How long one scenario may take to deliver everything (debug build, 2 cores).
const DEADLINE: Duration = Duration::from_secs(90);

/// The delivery limits a scenario runs with.
#[derive(Clone, Copy, Debug)]
enum Limits {
    /// `max_in_flight: 256`, `max_in_flight_per_subscriber: 32`.
    Default,
    /// `max_in_flight: 4`, `max_in_flight_per_subscriber: 1`.
    Tiny,
}

/// Settings with `n` subscribers `s0…`, each posting to `<receiver>/<id>/status`.
fn settings(dir: &std::path::Path, receiver: &TestReceiver, n: usize, limits: Limits) -> Settings {
    let mut settings = test_settings(dir, &receiver.url());
    settings.subscribers = (0..n).map(|i| subscriber(&format!("s{i}"), &format!("{}/s{i}", receiver.url()))).collect();
    settings.retry.schedule = vec![Duration::from_millis(100); 50];
    if let Limits::Tiny = limits {
        settings.delivery.max_in_flight = 4;
        settings.delivery.max_in_flight_per_subscriber = 1;
    }
    settings
}

/// Enough calls that every subscriber's deliveries exceed its claim capacity with few
/// subscribers, and the whole stays a few thousand deliveries with many.
fn calls_for(subscribers: usize) -> usize {
    (1200 / subscribers).clamp(2, 300)
}

/// Posts `calls` calls of four statuses each, in arrays of up to 25 calls (100 events).
async fn post_calls(app: &TestApp, prefix: &str, calls: usize) {
    let events: Vec<Value> = (0..calls)
        .flat_map(|c| {
            STATUSES.iter().enumerate().map(move |(i, s)| status_event(&format!("{prefix}-{c}"), s, T0 + i as i64))
        })
        .collect();
    for chunk in events.chunks(100) {
        let r = app.ingest(&Value::Array(chunk.to_vec())).await;
        assert_eq!(r.status(), 202, "ingest: {:?}", r.text().await);
    }
}

/// The subscriber a push was for, from its path `/<id>/status`.
fn subscriber_of(push: &Received) -> String {
    push.path.trim_start_matches('/').split('/').next().unwrap_or_default().to_string()
}

/// Waits until every subscriber has had each of `events` delivered, then checks per-call
/// order: for each subscriber and call, attempts came in sequence order, a sequence only
/// after the one before it was delivered.
async fn assert_all_delivered_in_order(receiver: &TestReceiver, subscribers: usize, events: usize) {
    let what = format!("{events} events delivered to each of {subscribers} subscribers");
    let pushes = eventually(DEADLINE, &what, || async {
        let all = receiver.received();
        let mut delivered: HashMap<String, HashSet<String>> = HashMap::new();
        for p in all.iter().filter(|p| p.answered == 200) {
            let id = p.header("webhook-id").unwrap_or_default().to_string();
            delivered.entry(subscriber_of(p)).or_default().insert(id);
        }
        let complete = delivered.len() == subscribers && delivered.values().all(|ids| ids.len() == events);
        complete.then_some(all)
    })
    .await;
    // (subscriber, call) → the next sequence that may be attempted.
    let mut next: HashMap<(String, String), i64> = HashMap::new();
    for p in &pushes {
        let body = p.json();
        let key = (subscriber_of(p), body["callId"].as_str().unwrap().to_string());
        let seq = body["sequence"].as_i64().unwrap();
        let expected = next.entry(key.clone()).or_insert(0);
        assert!(seq <= *expected, "{key:?}: sequence {seq} attempted before {expected} was delivered");
        if p.answered == 200 && seq == *expected {
            *expected += 1;
        }
    }
    assert!(next.values().all(|n| *n == 4), "every call complete for every subscriber");
}

/// The receiver is down (503) while the events are ingested and attempted once each; then
/// it comes back and the retries drain the backlog.
async fn backlog_while_down(subscribers: usize, limits: Limits) {
    let receiver = TestReceiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(Service::Status, settings(dir.path(), &receiver, subscribers, limits)).await;
    let calls = calls_for(subscribers);
    post_calls(&app, "down", calls).await;
    // Each subscriber's first status of some call failed: a backlog of retries and blocked
    // statuses sits in the database.
    eventually(DEADLINE, "every subscriber attempted while down", || async {
        let seen: HashSet<String> = receiver.received().iter().map(subscriber_of).collect();
        (seen.len() == subscribers).then_some(())
    })
    .await;
    receiver.answer(200);
    assert_all_delivered_in_order(&receiver, subscribers, calls * 4).await;
    app.stop().await.unwrap();
}

/// Calls arrive while the receiver answers at once.
async fn live_traffic(subscribers: usize, limits: Limits) {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(Service::Status, settings(dir.path(), &receiver, subscribers, limits)).await;
    let calls = calls_for(subscribers);
    let (first, second) = (calls / 2, calls - calls / 2);
    tokio::join!(post_calls(&app, "live-a", first), post_calls(&app, "live-b", second));
    assert_all_delivered_in_order(&receiver, subscribers, calls * 4).await;
    app.stop().await.unwrap();
}

/// The program stops with a backlog (nothing delivered yet) and a new one on the same
/// database delivers all of it.
async fn restart_with_backlog(subscribers: usize, limits: Limits) {
    let receiver = TestReceiver::start().await;
    receiver.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn(Service::Status, settings(dir.path(), &receiver, subscribers, limits)).await;
    let calls = calls_for(subscribers);
    post_calls(&app, "restart", calls).await;
    app.stop().await.unwrap();

    receiver.answer(200);
    let app = TestApp::spawn(Service::Status, settings(dir.path(), &receiver, subscribers, limits)).await;
    assert_all_delivered_in_order(&receiver, subscribers, calls * 4).await;
    app.stop().await.unwrap();
}

macro_rules! scenarios {
    ($($name:ident: $subscribers:expr, $limits:expr;)*) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn backlog_built_while_the_receiver_is_down() {
                backlog_while_down($subscribers, $limits).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn live_traffic_is_delivered() {
                live_traffic($subscribers, $limits).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_restart_with_a_backlog_delivers_it() {
                restart_with_backlog($subscribers, $limits).await;
            }
        }
    )*};
}

scenarios! {
    one_subscriber_default_limits: 1, Limits::Default;
    three_subscribers_default_limits: 3, Limits::Default;
    ten_subscribers_default_limits: 10, Limits::Default;
    a_hundred_subscribers_default_limits: 100, Limits::Default;
    a_thousand_subscribers_default_limits: 1000, Limits::Default;
    one_subscriber_tiny_limits: 1, Limits::Tiny;
    three_subscribers_tiny_limits: 3, Limits::Tiny;
    ten_subscribers_tiny_limits: 10, Limits::Tiny;
    a_hundred_subscribers_tiny_limits: 100, Limits::Tiny;
    a_thousand_subscribers_tiny_limits: 1000, Limits::Tiny;
}
