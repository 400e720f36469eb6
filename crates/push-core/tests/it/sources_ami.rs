//! The Asterisk Manager Interface source (issue 16, points 2, 3 and 4) against a
//! protocol-faithful AMI written here from docs.asterisk.org (INTEGRATIONS.md §2.2): on real
//! TCP it sends the banner `Asterisk Call Manager/9.0.0`, answers `Action: Login` with
//! `Response: Success` / `Message: Authentication accepted`, or `Response: Error` /
//! `Message: Authentication failed` and a close, then sends the packets the test writes
//! (`Key: Value` lines with CRLF, ended by an empty line): a call from PJSIP/1001 to
//! PJSIP/1002 as Asterisk 18+ reports it, and its `Cdr` event (cdr_manager).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use push_core::{
    config::{AmiSettings, Settings},
    testing::{eventually, test_settings, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

const WAIT: Duration = Duration::from_secs(15);
const A: &str = "1701388800.120";
const B: &str = "1701388800.121";

/// Asterisk's manager interface: every logged-in connection is handed to the test.
struct Manager {
    port: u16,
    sessions: mpsc::UnboundedReceiver<TcpStream>,
    connections: Arc<AtomicUsize>,
}

impl Manager {
    async fn start(secret: &'static str) -> Manager {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, sessions) = mpsc::unbounded_channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(stream) = login(stream, secret).await {
                        let _ = tx.send(stream);
                    }
                });
            }
        });
        Manager { port, sessions, connections }
    }

    async fn session(&mut self) -> TcpStream {
        tokio::time::timeout(WAIT, self.sessions.recv()).await.expect("the program logs in").unwrap()
    }
}

async fn login(mut stream: TcpStream, secret: &str) -> Option<TcpStream> {
    stream.write_all(b"Asterisk Call Manager/9.0.0\r\n").await.ok()?;
    let mut bytes = Vec::new();
    while !bytes.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        bytes.push(byte[0]);
    }
    let action = String::from_utf8_lossy(&bytes).to_string();
    assert!(action.starts_with("Action: Login\r\n"), "{action}");
    let id = action.lines().find_map(|l| l.strip_prefix("ActionID: ")).unwrap_or("").to_string();
    if !action.contains("Username: voicepush\r\n") || !action.contains(&format!("Secret: {secret}\r\n")) {
        let reply = format!("Response: Error\r\nActionID: {id}\r\nMessage: Authentication failed\r\n\r\n");
        stream.write_all(reply.as_bytes()).await.ok()?;
        return None;
    }
    let reply = format!("Response: Success\r\nActionID: {id}\r\nMessage: Authentication accepted\r\n\r\n");
    stream.write_all(reply.as_bytes()).await.ok()?;
    stream.write_all(b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n").await.ok()?;
    Some(stream)
}

/// A packet of `pairs`, the channel fields of `uniqueid` first.
fn packet(event: &str, uniqueid: &str, seconds: f64, pairs: &[(&str, &str)]) -> String {
    let (channel, num) = if uniqueid == A { ("PJSIP/1001-00000001", "1001") } else { ("PJSIP/1002-00000002", "1002") };
    let mut p = format!(
        "Event: {event}\r\nPrivilege: call,all\r\nTimestamp: {:.6}\r\nChannel: {channel}\r\nCallerIDNum: {num}\r\n\
         Exten: 1002\r\nContext: from-internal\r\nUniqueid: {uniqueid}\r\nLinkedid: {A}\r\n",
        1_701_388_800.0 + seconds
    );
    for (k, v) in pairs {
        p.push_str(&format!("{k}: {v}\r\n"));
    }
    p + "\r\n"
}

