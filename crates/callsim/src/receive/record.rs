//! What the receiver writes about each push: one JSON line in the `--out` file and one
//! readable line on stdout.

use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use super::tracker::{PushKind, SigState, Verdict};

/// One push as written to the JSONL file: headers of interest, verdicts, answer, body.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRecord {
    /// Receiver's clock, epoch ms.
    pub received_at: i64,
    /// Request path.
    pub path: String,
    /// CDR, status or other.
    pub kind: PushKind,
    /// `webhook-id` header.
    pub webhook_id: Option<String>,
    /// `webhook-timestamp` header.
    pub webhook_timestamp: Option<String>,
    /// `webhook-signature` header.
    pub webhook_signature: Option<String>,
    /// `X-Push-Attempt` header, as a number.
    pub attempt: Option<u64>,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// `ok`, `bad`, `none` or `unchecked`.
    pub signature: &'static str,
    /// Why the signature is bad.
    pub signature_error: Option<String>,
    /// The webhook-id was already answered 2xx.
    pub duplicate: bool,
    /// Per-call order problem, described.
    pub order_violation: Option<String>,
    /// The answer is an injected failure.
    pub injected: bool,
    /// HTTP status answered.
    pub answered: u16,
    /// Delay applied before answering, ms.
    pub delay_ms: u64,
    /// The body: parsed JSON, or the raw text when it is not JSON.
    pub body: Value,
}

/// The headers the receiver cares about, as owned strings.
#[derive(Clone, Debug, Default)]
pub struct PushHeaders {
    /// `webhook-id`.
    pub id: Option<String>,
    /// `webhook-timestamp`.
    pub timestamp: Option<String>,
    /// `webhook-signature`.
    pub signature: Option<String>,
    /// `X-Push-Attempt`.
    pub attempt: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
}

impl PushHeaders {
    /// Extracts the headers of interest (non-UTF-8 values are dropped).
    pub fn from_map(headers: &HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Self {
            id: get("webhook-id"),
            timestamp: get("webhook-timestamp"),
            signature: get("webhook-signature"),
            attempt: get("x-push-attempt"),
            user_agent: get("user-agent"),
            content_type: get("content-type"),
        }
    }
}

/// Everything known about a push once it has been judged.
pub struct Judged<'a> {
    /// Receiver's clock, epoch ms.
    pub received_at: i64,
    /// Request path.
    pub path: &'a str,
    /// Kind of push.
    pub kind: PushKind,
    /// Headers of interest.
    pub headers: &'a PushHeaders,
    /// Signature verification.
    pub signature: &'a SigState,
    /// Duplicate and order findings.
    pub verdict: &'a Verdict,
    /// Answer is an injected failure.
    pub injected: bool,
    /// HTTP status answered.
    pub answered: u16,
    /// Delay before answering, ms.
    pub delay_ms: u64,
}

impl PushRecord {
    /// Builds the record of a judged push.
    pub fn new(j: &Judged<'_>, body: Value) -> Self {
        let h = j.headers;
        Self {
            received_at: j.received_at,
            path: j.path.to_string(),
            kind: j.kind,
            webhook_id: h.id.clone(),
            webhook_timestamp: h.timestamp.clone(),
            webhook_signature: h.signature.clone(),
            attempt: h.attempt.as_deref().and_then(|a| a.trim().parse().ok()),
            user_agent: h.user_agent.clone(),
            content_type: h.content_type.clone(),
            signature: j.signature.as_str(),
            signature_error: match j.signature {
                SigState::Bad(reason) => Some(reason.clone()),
                _ => None,
            },
            duplicate: j.verdict.duplicate,
            order_violation: j.verdict.order.as_ref().map(ToString::to_string),
            injected: j.injected,
            answered: j.answered,
            delay_ms: j.delay_ms,
            body,
        }
    }

    /// One readable line, e.g.
    /// `12:00:01.234Z status sim-000001 #2 ANSWERED CALLER id=evt-1 try=1 sig=ok -> 200`.
    pub fn line(&self) -> String {
        let b = &self.body;
        let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
        let call = b.get("callId").and_then(Value::as_str).unwrap_or("?");
        let what = match self.kind {
            PushKind::Status => {
                let seq = b.get("sequence").and_then(Value::as_u64);
                let seq = seq.map_or("#?".to_string(), |s| format!("#{s}"));
                format!("{seq} {}", text("status"))
            }
            PushKind::Cdr => {
                let secs = b.get("duration").and_then(Value::as_i64).unwrap_or(0);
                format!("{} {secs}s", text("disposition"))
            }
            PushKind::Other => String::new(),
        };
        let mut line = format!(
            "{} {:<6} {call} {what}{}{} id={} try={} sig={} -> {}",
            clock(self.received_at),
            self.kind.as_str(),
            if text("party").is_empty() { "" } else { " " },
            text("party"),
            self.webhook_id.as_deref().unwrap_or("-"),
            self.attempt.map_or("-".to_string(), |a| a.to_string()),
            self.signature,
            self.answered,
        );
        if self.injected {
            line.push_str(" (injected)");
        }
        if self.duplicate {
            line.push_str(" DUPLICATE");
        }
        if let Some(order) = &self.order_violation {
            line.push_str(&format!(" ORDER({order})"));
        }
        if let Some(err) = &self.signature_error {
            line.push_str(&format!(" SIGNATURE({err})"));
        }
        line
    }
}

/// `HH:MM:SS.mmmZ` of an epoch-ms instant, UTC.
pub fn clock(ms: i64) -> String {
    let day_ms = ms.rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}.{:03}Z", day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_formats_utc() {
        assert_eq!(clock(1_701_388_800_000 + 3_723_456), "01:02:03.456Z");
    }
}
