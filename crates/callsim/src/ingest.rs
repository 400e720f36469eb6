//! The pushers' ingest API as a client: posts one record to `POST /v1/status-events` or
//! `POST /v1/cdrs` and classifies the answer (SPEC §3).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use crate::model::Payload;
use crate::stats::{Kind, PostOutcome};

/// Path of status-pusher's ingest endpoint.
pub const STATUS_PATH: &str = "/v1/status-events";
/// Path of cdr-pusher's ingest endpoint.
pub const CDR_PATH: &str = "/v1/cdrs";

/// Client of both ingest endpoints; either may be absent, and records for it are skipped.
#[derive(Clone, Debug)]
pub struct IngestClient {
    http: reqwest::Client,
    status_endpoint: Option<String>,
    cdr_endpoint: Option<String>,
    token: Option<String>,
}

/// Turns a base URL (`http://127.0.0.1:8082`) into the endpoint URL; a URL that already
/// ends with the path is kept.
pub fn endpoint(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with(path) {
        base.to_string()
    } else {
        format!("{base}{path}")
    }
}

impl IngestClient {
    /// A client posting to the given base URLs, with an optional Bearer token and a
    /// per-request timeout.
    pub fn new(
        cdr_url: Option<&str>,
        status_url: Option<&str>,
        token: Option<String>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("callsim/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            status_endpoint: status_url.map(|u| endpoint(u, STATUS_PATH)),
            cdr_endpoint: cdr_url.map(|u| endpoint(u, CDR_PATH)),
            token,
        })
    }

    /// Which pusher a record goes to, and its endpoint if that pusher is configured.
    pub fn route(&self, payload: &Payload) -> (Kind, Option<&str>) {
        match payload {
            Payload::Status(_) => (Kind::Status, self.status_endpoint.as_deref()),
            Payload::Cdr(_) => (Kind::Cdr, self.cdr_endpoint.as_deref()),
        }
    }

    /// Posts one record and classifies the answer; `None` when its pusher is not
    /// configured. Returns the outcome and the request latency.
    pub async fn post(&self, payload: &Payload) -> Option<(Kind, PostOutcome, Duration)> {
        let (kind, url) = self.route(payload);
        let url = url?;
        let mut request = self.http.post(url).json(&payload.to_json());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(response) => classify(response).await,
            Err(e) => PostOutcome::Error(transport_error(&e)),
        };
        Some((kind, outcome, started.elapsed()))
    }
}

/// Maps an HTTP answer to an outcome: 2xx accepted or duplicate, 4xx rejected, else error.
pub async fn classify(response: reqwest::Response) -> PostOutcome {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        if is_duplicate(&body) {
            PostOutcome::Duplicate
        } else {
            PostOutcome::Accepted
        }
    } else if status.is_client_error() {
        PostOutcome::Rejected { status: status.as_u16(), body }
    } else {
        PostOutcome::Error(format!("HTTP {} {}", status.as_u16(), body))
    }
}

/// True when the single-record answer `{"accepted":[{"duplicate":true}]}` says so.
fn is_duplicate(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("accepted")?.get(0)?.get("duplicate")?.as_bool())
        .unwrap_or(false)
}

/// A short description of a transport failure, with its root cause.
pub fn transport_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timeout".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_base_urls() {
        assert_eq!(endpoint("http://127.0.0.1:8081/", CDR_PATH), "http://127.0.0.1:8081/v1/cdrs");
        assert_eq!(endpoint("http://h:1/v1/status-events", STATUS_PATH), "http://h:1/v1/status-events");
    }

    #[test]
    fn duplicate_flag() {
        assert!(is_duplicate(r#"{"accepted":[{"callId":"a","eventId":"e","duplicate":true}]}"#));
        assert!(!is_duplicate(r#"{"accepted":[{"duplicate":false}]}"#));
        assert!(!is_duplicate("not json"));
    }
}
