//! The Grandstream UCM source (issue 13, point 3): the UCM's "CDR Real-time Output" played by
//! real TCP connections to the listener (one record per connection, several, idle ones) and
//! real HTTP POSTs of the fixture's exact body, against the real app, outbox and receiver.
//! The CSV rows are built here from the documented column order (INTEGRATIONS.md §3), not
//! from the source's own table. `http.rs`: the HTTP endpoint, the mapping, zones and the
//! operations view; `tcp.rs`: the listener.

mod http;
mod tcp;

use std::{path::Path, time::Duration};

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

pub(super) const WAIT: Duration = Duration::from_secs(10);

/// The UCM's real-time output CSV columns, as INTEGRATIONS.md §3 lists them.
pub(super) const DOCUMENTED_COLUMNS: &str =
    "AcctId,accountcode,src,dst,dcontext,clid,channel,dstchannel,lastapp,lastdata,start,\
answer,end,duration,billsec,disposition,amaflags,uniqueid,userfield,channel_ext,dstchannel_ext,service,caller_name,\
recordfiles,dstanswer,chanext,dstchanext,session,action_owner,action_type,src_trunk_name,dst_trunk_name";

/// 2026-01-26 12:07:08 and 12:07:12 (the fixture's start and end) in UTC, as epoch ms.
pub(super) const FIXTURE_START_UTC: i64 = 1_769_429_228_000;
pub(super) const FIXTURE_END_UTC: i64 = 1_769_429_232_000;
pub(super) const FIXTURE_CALL_ID: &str = "1769422021.5655-3030";

/// The fixture's JSON body, byte for byte as the UCM posted it.
pub(super) fn fixture_body() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/ucm_cdr_sample.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().find(|l| l.starts_with('{')).expect("the fixture's JSON line").to_string()
}

pub(super) fn fixture() -> Value {
    serde_json::from_str(&fixture_body()).unwrap()
}

/// The CDR the fixture maps to, its times read in a zone `offset_ms` ahead of UTC.
pub(super) fn fixture_cdr(offset_ms: i64) -> Value {
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
pub(super) fn csv_row(record: &Value) -> String {
    let quote = |c: &str| format!("'{}'", record[c].as_str().unwrap_or("").replace('\'', "''"));
    DOCUMENTED_COLUMNS.split(',').map(quote).collect::<Vec<_>>().join(",")
}

pub(super) fn ucm_settings(dir: &Path, receiver: &str, tweak: impl FnOnce(&mut UcmSettings)) -> Settings {
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
pub(super) async fn spawn(settings: Settings) -> (TestApp, String) {
    let app = TestApp::spawn(Service::Cdr, settings).await;
    let (_, sources) = app.get_json("/v1/sources").await;
    let address = sources["sources"][0]["address"].as_str().expect("the listener's address").to_string();
    (app, address.trim_start_matches("tcp://").to_string())
}

/// Plays the UCM: connects, sends `bytes`, closes its side, and waits until the listener
/// closes the connection (it sends nothing back).
pub(super) async fn send(addr: &str, bytes: &[u8]) {
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

pub(super) async fn post(app: &TestApp, body: &str) -> (u16, Value) {
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
pub(super) async fn deliveries_now(app: &TestApp, call_id: &str) -> usize {
    let (_, page) = app.get_json(&format!("/v1/deliveries?callId={call_id}")).await;
    page["items"].as_array().map_or(0, Vec::len)
}

/// Every CDR pushed so far for `call_id`, once there is at least one.
pub(super) async fn pushed(receiver: &TestReceiver, call_id: &str) -> Vec<Value> {
    eventually(WAIT, &format!("a push of {call_id}"), || async {
        let all: Vec<Value> = receiver.received().iter().map(|r| r.json()).filter(|c| c["callId"] == call_id).collect();
        (!all.is_empty()).then_some(all)
    })
    .await
}

pub(super) async fn source_report(app: &TestApp) -> Value {
    app.get_json("/v1/sources").await.1["sources"][0].clone()
}

pub(super) async fn rejects(app: &TestApp) -> Vec<Value> {
    app.get_json("/v1/sources/rejects?source=ucm").await.1["items"].as_array().cloned().unwrap_or_default()
}

/// A segment of the fixture's call, `acct` its CDR row id.
pub(super) fn segment(acct: &str, uniqueid: &str, dstchannel: &str, action: &str, disposition: &str) -> Value {
    let mut record = fixture();
    for (field, value) in
        [("AcctId", acct), ("uniqueid", uniqueid), ("dstchannel", dstchannel), ("action_type", action)]
    {
        record[field] = json!(value);
    }
    record["disposition"] = json!(disposition);
    record
}
