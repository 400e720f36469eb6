//! Secrets and tokens never appear in logs or API responses (issue 3 point 7).
//!
//! Its own test binary because it installs the process-wide log subscriber (at `trace`, every
//! target, `log` records included) writing into memory, so events from every task and thread
//! of the app are captured. It drives every path that handles a secret: ingest refusals and
//! acceptance, a signed delivery that fails once and is retried, and the operations API with
//! and without the admin token; then searches the logs, every response and every push.

use std::{
    io,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use base64::Engine as _;
use push_core::{
    config::Secret,
    testing::{test_settings, TestApp, TestReceiver},
    Service, Settings,
};
use serde_json::{json, Value};
use tracing_subscriber::{util::SubscriberInitExt as _, EnvFilter};

const INGEST_TOKEN: &str = "ingest-tok-7f3a9c1e5b2d";
const OTHER_INGEST_TOKEN: &str = "ingest-tok-other-0a9b8c7d";
const ADMIN_TOKEN: &str = "admin-tok-2d8e4b6a0c1f";
/// Presented by a client but not configured: must not be echoed or logged either.
const WRONG_TOKEN: &str = "wrong-tok-5e1f3a7c9b0d";
const SIGNING_KEY: &[u8] = b"signing-key-bytes-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(10);

/// The subscriber secret, `whsec_<base64 key>`.
fn whsec() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(SIGNING_KEY))
}

/// Every string that must not leak: the configured secrets, the key's base64 and raw form,
/// and the wrong token a client presented.
fn secrets() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(SIGNING_KEY);
    let raw = String::from_utf8(SIGNING_KEY.to_vec()).unwrap();
    [INGEST_TOKEN, OTHER_INGEST_TOKEN, ADMIN_TOKEN, WRONG_TOKEN]
        .map(String::from)
        .into_iter()
        .chain([whsec(), b64, raw])
        .collect()
}

/// Installs (once) the global subscriber writing into the returned buffer.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER
        .get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let sink = buffer.clone();
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new("trace"))
                .with_ansi(false)
                .with_writer(move || Sink(sink.clone()))
                .finish()
                .try_init()
                .expect("no other global subscriber in this test binary");
            buffer
        })
        .clone()
}

/// An `io::Write` appending to the shared buffer.
struct Sink(Arc<Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Test settings with both ingest tokens, the admin token and a signing subscriber.
fn settings(dir: &std::path::Path, receiver_url: &str) -> Settings {
    let mut settings = test_settings(dir, receiver_url);
    settings.ingest.auth_tokens = vec![Secret::new(INGEST_TOKEN), Secret::new(OTHER_INGEST_TOKEN)];
    settings.admin.token = Secret::new(ADMIN_TOKEN);
    settings.subscribers[0].secret = Some(Secret::new(whsec()));
    settings
}

#[test]
fn debug_output_of_the_settings_redacts_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let shown = format!("{:?}", settings(dir.path(), "http://127.0.0.1:9"));
    for secret in secrets() {
        assert!(!shown.contains(&secret), "Debug of the settings shows {secret}");
    }
    assert!(shown.contains("[redacted]"), "{shown}");
}

/// Records every response: status, headers and body text.
struct Transcript {
    client: reqwest::Client,
    base: String,
    seen: Vec<String>,
}

impl Transcript {
    /// Sends `method path` with `token` as Bearer and `body` as JSON; records and returns it.
    async fn call(&mut self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        let text = response.text().await.expect("body");
        self.seen.push(format!("{path} {status} {headers} {text}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn cdr(call_id: &str) -> Value {
    json!({"callId": call_id, "serviceType": 100, "callerNumber": "1380000001", "calleeNumber": "02188888888",
        "startTime": 1701388800000u64, "endTime": 1701389100000u64, "duration": 300, "userData": "test-data"})
}

/// Ingest refused, malformed and accepted, each with and without the right token.
async fn drive_ingest(t: &mut Transcript) {
    assert_eq!(t.call("POST", "/v1/cdrs", None, Some(cdr("no-token"))).await.0, 401);
    assert_eq!(t.call("POST", "/v1/cdrs", Some(WRONG_TOKEN), Some(cdr("wrong"))).await.0, 401);
    assert_eq!(t.call("POST", "/v1/cdrs", Some(INGEST_TOKEN), Some(json!({"callId": 1}))).await.0, 422);
    assert_eq!(t.call("POST", "/v1/cdrs", Some(INGEST_TOKEN), Some(cdr("signed-1"))).await.0, 202);
    assert_eq!(t.call("POST", "/v1/cdrs", Some(OTHER_INGEST_TOKEN), Some(cdr("signed-2"))).await.0, 202);
}

/// The whole operations API, refused and allowed.
async fn drive_ops(t: &mut Transcript) {
    assert_eq!(t.call("GET", "/v1/stats", None, None).await.0, 401);
    assert_eq!(t.call("GET", "/v1/deliveries", Some(WRONG_TOKEN), None).await.0, 401);
    assert_eq!(t.call("GET", "/v1/deliveries", Some(INGEST_TOKEN), None).await.0, 401);
    let (status, list) = t.call("GET", "/v1/deliveries", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200, "{list}");
    let id = match &list["items"][0]["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => panic!("no delivery listed: {list}"),
    };
    t.call("GET", &format!("/v1/deliveries/{id}"), Some(ADMIN_TOKEN), None).await;
    t.call("POST", &format!("/v1/deliveries/{id}/redeliver"), Some(ADMIN_TOKEN), None).await;
    let bulk = json!({"state": "dead", "subscriber": "demo"});
    t.call("POST", "/v1/deliveries/redeliver", Some(ADMIN_TOKEN), Some(bulk)).await;
    assert_eq!(t.call("GET", "/v1/stats", Some(ADMIN_TOKEN), None).await.0, 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(t.call("GET", path, None, None).await.0, 200, "{path}");
    }
}

#[tokio::test]
async fn no_secret_or_token_appears_in_logs_responses_or_pushes() {
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let receiver = TestReceiver::start().await;
    let first = AtomicUsize::new(0);
    // The first push fails, so a failed attempt with its error is logged too.
    receiver.set_behavior(move |_| (if first.fetch_add(1, Ordering::SeqCst) == 0 { 500 } else { 200 }, Duration::ZERO));
    let app = TestApp::spawn(Service::Cdr, settings(dir.path(), &receiver.url())).await;
    let mut t = Transcript { client: app.client.clone(), base: app.url.clone(), seen: Vec::new() };

    drive_ingest(&mut t).await;
    let pushes = receiver.wait_for_successes(2, WAIT).await;
    assert!(pushes.iter().all(|p| p.header("webhook-signature").is_some_and(|s| s.starts_with("v1,"))));
    drive_ops(&mut t).await;
    app.stop().await.expect("clean stop");

    let logs = String::from_utf8(logs.lock().unwrap().clone()).expect("UTF-8 logs");
    for expected in ["listening on", "delivered", "attempt failed", "missing or wrong token", "admin token"] {
        assert!(logs.contains(expected), "the capture misses `{expected}`; is it working?\n{logs}");
    }
    let pushed: Vec<String> = pushes.iter().map(|p| format!("{:?} {}", p.headers, p.json())).collect();
    for secret in secrets() {
        assert!(!logs.contains(&secret), "the logs contain {secret}");
        for text in t.seen.iter().chain(&pushed) {
            assert!(!text.contains(&secret), "{secret} leaked in: {text}");
        }
    }
}
