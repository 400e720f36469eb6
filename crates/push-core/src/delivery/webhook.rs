//! The only module making outbound HTTP: one POST per attempt with the SPEC §4 headers.
//!
//! Built on hyper's pooled client rather than reqwest: reqwest's per-request layers (its
//! redirect policy re-parses every request's URL even with redirects off, default headers
//! are merged per request) cost about a tenth of the delivery path's CPU in a drain profile.
//! Here a request is the route's pre-parsed URI, six headers and the stored body.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{
    header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT},
    HeaderValue, Request, Response,
};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

use crate::{retry::AttemptResult, signature, subscribers::Route};

/// Longest piece of a failing subscriber's answer kept in the attempt log.
const ERROR_BODY_CHARS: usize = 200;
/// Most bytes of an answer read; a longer one is cut off (and its connection not reused).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
const JSON: HeaderValue = HeaderValue::from_static("application/json; charset=utf-8");
const AGENT: HeaderValue = HeaderValue::from_static(concat!("voice-push/", env!("CARGO_PKG_VERSION")));

/// What one attempt came back with.
#[derive(Debug, Clone)]
pub struct Sent {
    /// For the retry policy.
    pub result: AttemptResult,
    /// HTTP status, if an answer came.
    pub status: Option<u16>,
    /// Error text for the attempt log; `None` on success.
    pub error: Option<String>,
    /// Time from sending to the answer or failure.
    pub latency: Duration,
}

/// A pooled HTTP client: connections to each subscriber are kept alive and reused.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl WebhookClient {
    /// Builds the client; `timeout` bounds a whole attempt, `pool` the idle connections kept
    /// per subscriber. `https://` URLs are verified against the webpki roots.
    pub fn new(timeout: Duration, pool: usize) -> anyhow::Result<Self> {
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(WebhookClient { http, timeout })
    }

    /// POSTs `body` to the route's URL as attempt number `attempt`, at `unix_secs`.
    pub async fn send(&self, route: &Route, event_id: &str, body: String, attempt: u32, unix_secs: i64) -> Sent {
        let started = Instant::now();
        let request = match build(route, event_id, body, attempt, unix_secs) {
            Ok(request) => request,
            Err(e) => return failed(format!("request error: {e}"), started),
        };
        let exchange = async {
            let response = self.http.request(request).await?;
            Ok::<_, hyper_util::client::legacy::Error>(read(response).await)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((code, retry_after, text))) => answered(code, retry_after, text, started),
            Ok(Err(e)) => failed(describe(&e), started),
            Err(_) => failed("timeout: no answer within delivery.timeout".into(), started),
        }
    }
}

fn build(
    route: &Route,
    event_id: &str,
    body: String,
    attempt: u32,
    unix_secs: i64,
) -> http::Result<Request<Full<Bytes>>> {
    let mut request = Request::post(route.uri.clone())
        .header(CONTENT_TYPE, JSON)
        .header(USER_AGENT, AGENT)
        .header("webhook-id", event_id)
        .header("webhook-timestamp", unix_secs)
        .header("X-Push-Attempt", attempt);
    if let Some(key) = &route.key {
        request = request.header("webhook-signature", signature::sign(key, event_id, unix_secs, body.as_bytes()));
    }
    request.body(Full::new(Bytes::from(body)))
}

/// Reads the answer (so the connection can be reused): status, `Retry-After` in seconds,
/// and the body (empty if unreadable or too long); it becomes text only for a failure.
async fn read(response: Response<hyper::body::Incoming>) -> (u16, Option<Duration>, Bytes) {
    let code = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match Limited::new(response.into_body(), MAX_ANSWER_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    (code, retry_after, body)
}

fn answered(code: u16, retry_after: Option<Duration>, body: Bytes, started: Instant) -> Sent {
    let latency = started.elapsed();
    if (200..300).contains(&code) {
        return Sent { result: AttemptResult::Success, status: Some(code), error: None, latency };
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    let error = if text.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code}: {}", text.chars().take(ERROR_BODY_CHARS).collect::<String>())
    };
    Sent { result: AttemptResult::Status { code, retry_after }, status: Some(code), error: Some(error), latency }
}

fn failed(error: String, started: Instant) -> Sent {
    Sent { result: AttemptResult::Transport, status: None, error: Some(error), latency: started.elapsed() }
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() {
        format!("connect error: {}", root_cause(e))
    } else {
        format!("request error: {}", root_cause(e))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
