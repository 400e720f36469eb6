//! The delivery loop: attempts deliveries concurrently within the global and per-subscriber
//! limits, and records each result through the outbox.
//!
//! Work reaches the loop two ways: the outbox writer hands over deliveries it has just stored
//! as claimed (when a slot is free), and the loop claims due deliveries itself (retries, and
//! whatever did not fit). It sleeps until it is woken by a hand-over, by a commit (`wake`), by
//! a finished attempt, or by the next due retry; it never polls the database in a tight loop.
//! At most `max_in_flight` attempts run at once, `max_in_flight_per_subscriber` per
//! subscriber; besides those, up to [`CLAIM_BATCH`] claimed deliveries per subscriber wait in
//! memory, ready to start the moment an attempt finishes. The [`Slots`] count every claim
//! held in memory (running, ready, or stored by the writer and waiting for its fsync), so
//! claims stay bounded while the writer hands new deliveries over without a claim query.
//! The backlog stays in SQLite.

mod attempt;
pub mod breaker;
pub mod health;
mod lane;
mod lanes;
#[cfg(test)]
mod lanes_tests;
#[cfg(test)]
mod model_tests;
mod pace;
mod webhook;

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, Notify},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use self::attempt::{attempt, Shared};
use self::health::{Board, Control};
use self::lanes::{Lanes, Round, Start};
pub use self::webhook::{Sent, WebhookClient};
use crate::{
    clock::Clock,
    config::Settings,
    outbox::{ClaimBatch, Claimed, Completion, Store, StoreError},
    retry::RetryPolicy,
    slots::Slots,
    subscribers::Routes,
};

/// How long to wait before trying the database again after it failed.
const STORAGE_BACKOFF: Duration = Duration::from_millis(500);
/// Deliveries claimed per subscriber in one round trip at most, beyond its slots: a few
/// large claims cost the writer far less than many small ones (each round trip is a
/// transaction with its own statements and WAL pages).
const CLAIM_BATCH: usize = 256;
/// Claims one subscriber may hold in memory: its attempts in flight plus a ready queue of
/// [`CLAIM_BATCH`] (or a slot's worth, if that is more). The [`Slots`] are sized by it.
pub fn claim_capacity(per_subscriber: usize) -> usize {
    per_subscriber + CLAIM_BATCH.max(per_subscriber)
}

/// How long a finished attempt's result may wait to be recorded while attempts are still
/// running, so that results are recorded in batches, not one transaction per attempt. It is
/// also the longest a status waits, after its predecessor's answer, to be let go, when both
/// were queued at once (statuses that arrive seconds apart go at once).
const RECORD_DELAY: Duration = Duration::from_millis(20);
/// Results that are recorded at once, whatever their age, per slot of a subscriber.
const RECORD_BATCH_PER_SLOT: usize = 8;

/// What the loop is connected to.
pub struct Wiring {
    /// Subscribers of this program.
    pub routes: Routes,
    /// The outbox.
    pub outbox: Arc<dyn Store>,
    /// Notified after commits that may have made work claimable.
    pub wake: Arc<Notify>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Free attempt slots, shared with the writer's hand-over.
    pub slots: Arc<Slots>,
    /// Deliveries the writer handed over (their claims already counted in the slots).
    pub handed: mpsc::UnboundedReceiver<Vec<Claimed>>,
    /// Where the loop publishes subscribers' health.
    pub board: Board,
    /// The operations API's commands (pause, resume, reload).
    pub control: mpsc::UnboundedReceiver<Control>,
    /// Subscribers paused when the program started.
    pub paused: Vec<String>,
}

/// The delivery loop of one program.
pub struct Dispatcher {
    wiring: Wiring,
    shared: Arc<Shared>,
    per_subscriber: usize,
    max_in_flight: usize,
    grace: Duration,
    breaker: crate::config::BreakerSettings,
}

/// An outbox round trip under way.
type RoundFuture = std::pin::Pin<Box<dyn std::future::Future<Output = (Round, Result<ClaimBatch, StoreError>)> + Send>>;

