//! One attempt of one delivery: send it, decide with the retry policy what follows, and log
//! and count it. Runs in its own task; the loop only sees the [`Completion`].

use std::sync::Arc;

use super::webhook::WebhookClient;
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

/// Makes one attempt and decides what follows; logs one line per attempt.
pub(super) async fn attempt(shared: &Shared, route: &Route, claimed: Claimed) -> Completion {
    let number = claimed.attempts + 1;
    let at = shared.clock.now_ms();
    let sent = shared.client.send(route, &claimed.event_id, claimed.payload, number, at / 1000).await;
    let decision = shared.policy.decide(number - claimed.round_start, sent.result);
    let latency_ms = sent.latency.as_millis() as i64;
    let next = match decision {
        Decision::Delivered => NextState::Delivered,
        Decision::RetryIn(wait) => NextState::RetryAt(at + latency_ms + wait.as_millis() as i64),
        Decision::Dead => NextState::Dead,
    };
    crate::telemetry::log_attempt(&claimed.event_id, &claimed.call_id, route, number, &sent, next);
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
