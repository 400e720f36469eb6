//! The only module making outbound HTTP: one POST per attempt with the SPEC §4 headers.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use crate::{retry::AttemptResult, signature, subscribers::Route};

/// Longest piece of a failing subscriber's answer kept in the attempt log.
const ERROR_BODY_CHARS: usize = 200;

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
    http: reqwest::Client,
}

impl WebhookClient {
    /// Builds the client; `timeout` bounds a whole attempt, `pool` the idle connections kept.
    pub fn new(timeout: Duration, pool: usize) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("voice-push/", env!("CARGO_PKG_VERSION"))));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(pool)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(WebhookClient { http })
    }

    /// POSTs `body` to the route's URL as attempt number `attempt`, at `unix_secs`.
    pub async fn send(&self, route: &Route, event_id: &str, body: String, attempt: u32, unix_secs: i64) -> Sent {
        let mut request = self
            .http
            .post(route.url.clone())
            .header("webhook-id", event_id)
            .header("webhook-timestamp", unix_secs.to_string())
            .header("X-Push-Attempt", attempt.to_string());
        if let Some(key) = &route.key {
            request = request.header("webhook-signature", signature::sign(key, event_id, unix_secs, body.as_bytes()));
        }
        let started = Instant::now();
        let response = request.body(body).send().await;
        match response {
            Ok(response) => answered(response, started).await,
            Err(e) => Sent {
                result: AttemptResult::Transport,
                status: None,
                error: Some(describe(&e)),
                latency: started.elapsed(),
            },
        }
    }
}

async fn answered(response: reqwest::Response, started: Instant) -> Sent {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read the answer so the connection can be reused, and keep a piece of it on failure.
    let text = response.text().await;
    let latency = started.elapsed();
    let code = status.as_u16();
    if status.is_success() {
        return Sent { result: AttemptResult::Success, status: Some(code), error: None, latency };
    }
    let error = match text {
        Ok(text) if !text.trim().is_empty() => {
            format!("HTTP {code}: {}", text.trim().chars().take(ERROR_BODY_CHARS).collect::<String>())
        }
        _ => format!("HTTP {code}"),
    };
    Sent { result: AttemptResult::Status { code, retry_after }, status: Some(code), error: Some(error), latency }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout: no answer within delivery.timeout".to_string()
    } else if e.is_connect() {
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
