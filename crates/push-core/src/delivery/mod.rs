//! The delivery loop: claims due deliveries, attempts them concurrently within the global and
//! per-subscriber limits, and records each result through the outbox.
//!
//! The loop sleeps until it is woken by new work (ingest), by a finished attempt, or by the
//! next due retry; it never polls the database in a tight loop. At most `max_in_flight`
//! deliveries are held in memory; the backlog stays in SQLite.

mod webhook;

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, Notify},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

pub use self::webhook::{Sent, WebhookClient};
use crate::{
    clock::Clock,
    config::Settings,
    outbox::{Claimed, Completion, NextState, Outbox},
    retry::{Decision, RetryPolicy},
    subscribers::{Route, Routes},
};

/// How long to wait before trying the database again after it failed.
const STORAGE_BACKOFF: Duration = Duration::from_millis(500);

/// Everything one attempt needs, shared by the loop and its attempt tasks.
struct Shared {
    client: WebhookClient,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
}

/// The delivery loop of one program.
pub struct Dispatcher {
    outbox: Outbox,
    routes: Routes,
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    max_in_flight: usize,
    per_subscriber: usize,
    grace: Duration,
}

/// Counts of attempts in flight, total and per subscriber.
#[derive(Default)]
struct InFlight {
    total: usize,
    by_subscriber: HashMap<String, usize>,
}

impl InFlight {
    fn release(&mut self, subscriber: &str) {
        self.total -= 1;
        if let Some(n) = self.by_subscriber.get_mut(subscriber) {
            *n -= 1;
        }
    }
}

impl Dispatcher {
    /// Builds the loop; `wake` is notified by ingest when new deliveries are committed.
    pub fn new(
        settings: &Settings,
        routes: Routes,
        outbox: Outbox,
        wake: Arc<Notify>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let d = &settings.delivery;
        let shared = Shared {
            client: WebhookClient::new(d.timeout, d.max_in_flight_per_subscriber)?,
            policy: RetryPolicy::new(&settings.retry),
            clock,
        };
        Ok(Dispatcher {
            outbox,
            routes,
            shared: Arc::new(shared),
            wake,
            max_in_flight: d.max_in_flight,
            per_subscriber: d.max_in_flight_per_subscriber,
            grace: d.shutdown_grace,
        })
    }

    /// Runs until `shutdown`, then lets in-flight attempts finish for up to the grace period
    /// and releases whatever is left for the next start.
    pub async fn run(self, shutdown: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut in_flight = InFlight::default();
        let mut finished: Vec<Completion> = Vec::new();
        let mut next_due: Option<i64> = None;
        while !shutdown.is_cancelled() {
            while let Ok(c) = done_rx.try_recv() {
                finished.push(c);
            }
            let storage_ok = self.cycle(&mut finished, &mut in_flight, &mut next_due, &done_tx, true).await;
            let wait = if storage_ok {
                self.until(next_due)
            } else {
                STORAGE_BACKOFF
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                Some(c) = done_rx.recv() => finished.push(c),
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        self.drain((done_tx, done_rx), finished, in_flight).await;
    }

    fn until(&self, next_due: Option<i64>) -> Duration {
        match next_due {
            Some(due) => Duration::from_millis((due - self.shared.clock.now_ms()).clamp(0, 3_600_000) as u64),
            None => Duration::from_secs(3600),
        }
    }

    /// One turn: records finished attempts and claims new work in one outbox transaction.
    /// Returns false if the outbox failed (the results are kept and written next turn).
    async fn cycle(
        &self,
        finished: &mut Vec<Completion>,
        in_flight: &mut InFlight,
        next_due: &mut Option<i64>,
        done: &mpsc::UnboundedSender<Completion>,
        claiming: bool,
    ) -> bool {
        let wants = if claiming { self.wants(finished, in_flight) } else { Vec::new() };
        if finished.is_empty() && wants.is_empty() {
            *next_due = None;
            return true;
        }
        let claimed_any = !wants.is_empty();
        let results = Arc::new(std::mem::take(finished));
        match self.outbox.cycle(results.clone(), wants, self.shared.clock.now_ms()).await {
            Ok(batch) => {
                for c in results.iter() {
                    in_flight.release(&c.subscriber);
                    if !matches!(c.next, NextState::RetryAt(_)) {
                        self.routes.queue_depth_add(&c.subscriber, -1.0);
                    }
                }
                *next_due = if claimed_any { batch.next_due } else { None };
                for claimed in batch.items {
                    self.start(claimed, in_flight, done);
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "recording results / claiming work failed; will retry");
                *finished = Arc::try_unwrap(results).unwrap_or_else(|shared| (*shared).clone());
                false
            }
        }
    }

    /// Free slots per subscriber, counting the slots of the results about to be recorded.
    fn wants(&self, finished: &[Completion], in_flight: &InFlight) -> Vec<(String, usize)> {
        let room = self.max_in_flight - (in_flight.total - finished.len());
        self.routes
            .all()
            .iter()
            .map(|r| {
                let used = in_flight.by_subscriber.get(&r.id).copied().unwrap_or(0);
                let freeing = finished.iter().filter(|c| c.subscriber == r.id).count();
                (r.id.clone(), self.per_subscriber.saturating_sub(used - freeing).min(room))
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn start(&self, claimed: Claimed, in_flight: &mut InFlight, done: &mpsc::UnboundedSender<Completion>) {
        let Some(route) = self.routes.get(&claimed.subscriber).cloned() else {
            return;
        };
        in_flight.total += 1;
        *in_flight.by_subscriber.entry(claimed.subscriber.clone()).or_default() += 1;
        let shared = self.shared.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let completion = attempt(&shared, &route, claimed).await;
            let _ = done.send(completion);
        });
    }

    async fn drain(
        self,
        (done_tx, mut done_rx): (mpsc::UnboundedSender<Completion>, mpsc::UnboundedReceiver<Completion>),
        mut finished: Vec<Completion>,
        mut in_flight: InFlight,
    ) {
        let deadline = Instant::now() + self.grace;
        let waiting = in_flight.total - finished.len();
        tracing::info!(in_flight = waiting, grace = ?self.grace, "delivery loop stopping");
        let mut outstanding = waiting;
        while outstanding > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(c)) => {
                    finished.push(c);
                    outstanding -= 1;
                }
                _ => break,
            }
        }
        let mut none = None;
        self.cycle(&mut finished, &mut in_flight, &mut none, &done_tx, false).await;
        if let Err(e) = self.outbox.release_claims().await {
            tracing::error!(error = %e, "releasing claims failed; the next start releases them");
        }
        tracing::info!(abandoned = outstanding, "delivery loop stopped");
    }
}

/// Makes one attempt and decides what follows; logs one line per attempt.
async fn attempt(shared: &Shared, route: &Route, claimed: Claimed) -> Completion {
    let number = claimed.attempts + 1;
    let at = shared.clock.now_ms();
    let sent = shared
        .client
        .send(route, &claimed.event_id, claimed.payload, number, at / 1000)
        .await;
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
