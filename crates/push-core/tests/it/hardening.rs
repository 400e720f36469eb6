//! Hardening against hostile clients (issue 12, point 6): serde_json's raw-value marker is
//! an ordinary name, `extra` is pushed as sent and nested at most 32 levels, and a body that
//! is broken or announced too large is refused without being read. Raw TCP where a client
//! library would hide the behaviour (chunk framing, a body never sent in full).

use std::time::Duration;

use push_core::{
    testing::{test_settings, TestApp, TestReceiver},
    Service, Settings,
};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(10);
const SEED_CDR: &str = r#"{"callId":"202312010001","serviceType":100,"callerNumber":"1380000001","calleeNumber":"02188888888","startTime":1701388800000,"endTime":1701389100000,"duration":300,"userData":"test-data"}"#;

/// A cdr-pusher with test settings changed by `tweak`; keep the dir and receiver alive.
pub(crate) async fn spawn(tweak: impl FnOnce(&mut Settings)) -> (tempfile::TempDir, TestReceiver, TestApp) {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = TestReceiver::start().await;
    let mut settings = test_settings(dir.path(), &receiver.url());
    tweak(&mut settings);
    let app = TestApp::spawn(Service::Cdr, settings).await;
    (dir, receiver, app)
}

/// The seed CDR with `members` (JSON text, `"name":value,...`) added, `callId` replaced.
fn cdr_with(call_id: &str, members: &str) -> String {
    let seed = SEED_CDR.replace("202312010001", call_id);
    format!("{},{members}}}", &seed[..seed.len() - 1])
}

/// POSTs `body` as JSON; answers the status and the reply.
async fn post(app: &TestApp, body: String) -> (u16, Value) {
    let response =
        app.client.post(format!("{}/v1/cdrs", app.url)).header("content-type", "application/json").body(body);
    let response = response.send().await.expect("ingest request");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// The (field, message) of each detail of an error reply.
fn details(reply: &Value) -> Vec<(String, String)> {
    let field = |d: &Value| (d["field"].as_str().unwrap().to_string(), d["message"].as_str().unwrap().to_string());
    reply["details"].as_array().expect("details").iter().map(field).collect()
}

/// The app's `host:port`.
pub(crate) fn addr(app: &TestApp) -> String {
    app.url.trim_start_matches("http://").to_string()
}

/// Writes `request` on a new connection, then reads until the server closes it (or `WAIT`
/// passes); answers everything read, and whether the server closed the connection.
async fn exchange(app: &TestApp, request: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr(app)).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await.is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn an_object_named_as_serde_jsons_raw_value_is_an_ordinary_object() {
    let (_dir, _receiver, app) = spawn(|_| {}).await;
    let body = SEED_CDR.replace(r#""202312010001""#, r#"{"$serde_json::private::RawValue":"\"c1\""}"#);
    let (status, reply) = post(&app, body).await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(details(&reply), [("callId".to_string(), "must be a string".to_string())], "{reply}");
    let (status, reply) = post(&app, r#"{"$serde_json::private::RawValue":"{}"}"#.into()).await;
    assert_eq!(status, 422, "{reply}");
    assert_eq!(details(&reply)[0].0, "$serde_json::private::RawValue", "{reply}");
}

#[tokio::test]
async fn extra_is_pushed_byte_for_byte_and_nested_at_most_32_levels() {
    let (_dir, receiver, app) = spawn(|_| {}).await;
    let extra = r#"{ "z" : 1e2 , "a" : [ -0 , 1.50 , "\u00e9\/" ] , "dup" : 1 , "dup" : 2 , "$serde_json::private::RawValue" : "1" }"#;
    let (status, reply) = post(&app, cdr_with("x1", &format!(r#""extra":{extra}"#))).await;
    assert_eq!(status, 202, "{reply}");
    let pushed = receiver.wait_for_successes(1, WAIT).await;
    let body = String::from_utf8(pushed[0].body.to_vec()).unwrap();
    assert!(body.ends_with(&format!(r#","extra":{extra}}}"#)), "{body}");
    let nested = |depth: usize| format!("{}1{}", r#"{"k":"#.repeat(depth), "}".repeat(depth));
    let (status, reply) = post(&app, cdr_with("x2", &format!(r#""extra":{}"#, nested(32)))).await;
    assert_eq!(status, 202, "32 levels: {reply}");
    for depth in [33, 200] {
        let (status, reply) = post(&app, cdr_with("x3", &format!(r#""extra":{}"#, nested(depth)))).await;
        assert_eq!(status, 422, "{reply}");
        let rule = format!("must be nested at most 32 levels deep (got {depth})");
        assert_eq!(details(&reply), [("extra".to_string(), rule)], "{reply}");
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_and_closes_the_connection() {
    let (_dir, _receiver, app) = spawn(|_| {}).await;
    let head =
        "POST /v1/cdrs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let (reply, closed) = exchange(&app, format!("{head}5\r\n{{\"a\":\r\nzz\r\n1}}\r\n0\r\n\r\n").as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{reply}");
    assert!(reply.contains(r#""error":"malformed_body""#), "{reply}");
    assert!(closed, "the server closes the connection after the 400: {reply}");
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_413_before_the_body_is_read() {
    let (_dir, _receiver, app) = spawn(|s| s.ingest.max_body_bytes = 2048).await;
    let head =
        "POST /v1/cdrs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n";
    // A few bytes of the billion announced; the answer comes without any more.
    let (reply, closed) = exchange(&app, format!("{head}{{\"callId\":").as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("\r\nconnection: close\r\n"), "{reply}");
    assert!(reply.contains(r#""error":"payload_too_large""#), "{reply}");
    assert!(closed, "the server closes the connection after the 413: {reply}");
}
