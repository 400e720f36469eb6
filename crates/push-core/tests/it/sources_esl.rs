//! The FreeSWITCH event socket source (issue 16, points 1, 3 and 4) against a
//! protocol-faithful mod_event_socket written here from its documentation (INTEGRATIONS.md
//! §1.2): on real TCP it greets with `Content-Type: auth/request`, answers `auth <password>`
//! with `command/reply` `+OK accepted` or `-ERR invalid` followed by a `text/disconnect-notice`
//! and a close, answers `event json ...` with `+OK event listener enabled json`, and then
//! sends what the test writes: events framed by `Content-Length`, as `text/event-json` or as
//! `text/event-plain` with percent-encoded values. The events are those of the documentation's
//! examples (an inbound a-leg 1001 bridged to a b-leg 1002).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use push_core::{
    config::{EslSettings, Settings},
    testing::{eventually, test_settings, TestApp, TestReceiver},
    Service,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use crate::readiness::Immutable;

const WAIT: Duration = Duration::from_secs(15);
const PASSWORD: &str = "ClueCon";
const A_LEG: &str = "b5cfe6f2-7b8c-4b3e-9d1a-1f2e3d4c0001";
const B_LEG: &str = "b5cfe6f2-7b8c-4b3e-9d1a-1f2e3d4c0002";
const T0: i64 = 1_701_388_800_120_000;

/// mod_event_socket as the switch runs it: every authenticated, subscribed connection is
/// handed to the test.
struct Switch {
    port: u16,
    sessions: mpsc::UnboundedReceiver<TcpStream>,
    connections: Arc<AtomicUsize>,
}

impl Switch {
    async fn start(password: &'static str) -> Switch {
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
                    if let Some(stream) = handshake(stream, password).await {
                        let _ = tx.send(stream);
                    }
                });
            }
        });
        Switch { port, sessions, connections }
    }

    /// The next subscribed connection.
    async fn session(&mut self) -> TcpStream {
        tokio::time::timeout(WAIT, self.sessions.recv()).await.expect("status-pusher connects").unwrap()
    }
}

