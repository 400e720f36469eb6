//! Issue 14, point 4: a subscriber's `statuses` filter. Sequence numbers stay the call's, so
//! a filtered subscriber sees gaps; `accounts` works beside it.

use std::time::Duration;

use push_core::{
    config::{Settings, Subscriber},
    testing::{status_event, subscriber, test_settings, TestApp, TestReceiver},
    Service,
};
use serde_json::Value;

const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];

fn call(id: &str, account: &str) -> Vec<Value> {
    STATUSES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut e = status_event(id, s, 1_701_388_800_000 + i as i64);
            e["accountId"] = account.into();
            e
        })
        .collect()
}

/// (callId, status, sequence) of what `receiver` got, in arrival order.
fn got(receiver: &TestReceiver) -> Vec<(String, String, u64)> {
    receiver
        .received()
        .iter()
        .map(|r| r.json())
        .map(|b| {
            (
                b["callId"].as_str().unwrap().into(),
                b["status"].as_str().unwrap().into(),
                b["sequence"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_status_filter_pushes_only_those_statuses_with_the_calls_own_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let (all, answered, acme) = (TestReceiver::start().await, TestReceiver::start().await, TestReceiver::start().await);
    let mut s: Settings = test_settings(dir.path(), &all.url());
    s.subscribers = vec![
        subscriber("all", &all.url()),
        Subscriber { statuses: vec!["ANSWERED".into(), "HANGUP".into()], ..subscriber("answered", &answered.url()) },
        Subscriber {
            statuses: vec!["HANGUP".into()],
            accounts: vec!["acme".into()],
            ..subscriber("acme", &acme.url())
        },
    ];
    let app = TestApp::spawn(Service::Status, s).await;
    for c in 0..6 {
        let account = if c % 2 == 0 { "acme" } else { "other" };
        let body = Value::Array(call(&format!("call-{c}"), account));
        assert_eq!(app.ingest(&body).await.status(), 202);
    }
    all.wait_for_successes(24, Duration::from_secs(10)).await;
    answered.wait_for_successes(12, Duration::from_secs(10)).await;
    acme.wait_for_successes(3, Duration::from_secs(10)).await;

    let everything = got(&all);
    for c in 0..6 {
        let id = format!("call-{c}");
        let seq_of = |status: &str| everything.iter().find(|(i, s, _)| *i == id && s == status).unwrap().2;
        let filtered: Vec<(String, u64)> =
            got(&answered).into_iter().filter(|(i, _, _)| *i == id).map(|(_, s, q)| (s, q)).collect();
        assert_eq!(
            filtered,
            [("ANSWERED".to_string(), seq_of("ANSWERED")), ("HANGUP".to_string(), seq_of("HANGUP"))],
            "only ANSWERED and HANGUP, in order, numbered as the call's (a gap before ANSWERED)"
        );
        assert_eq!(seq_of("HANGUP"), seq_of("ANSWERED") + 1);
    }
    let mut hangups: Vec<String> = got(&acme).into_iter().map(|(i, s, _)| format!("{i} {s}")).collect();
    hangups.sort();
    assert_eq!(hangups, ["call-0 HANGUP", "call-2 HANGUP", "call-4 HANGUP"], "accounts and statuses together");
    app.stop().await.unwrap();
}

#[test]
fn an_unknown_or_repeated_status_in_a_filter_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = test_settings(dir.path(), "http://127.0.0.1:9");
    s.subscribers[0].statuses = vec!["ANSWERD".into()];
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("subscribers[0].statuses") && e.contains("ANSWERD"), "{e}");
    s.subscribers[0].statuses = vec!["HANGUP".into(), "HANGUP".into()];
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("subscribers[0].statuses") && e.contains("twice"), "{e}");
}
