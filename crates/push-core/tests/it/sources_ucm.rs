//! The Grandstream UCM source (issue 13, point 3): the UCM's "CDR Real-time Output" played by
//! real TCP connections to the listener (one record per connection, several, idle ones) and
//! real HTTP POSTs of the fixture's exact body, against the real app, outbox and receiver.
//! The CSV rows are built here from the documented column order (INTEGRATIONS.md §3), not
//! from the source's own table.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use push_core::{
    config::UcmSettings,
    testing::{eventually, test_settings, TestApp, TestReceiver},
    Service, Settings,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(10);

/// The UCM's real-time output CSV columns, as INTEGRATIONS.md §3 lists them.
const DOCUMENTED_COLUMNS: &str = "AcctId,accountcode,src,dst,dcontext,clid,channel,dstchannel,lastapp,lastdata,start,\
answer,end,duration,billsec,disposition,amaflags,uniqueid,userfield,channel_ext,dstchannel_ext,service,caller_name,\
recordfiles,dstanswer,chanext,dstchanext,session,action_owner,action_type,src_trunk_name,dst_trunk_name";

/// 2026-01-26 12:07:08 and 12:07:12 (the fixture's start and end) in UTC, as epoch ms.
const FIXTURE_START_UTC: i64 = 1_769_429_228_000;
const FIXTURE_END_UTC: i64 = 1_769_429_232_000;
const FIXTURE_CALL_ID: &str = "1769422021.5655-3030";

/// The fixture's JSON body, byte for byte as the UCM posted it.
fn fixture_body() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/ucm_cdr_sample.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().find(|l| l.starts_with('{')).expect("the fixture's JSON line").to_string()
}

fn fixture() -> Value {
    serde_json::from_str(&fixture_body()).unwrap()
}

/// The CDR the fixture maps to, its times read in a zone `offset_ms` ahead of UTC.
fn fixture_cdr(offset_ms: i64) -> Value {
    let end = FIXTURE_END_UTC - offset_ms;
    json!({
        "callId": FIXTURE_CALL_ID,
        "serviceType": 100,
        "callerNumber": "231****797",
        "calleeNumber": "331",
        "startTime": end,
        "endTime": end,
        "duration": 0,
        "beginCallTime": FIXTURE_START_UTC - offset_ms,
        "direction": "INBOUND",
        "disposition": "NO_ANSWER",
        "extra": {
            "session": "1769422021553915-231****797",
            "AcctId": "3030",
            "uniqueid": "1769422021.5655",
            "action_type": "RINGGROUP[6400]",
            "action_owner": "231****797",
            "src_trunk_name": "Intertelecom",
            "channel_ext": "trunk_1",
            "dstchannel_ext": "331",
            "userfield": "Inbound",
            "dcontext": "from-internal",
            "channel": "PJSIP/trunk_1-00000a4a",
            "dstchannel": "PJSIP/331-00000a52",
            "clid": "\"231****797\" <231****797>",
            "caller_name": "231****797",
            "sn": "35100PE5FE",
            "new_src": "231****797",
            "lastapp": "Dial"
        }
    })
}

/// A real-time output CSV row of `record`'s values in the documented order, each quoted with
/// `'` (a `'` inside doubled), a missing field empty.
fn csv_row(record: &Value) -> String {
    let quote = |c: &str| format!("'{}'", record[c].as_str().unwrap_or("").replace('\'', "''"));
    DOCUMENTED_COLUMNS.split(',').map(quote).collect::<Vec<_>>().join(",")
}

fn ucm_settings(dir: &Path, receiver: &str, tweak: impl FnOnce(&mut UcmSettings)) -> Settings {
    let mut settings = test_settings(dir, receiver);
    let mut ucm = UcmSettings {
        tcp_listen: Some("127.0.0.1:0".into()),
        idle_timeout: Duration::from_secs(5),
        timezone: "UTC".into(),
        service_type: 100,
        account_id: None,
    };
    tweak(&mut ucm);
    settings.sources.ucm = Some(ucm);
    settings
}

