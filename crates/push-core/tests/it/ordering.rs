//! Per-call order (SPEC §4): for one subscriber, a call's statuses are attempted strictly in
//! sequence order, each only after the previous one was delivered or died; a failing call
//! blocks only itself.

use std::{collections::HashMap, time::Duration};

use push_core::{
    testing::{status_event, test_settings, Received, TestApp, TestReceiver},
    Service,
};
use serde_json::Value;

const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];
const T0: i64 = 1_701_388_800_000;

/// A deterministic "random" failure: about `percent` % of attempts fail, decided by the
/// webhook-id and attempt number, so a run is reproducible.
fn fails(r: &Received, percent: u64) -> bool {
    let key = format!("{}/{}", r.header("webhook-id").unwrap_or(""), r.header("x-push-attempt").unwrap_or(""));
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    hash % 100 < percent
}

/// Posts every call's statuses in order, the calls concurrently.
async fn post_calls(app: &TestApp, calls: &[String]) {
    let mut tasks = tokio::task::JoinSet::new();
    for call in calls {
        let (client, url, call) = (app.client.clone(), format!("{}/v1/status-events", app.url), call.clone());
        tasks.spawn(async move {
            for (i, status) in STATUSES.iter().enumerate() {
                let r = client.post(&url).json(&status_event(&call, status, T0 + i as i64 * 1000)).send().await;
                assert_eq!(r.expect("ingest").status(), 202);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("posting task");
    }
}

#[tokio::test]
async fn each_call_arrives_in_sequence_order_under_random_failures() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|r| if fails(r, 30) { (500, Duration::ZERO) } else { (200, Duration::ZERO) });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(10); 15];
    let app = TestApp::spawn(Service::Status, settings).await;
    let calls: Vec<String> = (0..40).map(|i| format!("order-{i}")).collect();
    post_calls(&app, &calls).await;

    let pushes = receiver.wait_for_successes(calls.len() * 4, Duration::from_secs(30)).await;
    let mut next_expected: HashMap<String, i64> = HashMap::new();
    for push in &pushes {
        let body = push.json();
        let call = body["callId"].as_str().unwrap().to_string();
        let seq = body["sequence"].as_i64().unwrap();
        let expected = next_expected.entry(call.clone()).or_insert(0);
        assert_eq!(seq, *expected, "{call}: attempted sequence {seq} before {expected} was delivered");
        assert_eq!(body["status"], STATUSES[seq as usize]);
        if (200..300).contains(&push.answered) {
            *expected += 1;
        }
    }
    assert!(pushes.iter().any(|p| p.answered == 500), "the receiver did fail some attempts");
    assert!(next_expected.values().all(|n| *n == 4), "every call complete: {next_expected:?}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_failing_call_blocks_only_itself() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(|r| {
        let stuck = r.json()["callId"] == "stuck";
        if stuck {
            (500, Duration::ZERO)
        } else {
            (200, Duration::ZERO)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(20); 1000];
    let app = TestApp::spawn(Service::Status, settings).await;
    post_calls(&app, &["stuck".to_string()]).await;
    let others: Vec<String> = (0..20).map(|i| format!("free-{i}")).collect();
    post_calls(&app, &others).await;

    let pushes = receiver.wait_for_successes(others.len() * 4, Duration::from_secs(10)).await;
    let stuck: Vec<Value> = pushes.iter().map(Received::json).filter(|b| b["callId"] == "stuck").collect();
    assert!(stuck.len() >= 2, "the stuck call kept being retried");
    assert!(stuck.iter().all(|b| b["sequence"] == 0), "nothing after the failing status was attempted");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_dead_status_lets_the_rest_of_its_call_go() {
    let receiver = TestReceiver::start().await;
    receiver.set_behavior(
        |r| {
            if r.json()["status"] == "DIALING" {
                (500, Duration::ZERO)
            } else {
                (200, Duration::ZERO)
            }
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(10)];
    let app = TestApp::spawn(Service::Status, settings).await;
    post_calls(&app, &["dies".to_string()]).await;

    let pushes = receiver.wait_for_successes(3, Duration::from_secs(10)).await;
    let seqs: Vec<i64> = pushes.iter().map(|p| p.json()["sequence"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [0, 0, 1, 2, 3], "two failed attempts of 0, then 1..3 in order");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_bulk_redelivery_of_a_dead_call_goes_out_in_sequence_order() {
    let receiver = TestReceiver::start().await;
    receiver.answer(500);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(10)];
    let app = TestApp::spawn(Service::Status, settings).await;
    post_calls(&app, &["revive".to_string()]).await;
    push_core::testing::eventually(Duration::from_secs(10), "all four statuses dead", || async {
        let (_, stats) = app.get_json("/v1/stats").await;
        (stats["subscribers"]["demo"]["dead"] == 4).then_some(())
    })
    .await;

    receiver.answer(200);
    let r = app
        .client
        .post(format!("{}/v1/deliveries/redeliver", app.url))
        .json(&serde_json::json!({"state": "dead", "subscriber": "demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let pushes = receiver.wait_for_successes(4, Duration::from_secs(10)).await;
    let delivered: Vec<i64> =
        pushes.iter().filter(|p| p.answered == 200).map(|p| p.json()["sequence"].as_i64().unwrap()).collect();
    assert_eq!(delivered, [0, 1, 2, 3], "redelivered one after the other, in order");
    app.stop().await.unwrap();
}