/// Awaits the round trip under way, if any (never completes otherwise).
async fn running(round: Option<&mut RoundFuture>) -> (Round, Result<ClaimBatch, StoreError>) {
    match round {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl Dispatcher {
    /// Builds the loop.
    pub fn new(settings: &Settings, wiring: Wiring) -> anyhow::Result<Self> {
        let d = &settings.delivery;
        let shared = Shared {
            client: WebhookClient::new(d.timeout, d.max_in_flight_per_subscriber)?,
            policy: RetryPolicy::new(&settings.retry),
            clock: wiring.clock.clone(),
        };
        Ok(Dispatcher {
            wiring,
            shared: Arc::new(shared),
            per_subscriber: d.max_in_flight_per_subscriber,
            max_in_flight: d.max_in_flight,
            grace: d.shutdown_grace,
            breaker: settings.breaker.clone(),
        })
    }

    /// Runs until `shutdown`, then lets in-flight attempts finish for up to the grace period
    /// and releases whatever is left for the next start. Every decision is [`Lanes`]'; the
    /// loop carries them out. The outbox round trip runs alongside everything else: finished
    /// attempts free their slots and start ready deliveries while it is under way.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let (max, per) = (self.max_in_flight, self.per_subscriber);
        let mut lanes = Lanes::new(&self.wiring.routes, self.wiring.slots.clone(), max, per, claim_capacity(per))
            .with_breakers(&self.breaker, self.shared.clock.clone(), self.wiring.board.clone());
        lanes.paused_at_start(&std::mem::take(&mut self.wiring.paused));
        let mut round: Option<RoundFuture> = None;
        let mut backoff: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            let now = self.shared.clock.now_ms();
            if round.is_none() && backoff.is_none_or(|t| Instant::now() >= t) && lanes.round_due(now, Instant::now()) {
                round = lanes.begin_round(now).map(|r| self.round_trip(r, now));
            }
            self.start_all(&mut lanes, &done_tx);
            let wait = match (round.is_some(), backoff) {
                (true, _) => Duration::from_secs(3600),
                (false, Some(t)) => t.saturating_duration_since(Instant::now()),
                (false, None) => lanes.wait(now, Instant::now()),
            };
            tokio::select! {
                (r, outcome) = running(round.as_mut()) => {
                    round = None;
                    backoff = match lanes.end_round(r, outcome, Instant::now()) {
                        true => None,
                        false => Some(Instant::now() + STORAGE_BACKOFF),
                    };
                }
                // A commit's new work shows in the slots' backlog marks; the turn claims it.
                _ = self.wiring.wake.notified() => {}
                Some(c) = done_rx.recv() => lanes.finished(c, Instant::now()),
                Some(batch) = self.wiring.handed.recv() => lanes.enqueue(batch),
                Some(command) = self.wiring.control.recv() => lanes.control(command),
                _ = tokio::time::sleep(wait) => {
                    backoff = None;
                    lanes.tick();
                }
                _ = shutdown.cancelled() => {}
            }
        }
        if let Some(pending) = round {
            let (r, outcome) = pending.await;
            lanes.end_round(r, outcome, Instant::now());
        }
        self.start_all(&mut lanes, &done_tx);
        self.drain(done_tx, done_rx, lanes).await;
    }

    /// Sends one planned round trip to the outbox.
    fn round_trip(&self, round: Round, now: i64) -> RoundFuture {
        let outbox = self.wiring.outbox.clone();
        Box::pin(async move {
            let outcome = outbox.cycle(round.results.clone(), round.asked.clone(), now).await;
            (round, outcome)
        })
    }

    /// Starts every attempt the lanes decided on.
    fn start_all(&self, lanes: &mut Lanes, done: &mpsc::UnboundedSender<Completion>) {
        for start in lanes.starts() {
            self.start(start, done);
        }
    }

    /// Starts one attempt, already counted as running; its claim is counted in the slots.
    fn start(&self, start: Start, done: &mpsc::UnboundedSender<Completion>) {
        let shared = self.shared.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let completion = attempt(&shared, &start.route, start.claimed, start.probe).await;
            let _ = done.send(completion);
        });
    }

    /// Lets attempts in flight finish for up to the grace period (a freed slot still starts
    /// a ready delivery, as during the run), records their results and releases the rest.
    async fn drain(
        self,
        done_tx: mpsc::UnboundedSender<Completion>,
        mut done_rx: mpsc::UnboundedReceiver<Completion>,
        mut lanes: Lanes,
    ) {
        let deadline = Instant::now() + self.grace;
        tracing::info!(in_flight = lanes.running(), grace = ?self.grace, "delivery loop stopping");
        while lanes.running() > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(c)) => {
                    lanes.finished(c, Instant::now());
                    self.start_all(&mut lanes, &done_tx);
                }
                _ => break,
            }
        }
        let done = lanes.take_finished();
        if !done.is_empty() {
            if let Err(e) = self.wiring.outbox.cycle(Arc::new(done), Vec::new(), self.shared.clock.now_ms()).await {
                tracing::error!(error = %e, "recording the last results failed; those attempts are made again");
            }
        }
        if let Err(e) = self.wiring.outbox.release_claims().await {
            tracing::error!(error = %e, "releasing claims failed; the next start releases them");
        }
        tracing::info!(abandoned = lanes.running(), "delivery loop stopped");
    }
}
