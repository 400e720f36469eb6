//! The test receiver: an HTTP server that accepts pushes on any path the way a third-party
//! application would, verifies Standard Webhooks signatures, checks duplicates and per-call
//! order, can inject failures and delays, logs each push and keeps counters.
//!
//! Start it with [`Receiver::start`] on a bound listener (port 0 in tests); the returned
//! [`ReceiverHandle`] exposes the address, live [`ReceiverStats`] and a graceful shutdown.

pub mod record;
pub mod tracker;

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::calls::now_ms;
use crate::signature::{WebhookHeaders, WebhookSecret, DEFAULT_TOLERANCE_SECS};
use record::{Judged, PushHeaders, PushRecord};
use tracker::{Observation, Tracker};
pub use tracker::{OrderIssue, PushKind, ReceiverStats, SigState};

/// How the receiver behaves.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// `whsec_...` secret; when set, signatures are verified and bad ones answered 401.
    pub secret: Option<String>,
    /// Probability (0..=1) of answering `fail_status` instead of 200.
    pub fail_rate: f64,
    /// Status of injected failures.
    pub fail_status: u16,
    /// Wait before answering each push.
    pub delay: Duration,
    /// Append one JSON line per push to this file.
    pub out: Option<PathBuf>,
    /// Seed of failure injection; `None` = random.
    pub seed: Option<u64>,
    /// Print one line per push on stdout.
    pub print: bool,
    /// Accepted distance between `webhook-timestamp` and the receiver's clock, seconds.
    pub tolerance_secs: i64,
    /// The subscriber filters statuses (`statuses:`): a call's sequence numbers may skip,
    /// so only sequences going backwards are order violations.
    pub gaps_expected: bool,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            secret: None,
            fail_rate: 0.0,
            fail_status: 500,
            delay: Duration::ZERO,
            out: None,
            seed: None,
            print: false,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            gaps_expected: false,
        }
    }
}

/// Namespace of the receiver's constructor.
pub struct Receiver;

/// A running receiver.
pub struct ReceiverHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

/// State shared by the request handlers.
struct Shared {
    config: ReceiverConfig,
    secret: Option<WebhookSecret>,
    inner: Mutex<Inner>,
}

/// Mutable state, behind one lock so that counters, file and log stay in push order.
struct Inner {
    tracker: Tracker,
    rng: ChaCha8Rng,
    out: Option<File>,
}

impl Receiver {
    /// Validates `config`, opens the output file and serves on `listener` until
    /// [`ReceiverHandle::shutdown`].
    pub async fn start(config: ReceiverConfig, listener: TcpListener) -> anyhow::Result<ReceiverHandle> {
        if !(0.0..=1.0).contains(&config.fail_rate) {
            anyhow::bail!("fail rate must be between 0 and 1");
        }
        StatusCode::from_u16(config.fail_status)
            .ok()
            .filter(|s| !s.is_informational())
            .context("fail status must be an HTTP status 200-999")?;
        let secret = config.secret.as_deref().map(WebhookSecret::parse).transpose().map_err(anyhow::Error::msg)?;
        let out = match &config.out {
            Some(path) => Some(
                File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            None => None,
        };
        let rng = match config.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        let tracker = Tracker::new(config.gaps_expected);
        let shared = Arc::new(Shared { config, secret, inner: Mutex::new(Inner { tracker, rng, out }) });
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let stop = CancellationToken::new();
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
        let task = tokio::spawn(async move { serve.await });
        Ok(ReceiverHandle { addr, shared, stop, task })
    }
}

impl ReceiverHandle {
    /// The address the receiver listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}{path}`, for configuring subscribers and tests.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A copy of the counters now.
    pub fn stats(&self) -> ReceiverStats {
        self.shared.inner.lock().expect("receiver lock").tracker.stats().clone()
    }

    /// Stops accepting, lets requests in progress finish (up to 5 s) and returns the
    /// final counters.
    pub async fn shutdown(self) -> ReceiverStats {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
        let inner = self.shared.inner.lock().expect("receiver lock");
        inner.tracker.stats().clone()
    }
}

/// Handles every request: only POST is accepted, on any path.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "only POST\n").into_response();
    }
    let (record, status) = shared.judge(uri.path(), &headers, &body);
    if shared.config.print {
        println!("{}", record.line());
    }
    if !shared.config.delay.is_zero() {
        tokio::time::sleep(shared.config.delay).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reply = if status.is_success() {
        json!({"ok": true})
    } else {
        json!({"error": status.canonical_reason().unwrap_or("error"), "injected": record.injected})
    };
    (status, axum::Json(reply)).into_response()
}

impl Shared {
    /// Verifies, decides the answer, updates counters and writes the JSONL line.
    fn judge(&self, path: &str, headers: &HeaderMap, body: &[u8]) -> (PushRecord, u16) {
        let push_headers = PushHeaders::from_map(headers);
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let signature = self.check_signature(&push_headers, body);
        let kind = PushKind::classify(path, parsed.as_ref());
        let mut inner = self.inner.lock().expect("receiver lock");
        let (answer, injected) = if parsed.is_none() {
            (400, false)
        } else if matches!(signature, SigState::Bad(_)) {
            (401, false)
        } else if inner.rng.random_bool(self.config.fail_rate) {
            (self.config.fail_status, true)
        } else {
            (200, false)
        };
        let body_json = parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into()));
        let verdict = inner.tracker.observe(&Observation {
            path,
            kind,
            webhook_id: push_headers.id.as_deref(),
            call_id: body_json.get("callId").and_then(Value::as_str),
            sequence: body_json.get("sequence").and_then(Value::as_u64),
            signature: &signature,
            signed: push_headers.signature.is_some(),
            answer,
            injected,
            malformed: answer == 400,
        });
        let record = PushRecord::new(
            &Judged {
                received_at: now_ms(),
                path,
                kind,
                headers: &push_headers,
                signature: &signature,
                verdict: &verdict,
                injected,
                answered: answer,
                delay_ms: self.config.delay.as_millis() as u64,
            },
            body_json,
        );
        if let Some(file) = inner.out.as_mut() {
            let line = serde_json::to_string(&record).expect("records serialize");
            if let Err(e) = writeln!(file, "{line}") {
                eprintln!("callsim receive: writing the output file failed: {e}");
            }
        }
        (record, answer)
    }

    /// Standard Webhooks verification when a secret is configured.
    fn check_signature(&self, h: &PushHeaders, body: &[u8]) -> SigState {
        let Some(secret) = &self.secret else {
            return if h.signature.is_some() { SigState::Unchecked } else { SigState::None };
        };
        let headers = WebhookHeaders {
            id: h.id.as_deref(),
            timestamp: h.timestamp.as_deref(),
            signature: h.signature.as_deref(),
        };
        match secret.verify(&headers, body, now_ms() / 1000, self.config.tolerance_secs) {
            Ok(()) => SigState::Ok,
            Err(e) => SigState::Bad(e.to_string()),
        }
    }
}