/// The app with the UCM source, and the address its listener bound.
async fn spawn(settings: Settings) -> (TestApp, String) {
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let (_, sources) = app.get_json("/v1/sources").await;
    let address = sources["sources"][0]["address"].as_str().expect("the listener's address").to_string();
    (app, address.trim_start_matches("tcp://").to_string())
}

/// Plays the UCM: connects, sends `bytes`, closes its side, and waits until the listener
/// closes the connection (it sends nothing back).
async fn send(addr: &str, bytes: &[u8]) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the UCM listener");
    stream.write_all(bytes).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the listener closes the connection")
        .expect("a clean close");
    assert!(answer.is_empty(), "a TCP peer is sent nothing");
}

async fn post(app: &TestApp, body: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/v1/sources/ucm", app.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// The deliveries the outbox lists for `call_id` now (no waiting).
async fn deliveries_now(app: &TestApp, call_id: &str) -> usize {
    let (_, page) = app.get_json(&format!("/v1/deliveries?callId={call_id}")).await;
    page["items"].as_array().map_or(0, Vec::len)
}

/// Every CDR pushed so far for `call_id`, once there is at least one.
async fn pushed(receiver: &TestReceiver, call_id: &str) -> Vec<Value> {
    eventually(WAIT, &format!("a push of {call_id}"), || async {
        let all: Vec<Value> = receiver.received().iter().map(|r| r.json()).filter(|c| c["callId"] == call_id).collect();
        (!all.is_empty()).then_some(all)
    })
    .await
}

async fn source_report(app: &TestApp) -> Value {
    app.get_json("/v1/sources").await.1["sources"][0].clone()
}

async fn rejects(app: &TestApp) -> Vec<Value> {
    app.get_json("/v1/sources/rejects?source=ucm").await.1["items"].as_array().cloned().unwrap_or_default()
}

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
async fn a_json_record_over_tcp_is_durable_before_the_connection_closes() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |_| {})).await;
    send(&addr, fixture_body().as_bytes()).await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1, "stored when the listener closed");
    assert_eq!(pushed(&receiver, FIXTURE_CALL_ID).await, [fixture_cdr(0)]);
}

#[tokio::test]
async fn a_csv_row_quoted_with_single_quotes_maps_like_the_json() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) =
        spawn(ucm_settings(dir.path(), &receiver.url(), |u| u.account_id = Some("tenant-1".into()))).await;
    let mut record = fixture();
    record["caller_name"] = json!("O'Brien, Pat");
    record["recordfiles"] = json!("auto-1769422021-231****797-331.wav@");
    send(&addr, format!("{}\r\n", csv_row(&record)).as_bytes()).await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1);
    let mut want = fixture_cdr(0);
    want["accountId"] = json!("tenant-1");
    let extra = want["extra"].as_object_mut().unwrap();
    for not_a_column in ["sn", "new_src"] {
        extra.remove(not_a_column);
    }
    extra.insert("caller_name".into(), json!("O'Brien, Pat"));
    extra.insert("recordfiles".into(), json!("auto-1769422021-231****797-331.wav@"));
    assert_eq!(pushed(&receiver, FIXTURE_CALL_ID).await, [want]);

    // An accountcode of the record wins over the configured account; an answered segment
    // is connected at its answer time.
    let mut answered = fixture();
    for (field, value) in [
        ("AcctId", "3031"),
        ("accountcode", "acct-77"),
        ("disposition", "ANSWERED"),
        ("answer", "2026-01-26 12:07:10"),
        ("end", "2026-01-26 12:08:40"),
        ("billsec", "90"),
    ] {
        answered[field] = json!(value);
    }
    send(&addr, csv_row(&answered).as_bytes()).await;
    let cdr = pushed(&receiver, "1769422021.5655-3031").await.remove(0);
    assert_eq!(cdr["accountId"], "acct-77");
    assert_eq!(cdr["disposition"], "ANSWERED");
    assert_eq!(
        (cdr["startTime"].as_i64(), cdr["endTime"].as_i64()),
        (Some(1_769_429_230_000), Some(1_769_429_320_000))
    );
    assert_eq!(cdr["duration"], 90);
}

