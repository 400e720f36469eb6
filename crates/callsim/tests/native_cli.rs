//! The compiled `callsim calls --cdr-format ...`: with the same `--seed` and `--start` two
//! runs write identical native records; what the switch side gets back is counted in the
//! summary (a FreeSWITCH leg sent again is a duplicate from the HTTP answer; a UCM connection
//! the server resets is an error).

use std::time::Duration;

use push_core::{
    config::{FreeswitchSettings, UcmSettings},
    testing::{test_settings, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_callsim");

/// `callsim calls` with `args` and a fixed seed, start and prefix; its JSON summary.
async fn calls(args: &[&str]) -> Value {
    let fixed = ["--count", "30", "--rate", "500", "--speed", "100000", "--seed", "5", "--start", "1767225600000"];
    let out = tokio::process::Command::new(BIN)
        .arg("calls")
        .args(fixed)
        .args(["--call-id-prefix", "cli-", "--callback-share", "0.4", "--quiet", "--json"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the summary is JSON")
}

fn counts(summary: &Value) -> (u64, u64, u64, u64) {
    let c = &summary["cdr"];
    let n = |k: &str| c[k].as_u64().unwrap_or(u64::MAX);
    (n("sent"), n("accepted"), n("duplicates"), n("errors"))
}

#[tokio::test]
async fn two_runs_with_the_same_seed_and_start_append_identical_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first.csv"), dir.path().join("second.csv"));
    let a = calls(&["--cdr-format", "asterisk-csv", "--cdr-url", first.to_str().unwrap()]).await;
    let b = calls(&["--cdr-format", "asterisk-csv", "--cdr-url", second.to_str().unwrap()]).await;
    let (sent, accepted, _, errors) = counts(&a);
    assert!(sent > 30 && accepted == sent && errors == 0, "{a}");
    assert_eq!(counts(&a), counts(&b));
    let sorted = |p: &std::path::Path| {
        let mut lines: Vec<String> = std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect();
        lines.sort(); // calls run concurrently: the order of lines may differ, not the lines
        lines
    };
    let lines = sorted(&first);
    assert_eq!(lines.len() as u64, sent);
    assert_eq!(lines, sorted(&second), "identical records");
}

#[tokio::test]
async fn a_freeswitch_leg_sent_again_is_counted_as_a_duplicate() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.sources.freeswitch = Some(FreeswitchSettings {
        service_type: 100,
        account_id: None,
        account_variable: None,
        encoded_values: false,
        variables: vec![],
    });
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let args = ["--cdr-format", "freeswitch", "--cdr-url", app.url.as_str()];
    let (sent, accepted, duplicates, errors) = counts(&calls(&args).await);
    assert_eq!((accepted, duplicates, errors), (sent, 0, 0));
    let again = counts(&calls(&args).await);
    assert_eq!(again, (sent, 0, sent, 0), "the same legs again: every one a duplicate");
    let pushes = receiver.wait_for_successes(sent as usize, Duration::from_secs(20)).await;
    assert_eq!(pushes.len() as u64, sent);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_ucm_connection_reset_by_the_server_is_an_error() {
    let (dir, receiver) = (tempfile::tempdir().unwrap(), TestReceiver::start().await);
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.sources.ucm = Some(UcmSettings {
        tcp_listen: Some("127.0.0.1:0".into()),
        idle_timeout: Duration::from_secs(5),
        timezone: "UTC".into(),
        service_type: 100,
        account_id: None,
    });
    // 127.0.0.1 is not allowed: the listener resets every connection unread.
    settings.ingest.allowed_ips = serde_json::from_value(json!(["10.0.0.0/8"])).unwrap();
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let (_, sources) = app.get_json("/v1/sources").await;
    let address = sources["sources"][0]["address"].as_str().unwrap().trim_start_matches("tcp://").to_string();
    let summary = calls(&["--cdr-format", "ucm-tcp", "--cdr-url", &address, "--timeout", "3s"]).await;
    let (sent, accepted, _, errors) = counts(&summary);
    assert!(sent > 30, "{summary}");
    assert_eq!((accepted, errors), (0, sent), "{summary}");
    app.stop().await.unwrap();
}
