//! One attempt of one delivery: send it, decide with the retry policy what follows, and log
//! and count it. Runs in its own task; the loop only sees the [`Completion`].

use std::sync::Arc;

use super::webhook::{Sent, WebhookClient};
use crate::{
    clock::Clock,
    outbox::{Claimed, Completion, NextState},
    retry::{Decision, RetryPolicy},
    subscribers::Route,
};

/// Everything one attempt needs, shared by the loop and its attempt tasks.
pub(super) struct Shared {
    pub client: WebhookClient,
    pub policy: RetryPolicy,
    pub clock: Arc<dyn Clock>,
}

/// Makes one attempt and decides what follows; logs one line per attempt. A failed probe of
/// an open breaker is held: its retry schedule does not advance.
pub(super) async fn attempt(shared: &Shared, route: &Route, claimed: Claimed, probe: bool) -> Completion {
    let number = claimed.attempts + 1;
    let at = shared.clock.now_ms();
    let sent = shared.client.send(route, &claimed.event_id, claimed.payload, number, at / 1000).await;
    let decision = shared.policy.decide(number - claimed.round_start, sent.result);
    let latency_ms = sent.latency.as_millis() as i64;
    let next = match decision {
        Decision::Delivered => NextState::Delivered,
        _ if probe => NextState::Held,
        Decision::RetryIn(wait) => NextState::RetryAt(at + latency_ms + wait.as_millis() as i64),
        Decision::Dead => NextState::Dead,
    };
    log_attempt(&claimed.event_id, &claimed.call_id, route, number, &sent, next);
    Completion {
        id: claimed.id,
        subscriber: claimed.subscriber,
        call_id: claimed.call_id,
        attempt: number,
        at,
        status: sent.status,
        error: sent.error,
        latency_ms,
        next,
    }
}

/// Logs one attempt: info when delivered, warn when it will be retried, error when dead.
fn log_attempt(event_id: &str, call_id: &str, route: &Route, attempt: u32, sent: &Sent, next: NextState) {
    let latency_ms = sent.latency.as_millis() as u64;
    let status = sent.status.map(i64::from).unwrap_or(-1);
    let error = sent.error.as_deref().unwrap_or("");
    let subscriber = route.id.as_str();
    route.metrics.attempt(sent.latency, next == NextState::Delivered, next == NextState::Dead);
    match next {
        NextState::Delivered => {
            tracing::info!(target: "attempt", event_id, call_id, subscriber, attempt, status, latency_ms, "delivered")
        }
        NextState::RetryAt(at) => tracing::warn!(
            target: "attempt", event_id, call_id, subscriber, attempt, status, error, latency_ms, retry_at = at,
            "attempt failed; will retry"
        ),
        NextState::Dead if sent.status == Some(410) => tracing::error!(
            target: "attempt", event_id, call_id, subscriber, attempt, status, error, latency_ms,
            "subscriber answered 410 Gone: delivery is dead, check the subscriber's URL"
        ),
        NextState::Dead => tracing::error!(
            target: "attempt", event_id, call_id, subscriber, attempt, status, error, latency_ms,
            "attempt failed; no retries left: delivery is dead"
        ),
        NextState::Held | NextState::Returned => tracing::warn!(
            target: "attempt", event_id, call_id, subscriber, attempt, status, error, latency_ms,
            "probe failed; the breaker stays open (the delivery keeps its retry schedule)"
        ),
    }
}