fn call() -> String {
    [
        packet("Newchannel", A, 0.12, &[("ChannelState", "0"), ("ChannelStateDesc", "Down")]),
        packet(
            "Newchannel",
            B,
            0.13,
            &[("ChannelState", "0"), ("ChannelStateDesc", "Down"), ("ConnectedLineNum", "1001")],
        ),
        packet(
            "DialBegin",
            A,
            0.14,
            &[
                ("DestChannel", "PJSIP/1002-00000002"),
                ("DestUniqueid", B),
                ("DestLinkedid", A),
                ("DestCallerIDNum", "1002"),
                ("DestConnectedLineNum", "1001"),
                ("DialString", "1002"),
            ],
        ),
        packet(
            "Newstate",
            B,
            2.25,
            &[("ChannelState", "5"), ("ChannelStateDesc", "Ringing"), ("ConnectedLineNum", "1001")],
        ),
        packet("Newstate", B, 6.5, &[("ChannelState", "6"), ("ChannelStateDesc", "Up"), ("ConnectedLineNum", "1001")]),
        packet("DialEnd", A, 6.5, &[("DestUniqueid", B), ("DialStatus", "ANSWER")]),
        packet("Newstate", A, 6.51, &[("ChannelState", "6"), ("ChannelStateDesc", "Up")]),
        packet("Hangup", B, 306.9, &[("Cause", "16"), ("Cause-txt", "Normal Clearing"), ("ConnectedLineNum", "1001")]),
        packet("Hangup", A, 306.91, &[("Cause", "16"), ("Cause-txt", "Normal Clearing")]),
    ]
    .concat()
}

fn with_ami(settings: &mut Settings, port: u16, secret: &str) {
    let ami = json!({"host": "127.0.0.1", "port": port, "username": "voicepush", "secret": secret});
    settings.sources.ami = Some(serde_json::from_value::<AmiSettings>(ami).expect("ami settings"));
}

async fn app(service: Service, dir: &std::path::Path, receiver: &TestReceiver, port: u16, secret: &str) -> TestApp {
    let mut settings = test_settings(dir, &receiver.url());
    with_ami(&mut settings, port, secret);
    TestApp::spawn(service, settings).await
}