/// A segment of the fixture's call, `acct` its CDR row id.
fn segment(acct: &str, uniqueid: &str, dstchannel: &str, action: &str, disposition: &str) -> Value {
    let mut record = fixture();
    for (field, value) in
        [("AcctId", acct), ("uniqueid", uniqueid), ("dstchannel", dstchannel), ("action_type", action)]
    {
        record[field] = json!(value);
    }
    record["disposition"] = json!(disposition);
    record
}

#[tokio::test]
async fn the_segments_of_one_call_each_keep_their_cdr_and_share_the_session() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |_| {})).await;
    // A ring group rings two extensions from the same channel (same uniqueid), then the
    // call is transferred (a segment of another channel); two segments come on one
    // connection, one per line, as a UCM emptying its buffer sends them.
    let ring_a = segment("4001", "1769422021.5655", "PJSIP/111-00000a50", "RINGGROUP[6400]", "NO ANSWER");
    let ring_b = segment("4002", "1769422021.5655", "PJSIP/331-00000a52", "RINGGROUP[6400]", "NO ANSWER");
    let transfer = segment("4003", "1769422030.5660", "PJSIP/222-00000a60", "TRANSFER", "BUSY");
    send(&addr, ring_a.to_string().as_bytes()).await;
    send(&addr, format!("{ring_b}\n{}\n", csv_row(&transfer)).as_bytes()).await;
    let ids = ["1769422021.5655-4001", "1769422021.5655-4002", "1769422030.5660-4003"];
    let mut cdrs = Vec::new();
    for id in ids {
        assert_eq!(deliveries_now(&app, id).await, 1, "{id} stored before its connection closed");
        cdrs.push(pushed(&receiver, id).await.remove(0));
    }
    for cdr in &cdrs {
        assert_eq!(cdr["extra"]["session"], "1769422021553915-231****797", "joined by the session");
    }
    assert_eq!(cdrs[1]["extra"]["dstchannel"], "PJSIP/331-00000a52");
    assert_eq!(cdrs[2]["disposition"], "BUSY");
    assert_eq!(cdrs[2]["extra"]["action_type"], "TRANSFER");
    let report = source_report(&app).await;
    assert_eq!((report["accepted"].as_u64(), report["duplicates"].as_u64()), (Some(3), Some(0)), "none a duplicate");
}

#[tokio::test]
async fn a_resent_record_is_a_duplicate_and_is_pushed_once() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |_| {})).await;
    let body = fixture_body();
    send(&addr, body.as_bytes()).await;
    // The UCM re-sends what it thinks failed: over TCP (as CSV too) and over HTTP.
    send(&addr, body.as_bytes()).await;
    send(&addr, csv_row(&fixture()).as_bytes()).await;
    let (status, answer) = post(&app, &body).await;
    assert_eq!((status, &answer["accepted"][0]["duplicate"]), (202, &json!(true)));
    // A later record pushed shows the resends had their turn.
    let later = segment("5000", "1769422099.1", "PJSIP/115-1", "DIAL", "NO ANSWER");
    send(&addr, later.to_string().as_bytes()).await;
    pushed(&receiver, "1769422099.1-5000").await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1, "one delivery for the record");
    assert_eq!(pushed(&receiver, FIXTURE_CALL_ID).await.len(), 1, "pushed once");
    let report = source_report(&app).await;
    assert_eq!((report["accepted"].as_u64(), report["duplicates"].as_u64()), (Some(2), Some(3)));
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout_with_its_record_stored() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let idle = Duration::from_millis(400);
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |u| u.idle_timeout = idle)).await;
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let opened = Instant::now();
    let n = tokio::time::timeout(WAIT, silent.read(&mut [0; 16])).await.expect("closed by the listener").unwrap();
    assert_eq!(n, 0, "closed, nothing sent");
    assert!(
        opened.elapsed() >= idle - Duration::from_millis(50),
        "not before the idle timeout: {:?}",
        opened.elapsed()
    );

    // A row without its line end, the connection left open: taken when the peer goes idle.
    let mut open = TcpStream::connect(&addr).await.unwrap();
    open.write_all(csv_row(&fixture()).as_bytes()).await.unwrap();
    let n = tokio::time::timeout(WAIT, open.read(&mut [0; 16])).await.expect("closed by the listener").unwrap();
    assert_eq!(n, 0);
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1, "stored before the close");
}

