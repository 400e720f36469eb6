//! `POST /v1/sources/ucm` with the fixture, the mapping in a zone, `GET /v1/sources`, and a
//! listener that cannot bind.

use push_core::{testing::TestReceiver, Service};
use serde_json::{json, Value};

use super::*;

#[tokio::test]
async fn the_fixture_posted_over_http_maps_field_by_field() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = spawn(ucm_settings(dir.path(), &receiver.url(), |_| {})).await;
    let (status, body) = post(&app, &fixture_body()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"][0]["callId"], FIXTURE_CALL_ID);
    assert_eq!(body["accepted"][0]["duplicate"], false);
    let cdr = pushed(&receiver, FIXTURE_CALL_ID).await.remove(0);
    let want = fixture_cdr(0);
    for (field, value) in want.as_object().unwrap() {
        assert_eq!(&cdr[field], value, "{field}");
    }
    assert_eq!(cdr, want, "and nothing else");
}

#[tokio::test]
async fn an_unmappable_post_is_refused_with_its_reason_and_nothing_is_stored() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ucm_settings(dir.path(), &receiver.url(), |_| {});
    settings.ingest.max_body_bytes = 2048;
    let (app, _) = spawn(settings).await;
    let mut no_time = fixture();
    no_time["end"] = json!("26/01/2026 12:07");
    let mut no_caller = fixture();
    no_caller["src"] = json!("");
    for (body, reason) in [
        (no_time.to_string(), "end"),
        (no_caller.to_string(), "src"),
        ("{\"src\": \"1\",".to_string(), "not valid JSON"),
        (format!("{{\"src\": \"{}\"}}", "9".repeat(3000)), "larger than 2048"),
    ] {
        let (status, error) = post(&app, &body).await;
        let message = error["message"].as_str().unwrap_or_default();
        assert!((400..500).contains(&status), "{status} {error}");
        assert!(message.contains(reason), "{message:?} names {reason:?}");
    }
    let (_, error) = post(&app, &no_time.to_string()).await;
    assert_eq!(error["error"], "unmappable_record");
    let (_, all) = app.get_json("/v1/deliveries").await;
    assert_eq!(all["items"], json!([]), "nothing stored");
    assert!(rejects(&app).await.is_empty(), "an HTTP peer is answered: nothing set aside");
    assert_eq!(source_report(&app).await["rejected"], 5);
}

#[tokio::test]
async fn local_times_are_read_in_the_configured_zone() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |u| u.timezone = "Europe/Kyiv".into())).await;
    let (status, _) = post(&app, &fixture_body()).await;
    assert_eq!(status, 202);
    const HOUR: i64 = 3_600_000;
    assert_eq!(pushed(&receiver, FIXTURE_CALL_ID).await, [fixture_cdr(2 * HOUR)], "January in Kyiv: UTC+2");
    // The same wall clock in July is summer time: UTC+3.
    let mut summer = segment("6000", "1782900000.1", "PJSIP/331-1", "DIAL", "NO ANSWER");
    for (field, value) in [("start", "2026-07-01 12:07:08"), ("answer", ""), ("end", "2026-07-01 12:07:12")] {
        summer[field] = json!(value);
    }
    send(&addr, summer.to_string().as_bytes()).await;
    let cdr = pushed(&receiver, "1782900000.1-6000").await.remove(0);
    // 2026-07-01 12:07:12 UTC is 1782907632000.
    assert_eq!(cdr["endTime"].as_i64(), Some(1_782_907_632_000 - 3 * HOUR));
    assert_eq!(cdr["beginCallTime"].as_i64(), Some(1_782_907_628_000 - 3 * HOUR));
}

#[tokio::test]
async fn get_v1_sources_shows_the_listener_and_its_counts() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |_| {})).await;
    let report = source_report(&app).await;
    assert_eq!(report["state"], "listening");
    assert_eq!((report["accepted"].as_u64(), report["lastRecordAt"].clone()), (Some(0), Value::Null));
    send(&addr, fixture_body().as_bytes()).await;
    send(&addr, fixture_body().as_bytes()).await;
    send(&addr, b"garbage\n").await;
    let report = source_report(&app).await;
    assert_eq!(
        (&report["name"], &report["kind"], &report["state"]),
        (&json!("ucm"), &json!("ucm"), &json!("listening"))
    );
    assert_eq!(report["address"], format!("tcp://{addr}"));
    let counts = [&report["accepted"], &report["duplicates"], &report["rejected"]];
    assert_eq!(counts, [&json!(1), &json!(1), &json!(1)]);
    assert!(report["lastRecordAt"].as_i64().is_some_and(|t| t > 1_700_000_000_000));
    let (ready, _) = app.get_json("/readyz").await;
    assert_eq!(ready, 200);
}

#[tokio::test]
async fn a_tcp_listen_address_that_cannot_be_bound_fails_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let settings = ucm_settings(dir.path(), "http://127.0.0.1:9", |u| u.tcp_listen = Some(busy.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = std::sync::Arc::new(push_core::clock::SystemClock);
    let built = push_core::Application::build_with(settings, Service::Cdr, listener, clock).await;
    let error = format!("{:#}", built.err().expect("the start fails"));
    assert!(error.contains("sources.ucm.tcp_listen") && error.contains(&busy), "{error}");
}

#[tokio::test]
async fn the_sources_ucm_example_of_config_yaml_loads_as_documented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/config.yaml");
    let yaml = std::fs::read_to_string(path).unwrap();
    let block: Vec<&str> = yaml
        .lines()
        .skip_while(|l| !l.starts_with("# sources:"))
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect();
    assert!(block.iter().any(|l| l.trim_start().starts_with("ucm:")), "the commented example is there");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, block.join("\n")).unwrap();
    let settings = push_core::config::load(Some(&file)).expect("the example loads");
    let ucm = settings.sources.ucm.expect("sources.ucm");
    assert_eq!(ucm.tcp_listen.as_deref(), Some("0.0.0.0:10000"));
    assert_eq!((ucm.idle_timeout, ucm.timezone.as_str()), (std::time::Duration::from_secs(30), "UTC"));
    assert_eq!((ucm.service_type, ucm.account_id), (100, None));
}
