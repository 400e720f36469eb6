//! Stale statuses (issue 14, `status.supersede`): a status one subscriber keeps refusing is
//! given up as `superseded` once a later status of its call is accepted, so the later ones go
//! on in order; off by default, where every status waits its turn (SPEC). CDRs never are.

use std::time::Duration;

use push_core::{
    testing::{eventually, seed_cdr, status_event, test_settings, Received, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};

const T0: i64 = 1_701_388_800_000;

/// A status-pusher whose subscriber refuses every ANSWERED with 500, retrying every 100 ms
/// (the breaker off, so only the statuses' own failures count).
async fn refusing_answered(supersede: bool) -> (TestReceiver, TestApp, tempfile::TempDir) {
    let receiver = TestReceiver::start().await;
    receiver
        .set_behavior(|r| if r.json()["status"] == "ANSWERED" { (500, Duration::ZERO) } else { (200, Duration::ZERO) });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(100); 1000];
    settings.breaker.failures = 0;
    settings.service_mut(Service::Status).supersede = supersede;
    let app = TestApp::spawn(Service::Status, settings).await;
    (receiver, app, dir)
}

async fn post(app: &TestApp, path: &str, body: Value) {
    let r = app.client.post(format!("{}{path}", app.url)).json(&body).send().await.expect("post");
    assert_eq!(r.status(), 202, "{path}");
}

/// The pushes of `status` the receiver got, answered `answered`.
fn pushes(receiver: &TestReceiver, status: &str, answered: u16) -> usize {
    let of = |r: &Received| r.json()["status"] == status && r.answered == answered;
    receiver.received().iter().filter(|r| of(r)).count()
}

/// Posts DIALING, RINGING and ANSWERED of `call`, waits for ANSWERED's first refusal, then
/// posts HANGUP.
async fn answered_refused_then_hangup(receiver: &TestReceiver, app: &TestApp, call: &str) {
    for (i, status) in ["DIALING", "RINGING", "ANSWERED"].iter().enumerate() {
        post(app, "/v1/status-events", status_event(call, status, T0 + i as i64)).await;
    }
    eventually(Duration::from_secs(10), "ANSWERED refused once", || async {
        (pushes(receiver, "ANSWERED", 500) >= 1).then_some(())
    })
    .await;
    post(app, "/v1/status-events", status_event(call, "HANGUP", T0 + 10)).await;
}