#[tokio::test]
async fn garbage_over_tcp_is_set_aside_listed_as_a_reject_and_the_listener_goes_on() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = ucm_settings(dir.path(), &receiver.url(), |_| {});
    settings.ingest.max_body_bytes = 2048;
    let (app, addr) = spawn(settings).await;
    send(&addr, b"hello, this is not a CDR\n").await;
    send(&addr, b"<cdr><src>1</src></cdr>").await;
    // Garbage first, then a good record, on one connection: the good one is stored.
    send(&addr, format!("'1','2'\n{}", fixture_body()).as_bytes()).await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1);
    // An endless record: set aside with its beginning once over ingest.max_body_bytes.
    let mut endless = TcpStream::connect(&addr).await.unwrap();
    let huge = format!("{{\"src\": \"{}", "9".repeat(4096));
    let _ = endless.write_all(huge.as_bytes()).await;
    let closed = tokio::time::timeout(WAIT, endless.read_to_end(&mut Vec::new())).await;
    assert!(closed.is_ok(), "the listener closed the connection");

    let listed =
        eventually(WAIT, "four rejects", || async { Some(rejects(&app).await).filter(|r| r.len() == 4) }).await;
    let reason_of = |raw_start: &str| -> String {
        let reject = listed.iter().find(|r| r["raw"].as_str().unwrap().starts_with(raw_start)).expect(raw_start);
        assert_eq!(reject["source"], "ucm");
        reject["reason"].as_str().unwrap().to_string()
    };
    assert!(reason_of("hello").contains("2 columns"));
    assert!(reason_of("<cdr>").contains("XML"));
    assert!(reason_of("'1','2'").contains("2 columns"));
    assert!(reason_of("{\"src\": \"999").contains("larger than ingest.max_body_bytes"));
    let report = source_report(&app).await;
    assert_eq!((report["accepted"].as_u64(), report["rejected"].as_u64()), (Some(1), Some(4)));

    // Re-driving one re-parses it: still unmappable, still listed.
    let id = listed[0]["id"].as_i64().unwrap();
    let redrive = app.client.post(format!("{}/v1/sources/rejects/{id}/redrive", app.url)).send().await.unwrap();
    assert_eq!(redrive.status(), 422);
    assert_eq!(rejects(&app).await.len(), 4);
    let metrics = app.client.get(format!("{}/metrics", app.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"voice_push_source_records_total{source="ucm",outcome="rejected"}"#), "counted");
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
async fn connections_beyond_the_bound_wait_until_one_closes() {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, addr) = spawn(ucm_settings(dir.path(), &receiver.url(), |u| u.idle_timeout = WAIT * 2)).await;
    let mut held = Vec::new();
    for _ in 0..push_core::sources::ucm::MAX_CONNECTIONS {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(b" ").await.unwrap();
        held.push(stream);
    }
    let waiting = tokio::spawn({
        let addr = addr.clone();
        async move { send(&addr, fixture_body().as_bytes()).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 0, "not served while every slot is taken");
    drop(held.pop());
    waiting.await.unwrap();
    assert_eq!(deliveries_now(&app, FIXTURE_CALL_ID).await, 1, "served once a slot was free");
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