/// A command: bytes up to the empty line.
async fn command(stream: &mut TcpStream) -> Option<String> {
    let mut bytes = Vec::new();
    while !bytes.ends_with(b"\n\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        bytes.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&bytes).trim().to_string())
}

async fn handshake(mut stream: TcpStream, password: &str) -> Option<TcpStream> {
    stream.write_all(b"Content-Type: auth/request\n\n").await.ok()?;
    if command(&mut stream).await? != format!("auth {password}") {
        let notice = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";
        let reply = format!(
            "Content-Type: command/reply\nReply-Text: -ERR invalid\n\n\
             Content-Type: text/disconnect-notice\nContent-Length: {}\n\n{notice}",
            notice.len()
        );
        stream.write_all(reply.as_bytes()).await.ok()?;
        return None;
    }
    stream.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n").await.ok()?;
    let subscribe = command(&mut stream).await?;
    assert!(subscribe.starts_with("event json CHANNEL_CREATE"), "{subscribe}");
    stream.write_all(b"Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n").await.ok()?;
    Some(stream)
}

/// An event's headers as FreeSWITCH fills them for `leg` (`micros` after T0).
fn event(name: &str, leg: &str, micros: i64) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = [
        ("Event-Name", name),
        ("Core-UUID", "2130a7d1-c1f7-44cd-8fae-8ed5946f3cec"),
        ("FreeSWITCH-Hostname", "fs1"),
        ("Event-Calling-File", "switch_channel.c"),
        ("Unique-ID", leg),
        ("Caller-Caller-ID-Name", "Extension 1001"),
        ("Caller-Caller-ID-Number", "1001"),
        ("Caller-Destination-Number", "1002"),
        ("Channel-Call-UUID", A_LEG),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    h.push(("Event-Date-Timestamp".into(), (T0 + micros).to_string()));
    h.push(("Call-Direction".into(), if leg == A_LEG { "inbound" } else { "outbound" }.into()));
    if leg == B_LEG {
        h.push(("Other-Leg-Unique-ID".into(), A_LEG.into()));
        h.push(("variable_originating_leg_uuid".into(), A_LEG.into()));
    }
    h
}

/// The CHANNEL_CREATE of a call of its own (an a-leg).
fn call_created(uuid: &str, micros: i64) -> Vec<(String, String)> {
    let mut h = event("CHANNEL_CREATE", uuid, micros);
    h.retain(|(k, _)| k != "Channel-Call-UUID");
    h.push(("Channel-Call-UUID".into(), uuid.into()));
    h
}

fn hangup(leg: &str, micros: i64, cause: &str, sip: &str, how: &str) -> Vec<(String, String)> {
    let mut h = event("CHANNEL_HANGUP_COMPLETE", leg, micros);
    for (k, v) in [
        ("Hangup-Cause", cause),
        ("Caller-Channel-Answered-Time", "1701388806500000"),
        ("variable_sip_term_status", sip),
        ("variable_sip_hangup_disposition", how),
        ("variable_hangup_cause_q850", "16"),
        ("variable_bridge_uuid", if leg == A_LEG { B_LEG } else { A_LEG }),
    ] {
        h.push((k.into(), v.into()));
    }
    h
}

/// A `text/event-json` message.
fn json_frame(headers: &[(String, String)]) -> Vec<u8> {
    let body = Value::Object(headers.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect()).to_string();
    format!("Content-Length: {}\nContent-Type: text/event-json\n\n{body}", body.len()).into_bytes()
}

/// A `text/event-plain` message, values percent-encoded as `switch_url_encode` writes them.
fn plain_frame(headers: &[(String, String)]) -> Vec<u8> {
    let encode = |v: &str| {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let body: String = headers.iter().map(|(k, v)| format!("{k}: {}\n", encode(v))).collect::<String>() + "\n";
    format!("Content-Length: {}\nContent-Type: text/event-plain\n\n{body}", body.len()).into_bytes()
}

fn with_esl(settings: &mut Settings, port: u16, password: &str) {
    let esl = json!({"host": "127.0.0.1", "port": port, "password": password, "account_id": "acme"});
    settings.sources.esl = Some(serde_json::from_value::<EslSettings>(esl).expect("esl settings"));
}

async fn app(dir: &std::path::Path, receiver: &TestReceiver, port: u16, password: &str) -> TestApp {
    let mut settings = test_settings(dir, &receiver.url());
    with_esl(&mut settings, port, password);
    TestApp::spawn(Service::Status, settings).await
}

async fn source(app: &TestApp) -> Value {
    let (_, body) = app.get_json("/v1/sources").await;
    body["sources"].as_array().and_then(|s| s.first().cloned()).unwrap_or(Value::Null)
}

/// The statuses pushed with 2xx, as (party, status), in arrival order.
fn pushed(receiver: &TestReceiver) -> Vec<Value> {
    receiver.received().into_iter().filter(|r| r.answered == 200).map(|r| r.json()).collect()
}

#[tokio::test]
async fn a_bridged_call_gives_each_legs_statuses_in_order_keyed_by_the_a_leg() {
    let (mut switch, receiver, dir) =
        (Switch::start(PASSWORD).await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(dir.path(), &receiver, switch.port, PASSWORD).await;
    let mut s = switch.session().await;
    let mut transcript = Vec::new();
    transcript.extend(json_frame(&event("CHANNEL_CREATE", A_LEG, 0)));
    transcript.extend(b"Content-Length: 0\nContent-Type: text/event-json\n\n"); // an empty event
    transcript.extend(json_frame(&event("CHANNEL_CREATE", B_LEG, 1_000)));
    transcript.extend(plain_frame(&event("CHANNEL_PROGRESS", B_LEG, 2_130_000)));
    transcript.extend(json_frame(&event("HEARTBEAT", A_LEG, 2_200_000)));
    transcript.extend(json_frame(&event("CHANNEL_PROGRESS_MEDIA", B_LEG, 2_500_000)));
    transcript.extend(json_frame(&event("CHANNEL_ANSWER", B_LEG, 6_380_000)));
    transcript.extend(plain_frame(&event("CHANNEL_ANSWER", A_LEG, 6_380_500)));
    transcript.extend(json_frame(&hangup(B_LEG, 306_780_000, "NORMAL_CLEARING", "200", "send_bye")));
    transcript.extend(plain_frame(&hangup(A_LEG, 306_781_000, "NORMAL_CLEARING", "200", "recv_bye")));
    s.write_all(&transcript).await.unwrap();
    receiver.wait_for_successes(7, WAIT).await;
    let pushes = pushed(&receiver);
    let of = |party: &str| -> Vec<(String, i64)> {
        let leg = pushes.iter().filter(|p| p["party"] == party);
        leg.map(|p| (p["status"].as_str().unwrap().to_string(), p["timestamp"].as_i64().unwrap())).collect()
    };
    let ms = |us: i64| (T0 + us) / 1000;
    assert_eq!(
        of("CALLER"),
        [("DIALING".into(), ms(0)), ("ANSWERED".into(), ms(6_380_500)), ("HANGUP".into(), ms(306_781_000))]
    );
    assert_eq!(
        of("CALLEE"),
        [
            ("DIALING".into(), ms(1_000)),
            ("RINGING".into(), ms(2_130_000)),
            ("ANSWERED".into(), ms(6_380_000)),
            ("HANGUP".into(), ms(306_780_000))
        ],
        "183 after 180 is the same RINGING: a duplicate"
    );
    assert!(pushes.iter().all(|p| p["callId"] == A_LEG && p["serviceType"] == 100 && p["accountId"] == "acme"));
    let hangup = pushes.iter().find(|p| p["party"] == "CALLER" && p["status"] == "HANGUP").unwrap();
    assert_eq!(
        hangup,
        &json!({"callId": A_LEG, "serviceType": 100, "status": "HANGUP", "timestamp": ms(306_781_000),
                "sequence": hangup["sequence"], "party": "CALLER", "callerNumber": "1001", "calleeNumber": "1002",
                "accountId": "acme", "disposition": "ANSWERED", "releaseDirection": "CALLER", "hangupCause": 16, "sipCode": 200})
    );
    let report = source(&app).await;
    assert_eq!((report["name"].as_str(), report["state"].as_str()), (Some("esl"), Some("connected")), "{report}");
    assert_eq!((report["accepted"].as_u64(), report["duplicates"].as_u64()), (Some(7), Some(1)), "{report}");
    assert_eq!(app.get_json("/readyz").await.0, 200);
    // A status after the leg's HANGUP is set aside (SPEC §3), the connection kept.
    s.write_all(&json_frame(&event("CHANNEL_PROGRESS", A_LEG, 400_000_000))).await.unwrap();
    s.write_all(&json_frame(&call_created("other-call", 400_000_001))).await.unwrap();
    receiver.wait_for_successes(8, WAIT).await;
    let report = source(&app).await;
    assert_eq!(report["rejected"].as_u64(), Some(1), "{report}");
    assert_eq!(switch.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_retried_with_back_off() {
    let (switch, receiver, dir) =
        (Switch::start(PASSWORD).await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(dir.path(), &receiver, switch.port, "not-the-password").await;
    let error = eventually(WAIT, "the source in error", || async {
        source(&app).await["error"].as_str().filter(|e| e.contains("-ERR invalid")).map(str::to_string)
    })
    .await;
    assert!(error.contains("refused the password (sources.esl.password)"), "{error}");
    assert_eq!(app.get_json("/readyz").await.0, 503);
    let start = switch.connections.load(Ordering::SeqCst);
    let mut seen = start;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        seen = switch.connections.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen > start, "it keeps trying");
    assert!(seen - start <= 6, "with back-off, not a crash loop: {} attempts in 2 s", seen - start);
}

#[tokio::test]
async fn a_connection_dropped_mid_event_reconnects_and_stores_no_partial_event() {
    let (mut switch, receiver, dir) =
        (Switch::start(PASSWORD).await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(dir.path(), &receiver, switch.port, PASSWORD).await;
    let mut first = switch.session().await;
    first.write_all(&json_frame(&event("CHANNEL_CREATE", A_LEG, 0))).await.unwrap();
    let cut = json_frame(&call_created("cut-call", 10));
    first.write_all(&cut[..cut.len() - 20]).await.unwrap();
    receiver.wait_for_successes(1, WAIT).await;
    drop(first); // the switch restarts
    let mut second = switch.session().await;
    second.write_all(&json_frame(&event("CHANNEL_ANSWER", A_LEG, 5_000_000))).await.unwrap();
    receiver.wait_for_successes(2, WAIT).await;
    let pushes = pushed(&receiver);
    assert!(pushes.iter().all(|p| p["callId"] == A_LEG), "the cut event is not stored: {pushes:?}");
    let (_, deliveries) = app.get_json("/v1/sources").await;
    assert_eq!(deliveries["sources"][0]["accepted"], 2, "{deliveries}");
    eventually(WAIT, "connected again", || async { (source(&app).await["state"] == "connected").then_some(()) }).await;
}

#[tokio::test]
async fn garbage_and_oversized_frames_are_skipped_and_the_connection_kept() {
    let (mut switch, receiver, dir) =
        (Switch::start(PASSWORD).await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let mut settings = test_settings(dir.path(), &receiver.url());
    settings.ingest.max_body_bytes = 4096;
    with_esl(&mut settings, switch.port, PASSWORD);
    let app = TestApp::spawn(Service::Status, settings).await;
    let mut s = switch.session().await;
    s.write_all(b"\x00\x7fnot a header\n\n").await.unwrap();
    s.write_all(b"Content-Length: 5\nContent-Type: text/event-json\n\n{nope").await.unwrap();
    s.write_all(format!("Content-Length: 100000\nContent-Type: text/event-json\n\n{}", "x".repeat(100_000)).as_bytes())
        .await
        .unwrap();
    s.write_all(&json_frame(&event("CHANNEL_CREATE", A_LEG, 0))).await.unwrap();
    let pushes = receiver.wait_for_successes(1, WAIT).await;
    assert_eq!(pushes[0].json()["status"], "DIALING");
    assert_eq!(switch.connections.load(Ordering::SeqCst), 1, "the connection was kept");
    assert_eq!(source(&app).await["state"], "connected");
}

#[tokio::test]
async fn a_switch_faster_than_the_store_meets_back_pressure() {
    let (mut switch, receiver, dir) =
        (Switch::start(PASSWORD).await, TestReceiver::start().await, tempfile::tempdir().unwrap());
    let app = app(dir.path(), &receiver, switch.port, PASSWORD).await;
    let mut s = switch.session().await;
    s.write_all(&json_frame(&call_created("warm-up", 0))).await.unwrap();
    receiver.wait_for_successes(1, WAIT).await;
    let db = dir.path().join("status.db");
    let Some(immutable) = Immutable::set(vec![db.clone(), db.with_extension("db-wal")]) else {
        eprintln!("SKIPPED: `chattr +i` is not available or not permitted here");
        return;
    };
    // 20,000 events (~17 MB) while nothing can be stored: the writes stall once the socket
    // buffers are full, because status-pusher reads no further than it stores.
    let frames: Vec<Vec<u8>> = (0..20_000).map(|i| json_frame(&call_created(&format!("call-{i}"), i))).collect();
    let total: usize = frames.iter().map(Vec::len).sum();
    let written = Arc::new(AtomicUsize::new(0));
    let count = written.clone();
    let writer = tokio::spawn(async move {
        for frame in frames {
            s.write_all(&frame).await.unwrap();
            count.fetch_add(frame.len(), Ordering::SeqCst);
        }
    });
    eventually(WAIT, "the source reporting that it cannot store", || async {
        source(&app).await["error"].as_str().is_some_and(|e| e.starts_with("cannot store statuses")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // let the writer run into the full window
    let stalled = written.load(Ordering::SeqCst);
    assert!(stalled < total / 2, "the switch is held back: {stalled} of {total} bytes written");
    assert_eq!(app.get_json("/readyz").await.0, 503);
    drop(immutable);
    writer.await.unwrap();
    eventually(Duration::from_secs(120), "every event stored", || async {
        (source(&app).await["accepted"].as_u64() == Some(20_001)).then_some(())
    })
    .await;
}