#[tokio::test]
async fn with_supersede_a_refused_answered_is_superseded_and_hangup_goes_promptly() {
    let (receiver, app, _dir) = refusing_answered(true).await;
    answered_refused_then_hangup(&receiver, &app, "stale").await;
    eventually(Duration::from_secs(3), "HANGUP delivered", || async {
        (pushes(&receiver, "HANGUP", 200) == 1).then_some(())
    })
    .await;
    let sequences: Vec<i64> = receiver.received().iter().map(|r| r.json()["sequence"].as_i64().unwrap()).collect();
    assert_eq!(sequences.last(), Some(&3), "HANGUP came after everything before it: {sequences:?}");

    let (status, page) = app.get_json("/v1/deliveries?state=superseded").await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["state"], "superseded");
    assert_eq!(items[0]["callId"], "stale");
    let (_, stats) = app.get_json("/v1/stats").await;
    assert_eq!(stats["subscribers"]["demo"]["superseded"], 1, "{stats}");
    assert_eq!(stats["subscribers"]["demo"]["delivered"], 3, "{stats}");
    assert_eq!(stats["subscribers"]["demo"]["pending"], 0, "{stats}");
    let refused = pushes(&receiver, "ANSWERED", 500);

    // Re-deliverable like dead: once the subscriber takes it, it arrives.
    receiver.answer(200);
    let id = items[0]["id"].as_i64().expect("id");
    let r = app.client.post(format!("{}/v1/deliveries/{id}/redeliver", app.url)).json(&json!({})).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    eventually(Duration::from_secs(5), "the superseded ANSWERED delivered", || async {
        (pushes(&receiver, "ANSWERED", 200) == 1).then_some(())
    })
    .await;
    assert!(refused >= 1);
    let (_, stats) = app.get_json("/v1/stats").await;
    assert_eq!(stats["subscribers"]["demo"]["superseded"], 0, "{stats}");
    assert_eq!(stats["subscribers"]["demo"]["delivered"], 4, "{stats}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_status_failing_after_a_later_one_is_pending_is_superseded_after_its_attempt() {
    let (receiver, app, _dir) = refusing_answered(true).await;
    // ANSWERED is in flight (the receiver holds it) when HANGUP arrives: the ingest leaves a
    // claimed head alone, and its failed attempt supersedes it.
    receiver.set_behavior(|r| match r.json()["status"] == "ANSWERED" {
        true => (500, Duration::from_millis(500)),
        false => (200, Duration::ZERO),
    });
    for (i, status) in ["ANSWERED", "HANGUP"].iter().enumerate() {
        post(&app, "/v1/status-events", status_event("inflight", status, T0 + i as i64)).await;
    }
    eventually(Duration::from_secs(5), "HANGUP delivered", || async {
        (pushes(&receiver, "HANGUP", 200) == 1).then_some(())
    })
    .await;
    assert_eq!(pushes(&receiver, "ANSWERED", 500), 1, "one attempt, then given up");
    let (_, page) = app.get_json("/v1/deliveries?state=superseded").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    let id = page["items"][0]["id"].as_i64().unwrap();
    let (_, detail) = app.get_json(&format!("/v1/deliveries/{id}")).await;
    assert_eq!(detail["attemptLog"].as_array().map(Vec::len), Some(1), "the attempt is logged: {detail}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn without_supersede_hangup_waits_for_the_refused_answered() {
    let (receiver, app, _dir) = refusing_answered(false).await;
    answered_refused_then_hangup(&receiver, &app, "strict").await;
    let before = pushes(&receiver, "ANSWERED", 500);
    eventually(Duration::from_secs(5), "three more refusals of ANSWERED", || async {
        (pushes(&receiver, "ANSWERED", 500) >= before + 3).then_some(())
    })
    .await;
    assert_eq!(pushes(&receiver, "HANGUP", 200), 0, "HANGUP still waits its turn");
    let (_, stats) = app.get_json("/v1/stats").await;
    assert_eq!(stats["subscribers"]["demo"]["superseded"], 0, "{stats}");
    assert_eq!(stats["subscribers"]["demo"]["pending"], 2, "{stats}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn cdrs_are_never_superseded() {
    let receiver = TestReceiver::start().await;
    receiver
        .set_behavior(|r| if r.json()["party"] == "CALLER" { (500, Duration::ZERO) } else { (200, Duration::ZERO) });
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.retry.schedule = vec![Duration::from_millis(50); 1000];
    settings.breaker.failures = 0;
    settings.service_mut(Service::Cdr).supersede = true;
    settings.service_mut(Service::Status).supersede = true;
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let leg = |party: &str| {
        let mut cdr = seed_cdr("legs");
        cdr["party"] = json!(party);
        cdr
    };
    post(&app, "/v1/cdrs", leg("CALLER")).await;
    let refused = |n: usize| {
        let receiver = &receiver;
        move || async move {
            let count = receiver.received().iter().filter(|r| r.json()["party"] == "CALLER").count();
            (count >= n).then_some(())
        }
    };
    eventually(Duration::from_secs(5), "the CALLER leg refused", refused(1)).await;
    post(&app, "/v1/cdrs", leg("CALLEE")).await;
    eventually(Duration::from_secs(5), "the CALLEE leg delivered and CALLER refused 3 more times", || async {
        let got = receiver.received();
        let callee = got.iter().any(|r| r.json()["party"] == "CALLEE" && r.answered == 200);
        let caller = got.iter().filter(|r| r.json()["party"] == "CALLER").count();
        (callee && caller >= 4).then_some(())
    })
    .await;
    let (_, stats) = app.get_json("/v1/stats").await;
    assert_eq!(stats["subscribers"]["demo"]["superseded"], 0, "{stats}");
    assert_eq!(stats["subscribers"]["demo"]["pending"], 1, "the refused CDR keeps retrying: {stats}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_bulk_state_names_the_rule_and_superseded_is_accepted() {
    let (_receiver, app, _dir) = refusing_answered(true).await;
    let bulk = |state: &str| {
        app.client
            .post(format!("{}/v1/deliveries/redeliver", app.url))
            .json(&json!({"state": state, "subscriber": "demo"}))
            .send()
    };
    let r = bulk("superseded").await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.unwrap()["redelivered"], 0);
    let r = bulk("lost").await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("superseded"), "{body}");
    app.stop().await.unwrap();
}