async fn source(app: &TestApp) -> Value {
    let (_, body) = app.get_json("/v1/sources").await;
    body["sources"].as_array().and_then(|s| s.first().cloned()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn call_events_are_grouped_by_linkedid_into_each_legs_statuses() {
    let (mut ami, receiver, dir) =
        (Manager::start("s3cret").await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(Service::Status, dir.path(), &receiver, ami.port, "s3cret").await;
    let mut s = ami.session().await;
    s.write_all(call().as_bytes()).await.unwrap();
    receiver.wait_for_successes(7, WAIT).await;
    let pushes: Vec<Value> = receiver.received().iter().filter(|r| r.answered == 200).map(|r| r.json()).collect();
    let of = |party: &str| -> Vec<(String, i64)> {
        let leg = pushes.iter().filter(|p| p["party"] == party);
        leg.map(|p| (p["status"].as_str().unwrap().to_string(), p["timestamp"].as_i64().unwrap())).collect()
    };
    let ms = |s: i64| 1_701_388_800_000 + s;
    assert_eq!(
        of("CALLER"),
        [("DIALING".into(), ms(120)), ("ANSWERED".into(), ms(6510)), ("HANGUP".into(), ms(306_910))]
    );
    assert_eq!(
        of("CALLEE"),
        [
            ("DIALING".into(), ms(130)),
            ("RINGING".into(), ms(2250)),
            ("ANSWERED".into(), ms(6500)),
            ("HANGUP".into(), ms(306_900))
        ],
        "DialBegin's DIALING of the callee is the Newchannel's: a duplicate"
    );
    assert!(pushes.iter().all(|p| p["callId"] == A));
    let hangup = pushes.iter().find(|p| p["party"] == "CALLEE" && p["status"] == "HANGUP").unwrap();
    assert_eq!(
        hangup,
        &json!({"callId": A, "serviceType": 100, "status": "HANGUP", "timestamp": ms(306_900), "sequence": hangup["sequence"],
                "party": "CALLEE", "callerNumber": "1001", "calleeNumber": "1002", "disposition": "ANSWERED",
                "releaseDirection": "CALLEE", "hangupCause": 16, "sipCode": 200})
    );
    let report = source(&app).await;
    assert_eq!((report["state"].as_str(), report["duplicates"].as_u64()), (Some("connected"), Some(1)), "{report}");
    assert_eq!(app.get_json("/readyz").await.0, 200);
}

#[tokio::test]
async fn the_cdr_event_is_a_cdr_for_cdr_pusher() {
    let (mut ami, receiver, dir) =
        (Manager::start("s3cret").await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let _app = app(Service::Cdr, dir.path(), &receiver, ami.port, "s3cret").await;
    let mut s = ami.session().await;
    s.write_all(call().as_bytes()).await.unwrap(); // call events: no CDR
    let cdr = "Event: Cdr\r\nPrivilege: cdr,all\r\nAccountCode: acme\r\nSource: 1001\r\nDestination: 1002\r\n\
               DestinationContext: from-internal\r\nCallerID: \"Alice\" <1001>\r\nChannel: PJSIP/1001-00000001\r\n\
               DestinationChannel: PJSIP/1002-00000002\r\nLastApplication: Dial\r\nLastData: PJSIP/1002,30\r\n\
               StartTime: 2023-12-01 00:00:00\r\nAnswerTime: 2023-12-01 00:00:06\r\nEndTime: 2023-12-01 00:05:06\r\n\
               Duration: 306\r\nBillableSeconds: 300\r\nDisposition: ANSWERED\r\nAMAFlags: DOCUMENTATION\r\n\
               UniqueID: 1701388800.120\r\nUserField: \r\n\r\n";
    s.write_all(cdr.as_bytes()).await.unwrap();
    let pushes = receiver.wait_for_successes(1, WAIT).await;
    let cdr = pushes[0].json();
    assert_eq!(
        (cdr["callId"].as_str(), cdr["callerNumber"].as_str(), cdr["calleeNumber"].as_str()),
        (Some(A), Some("1001"), Some("1002"))
    );
    assert_eq!(
        (cdr["startTime"].as_i64(), cdr["endTime"].as_i64()),
        (Some(1_701_388_806_000), Some(1_701_389_106_000))
    );
    assert_eq!((cdr["disposition"].as_str(), cdr["accountId"].as_str()), (Some("ANSWERED"), Some("acme")));
    tokio::time::sleep(Duration::from_millis(300)).await; // nothing else is on its way
    assert_eq!(receiver.received().len(), 1, "only the Cdr event gives a CDR");
}

#[tokio::test]
async fn a_refused_login_is_a_clear_error_retried_with_back_off() {
    let (ami, receiver, dir) =
        (Manager::start("s3cret").await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(Service::Status, dir.path(), &receiver, ami.port, "wrong").await;
    let error = eventually(WAIT, "the source in error", || async {
        source(&app).await["error"].as_str().filter(|e| e.contains("Authentication failed")).map(str::to_string)
    })
    .await;
    assert!(error.contains("refused the login"), "{error}");
    assert_eq!(app.get_json("/readyz").await.0, 503);
    let start = ami.connections.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await; // counting attempts over a fixed window
    let tries = ami.connections.load(Ordering::SeqCst) - start;
    assert!((1..=6).contains(&tries), "retried with back-off, not in a loop: {tries} attempts in 2 s");
}

#[tokio::test]
async fn a_packet_cut_by_a_restart_is_dropped_and_the_source_reconnects() {
    let (mut ami, receiver, dir) =
        (Manager::start("s3cret").await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(Service::Status, dir.path(), &receiver, ami.port, "s3cret").await;
    let mut first = ami.session().await;
    let whole = packet("Newchannel", A, 0.12, &[("ChannelState", "0")]);
    let cut = packet("Newstate", A, 1.0, &[("ChannelState", "6")]);
    first.write_all(format!("{whole}not a packet line\r\n\r\n{}", &cut[..cut.len() - 30]).as_bytes()).await.unwrap();
    receiver.wait_for_successes(1, WAIT).await;
    drop(first);
    let mut second = ami.session().await;
    second.write_all(packet("Newstate", B, 2.0, &[("ChannelState", "5")]).as_bytes()).await.unwrap();
    let pushes = receiver.wait_for_successes(2, WAIT).await;
    let statuses: Vec<Value> = pushes.iter().map(|p| p.json()["status"].clone()).collect();
    assert_eq!(statuses, ["DIALING", "RINGING"], "the cut Newstate (Up) is not stored");
    eventually(WAIT, "connected again", || async { (source(&app).await["state"] == "connected").then_some(()) }).await;
}
