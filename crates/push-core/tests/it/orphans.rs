//! Issue 14, point 6: a removed subscriber's pending deliveries are kept and shown, never
//! attempted, and only the operator drops them (dead, kept) or moves them to another one.

use std::time::Duration;

use push_core::{
    config::Settings,
    testing::{eventually, status_event, subscriber, test_settings, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};

const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];
const WAIT: Duration = Duration::from_secs(20);

fn call(id: &str) -> Value {
    Value::Array(STATUSES.iter().enumerate().map(|(i, s)| status_event(id, s, 1_701_388_800_000 + i as i64)).collect())
}

fn with(dir: &std::path::Path, subs: &[(&str, &TestReceiver)]) -> Settings {
    let mut s = test_settings(dir, &subs[0].1.url());
    s.subscribers = subs.iter().map(|(id, r)| subscriber(id, &r.url())).collect();
    s
}

/// Runs status-pusher with `a` and `b`, `b` paused, until `a` has 5 calls: `b` keeps 20
/// pending deliveries.
async fn leave_b_pending(dir: &std::path::Path, a: &TestReceiver, b: &TestReceiver) {
    let app = TestApp::spawn(Service::Status, with(dir, &[("a", a), ("b", b)])).await;
    assert_eq!(app.post_json("/v1/subscribers/b/pause", &json!({})).await.0, 200);
    eventually(WAIT, "b paused", || async { (app.subscriber_health("b").await["state"] == "paused").then_some(()) })
        .await;
    for c in 0..5 {
        assert_eq!(app.ingest(&call(&format!("c{c}"))).await.status(), 202);
    }
    a.wait_for_successes(20, WAIT).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_removed_subscribers_deliveries_move_to_another_in_per_call_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (TestReceiver::start().await, TestReceiver::start().await, TestReceiver::start().await);
    leave_b_pending(dir.path(), &a, &b).await;

    let app = TestApp::spawn(Service::Status, with(dir.path(), &[("a", &a), ("c", &c)])).await;
    assert_eq!(app.subscriber_health("b").await["queueDepth"], 20);
    let (status, body) = app.post_json("/v1/subscribers/a/move", &json!({"to": "c"})).await;
    assert_eq!((status, body["error"].clone()), (409, json!("conflict")), "a configured one is refused: {body}");
    let (status, body) = app.post_json("/v1/subscribers/b/move", &json!({"to": "nobody"})).await;
    assert_eq!((status, body["details"][0]["field"].clone()), (400, json!("to")), "{body}");
    let (status, body) = app.post_json("/v1/subscribers/b/move", &json!({"to": "c"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["moved"].clone(), body["skipped"].clone()), (json!(20), json!(0)));
    let got = c.wait_for_successes(20, WAIT).await;
    for k in 0..5 {
        let seqs: Vec<u64> = got
            .iter()
            .map(|r| r.json())
            .filter(|j| j["callId"] == format!("c{k}"))
            .map(|j| j["sequence"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [0, 1, 2, 3], "call c{k} in order");
    }
    assert_eq!(b.arrivals(), 0, "the removed subscriber was never attempted");
    let (_, again) = app.post_json("/v1/subscribers/b/move", &json!({"to": "a"})).await;
    assert_eq!(again["moved"], 0, "nothing pending is left to move: {again}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn dropping_a_removed_subscribers_deliveries_makes_them_dead_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (TestReceiver::start().await, TestReceiver::start().await);
    leave_b_pending(dir.path(), &a, &b).await;

    let app = TestApp::spawn(Service::Status, with(dir.path(), &[("a", &a)])).await;
    assert_eq!(app.post_json("/v1/subscribers/a/drop", &json!({})).await.0, 409);
    let (status, body) = app.post_json("/v1/subscribers/b/drop", &json!({})).await;
    assert_eq!((status, body["dropped"].clone()), (200, json!(20)), "{body}");
    let dead = app.deliveries_eventually("state=dead&subscriber=b", 20).await;
    assert!(dead.iter().all(|d| d["lastError"] == "dropped by operator: subscriber removed"), "{:?}", dead[0]);
    let health = app.subscriber_health("b").await;
    assert_eq!(
        (health["state"].clone(), health["queueDepth"].clone(), health["dead"].clone()),
        (json!("removed"), json!(0), json!(20))
    );
    assert_eq!(b.arrivals(), 0);
    app.stop().await.unwrap();
}
