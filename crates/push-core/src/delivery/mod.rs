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
mod webhook;

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::{mpsc, Notify},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use self::attempt::{attempt, Shared};
pub use self::webhook::{Sent, WebhookClient};
use crate::{
    clock::Clock,
    config::Settings,
    outbox::{Claimed, Completion, NextState, Outbox},
    retry::RetryPolicy,
    slots::Slots,
    subscribers::{Route, Routes},
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
    pub outbox: Outbox,
    /// Notified after commits that may have made work claimable.
    pub wake: Arc<Notify>,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Free attempt slots, shared with the writer's hand-over.
    pub slots: Arc<Slots>,
    /// Deliveries the writer handed over (their claims already counted in the slots).
    pub handed: mpsc::UnboundedReceiver<Vec<Claimed>>,
}

/// The delivery loop of one program.
pub struct Dispatcher {
    wiring: Wiring,
    shared: Arc<Shared>,
    per_subscriber: usize,
    max_in_flight: usize,
    grace: Duration,
}

/// An outbox round trip under way.
type CycleFuture = std::pin::Pin<Box<dyn std::future::Future<Output = CycleOutput> + Send>>;

/// What a round trip came back with.
struct CycleOutput {
    results: Arc<Vec<Completion>>,
    asked: Vec<(String, usize)>,
    outcome: anyhow::Result<crate::outbox::ClaimBatch>,
}

/// Awaits the round trip under way, if any (never completes otherwise).
async fn running(cycle: Option<&mut CycleFuture>) -> CycleOutput {
    match cycle {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// One subscriber's share of the loop.
struct Lane {
    /// Where its attempts go.
    route: Arc<Route>,
    /// Its attempts started and not yet finished.
    running: usize,
    /// Its claimed deliveries waiting for an attempt to finish, so a freed attempt starts
    /// the next one at once, without a round trip to the database.
    ready: VecDeque<Claimed>,
}

/// The loop's state between turns.
struct Turn {
    /// Results not yet recorded.
    finished: Vec<Completion>,
    /// Attempts started and not yet finished, in all.
    running: usize,
    /// Per subscriber of the program (one entry each, made at start).
    lanes: HashMap<String, Lane>,
    /// When the next claimable delivery falls due.
    next_due: Option<i64>,
    /// When the oldest unrecorded result came in.
    oldest_finished: Option<Instant>,
    done_tx: mpsc::UnboundedSender<Completion>,
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
        })
    }

    /// Runs until `shutdown`, then lets in-flight attempts finish for up to the grace period
    /// and releases whatever is left for the next start. The outbox round trip of a turn
    /// runs alongside everything else: finished attempts free their slots and start ready
    /// deliveries while it is under way.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let mut turn = Turn {
            finished: Vec::new(),
            running: 0,
            lanes: self
                .wiring
                .routes
                .all()
                .iter()
                .map(|r| (r.id.clone(), Lane { route: r.clone(), running: 0, ready: VecDeque::new() }))
                .collect(),
            next_due: None,
            oldest_finished: None,
            done_tx,
        };
        let mut cycle: Option<CycleFuture> = None;
        let mut dirty = true;
        let mut backoff: Option<Instant> = None;
        while !shutdown.is_cancelled() {
            if cycle.is_none() && backoff.is_none_or(|t| Instant::now() >= t) && self.cycle_due(&turn, dirty) {
                if let Some((next, claiming)) = self.begin_cycle(&mut turn) {
                    cycle = Some(next);
                    // A round trip that claims nothing leaves `dirty` for when a queue runs low.
                    dirty &= !claiming;
                }
            }
            let wait = match (cycle.is_some(), backoff) {
                (true, _) => Duration::from_secs(3600),
                (false, Some(t)) => t.saturating_duration_since(Instant::now()),
                (false, None) => self.until(&turn),
            };
            tokio::select! {
                out = running(cycle.as_mut()) => {
                    cycle = None;
                    match self.end_cycle(&mut turn, out) {
                        Some(more) => (backoff, dirty) = (None, dirty || more),
                        None => backoff = Some(Instant::now() + STORAGE_BACKOFF),
                    }
                }
                _ = self.wiring.wake.notified() => dirty = true,
                Some(c) = done_rx.recv() => self.finished(&mut turn, c),
                Some(batch) = self.wiring.handed.recv() => self.enqueue(batch, &mut turn),
                _ = tokio::time::sleep(wait) => (dirty, backoff) = (true, None),
                _ = shutdown.cancelled() => {}
            }
        }
        if let Some(pending) = cycle {
            let out = pending.await;
            self.end_cycle(&mut turn, out);
        }
        self.drain(done_rx, turn).await;
    }

    fn finished(&self, turn: &mut Turn, completion: Completion) {
        self.wiring.slots.give_back(&completion.subscriber, 1);
        // Only a freed place under the total limit can let another subscriber go.
        let total_was_full = turn.running >= self.max_in_flight;
        turn.running -= 1;
        if let Some(lane) = turn.lanes.get_mut(&completion.subscriber) {
            lane.running -= 1;
        }
        if total_was_full {
            self.pump_all(turn);
        } else {
            self.pump(&completion.subscriber, turn);
        }
        turn.oldest_finished.get_or_insert_with(Instant::now);
        turn.finished.push(completion);
    }

    /// Queues deliveries the writer handed over and starts what may start.
    fn enqueue(&self, batch: Vec<Claimed>, turn: &mut Turn) {
        for claimed in batch {
            match turn.lanes.get_mut(&claimed.subscriber) {
                Some(lane) => lane.ready.push_back(claimed),
                // Not a subscriber of this program (any more): its claim is let go.
                None => self.wiring.slots.give_back(&claimed.subscriber, 1),
            }
        }
        self.pump_all(turn);
    }

    /// Starts ready deliveries of `subscriber` while the in-flight limits allow.
    fn pump(&self, subscriber: &str, turn: &mut Turn) {
        let Some(lane) = turn.lanes.get_mut(subscriber) else { return };
        while turn.running < self.max_in_flight && lane.running < self.per_subscriber {
            let Some(claimed) = lane.ready.pop_front() else { break };
            lane.running += 1;
            turn.running += 1;
            self.start(claimed, lane.route.clone(), &turn.done_tx);
        }
    }

    /// Pumps every subscriber: a freed attempt may let another one go under the total limit.
    fn pump_all(&self, turn: &mut Turn) {
        for route in self.wiring.routes.all() {
            self.pump(&route.id, turn);
        }
    }

    /// Whether to make an outbox round trip now: to claim, when work may be claimable
    /// (`dirty`) and a subscriber's ready queue has run low; to record results, once
    /// [`RECORD_BATCH_PER_SLOT`] slots' worth have finished, or nothing runs any more, or the
    /// oldest has waited [`RECORD_DELAY`]. Batching both keeps the writer's transactions few
    /// and large: each commit writes the pages it touched once, however many results they
    /// hold (BENCHMARKS.md has the A/B of 5, 10, 20 and 40 ms).
    fn cycle_due(&self, turn: &Turn, dirty: bool) -> bool {
        let claim = dirty && turn.lanes.values().any(|lane| self.room(lane) > 0);
        let record = !turn.finished.is_empty()
            && (turn.finished.len() >= self.per_subscriber * RECORD_BATCH_PER_SLOT
                || turn.running == 0
                || turn.oldest_finished.is_some_and(|t| t.elapsed() >= RECORD_DELAY));
        claim || record
    }

    /// How long the loop may sleep: until the next due retry, or until the oldest
    /// unrecorded result must be recorded.
    fn until(&self, turn: &Turn) -> Duration {
        let due = match turn.next_due {
            Some(due) => Duration::from_millis((due - self.shared.clock.now_ms()).clamp(0, 3_600_000) as u64),
            None => Duration::from_secs(3600),
        };
        match turn.oldest_finished {
            Some(t) => due.min((t + RECORD_DELAY).saturating_duration_since(Instant::now())),
            None => due,
        }
    }

    /// Starts one outbox round trip: record finished attempts, claim what fits (taking the
    /// slots for it first). `None` when there is nothing to do; else whether it claims.
    fn begin_cycle(&self, turn: &mut Turn) -> Option<(CycleFuture, bool)> {
        let wants: Vec<(String, usize)> = self
            .wants(turn)
            .into_iter()
            .map(|(subscriber, n)| {
                let got = self.wiring.slots.take(&subscriber, n);
                (subscriber, got)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        if turn.finished.is_empty() && wants.is_empty() {
            return None;
        }
        let claiming = !wants.is_empty();
        let results = Arc::new(std::mem::take(&mut turn.finished));
        turn.oldest_finished = None;
        let asked = wants.clone();
        let outbox = self.wiring.outbox.clone();
        let now = self.shared.clock.now_ms();
        let future: CycleFuture = Box::pin(async move {
            let outcome = outbox.cycle(results.clone(), wants, now).await;
            CycleOutput { results, asked, outcome }
        });
        Some((future, claiming))
    }

    /// Gives back the slots taken for a claim that came back with fewer deliveries.
    fn give_back_unclaimed(&self, asked: &[(String, usize)], claimed: &[Claimed]) {
        for (subscriber, n) in asked {
            let got = claimed.iter().filter(|c| &c.subscriber == subscriber).count();
            self.wiring.slots.give_back(subscriber, n.saturating_sub(got));
        }
    }

    /// Takes a round trip's answer: claimed deliveries join the ready queues. Returns whether
    /// more may be claimable at once (the claim was filled), or `None` if the outbox failed
    /// (the results are kept for the next turn).
    fn end_cycle(&self, turn: &mut Turn, out: CycleOutput) -> Option<bool> {
        let CycleOutput { results, asked, outcome } = out;
        let total: usize = asked.iter().map(|(_, n)| n).sum();
        match outcome {
            Ok(batch) => {
                self.give_back_unclaimed(&asked, &batch.items);
                for c in results.iter().filter(|c| !matches!(c.next, NextState::RetryAt(_))) {
                    self.wiring.routes.queue_depth_add(&c.subscriber, -1.0);
                }
                let filled = total > 0 && batch.items.len() >= total;
                if total > 0 {
                    turn.next_due = batch.next_due;
                }
                self.enqueue(batch.items, turn);
                Some(filled || !results.is_empty())
            }
            Err(e) => {
                self.give_back_unclaimed(&asked, &[]);
                tracing::error!(error = %e, "recording results / claiming work failed; will retry");
                let mut kept = Arc::try_unwrap(results).unwrap_or_else(|shared| (*shared).clone());
                kept.append(&mut turn.finished);
                turn.finished = kept;
                turn.oldest_finished.get_or_insert_with(Instant::now);
                None
            }
        }
    }

    /// How many deliveries to claim per subscriber: none while its ready queue holds at
    /// least a slot's worth; otherwise up to its [`claim_capacity`].
    fn wants(&self, turn: &Turn) -> Vec<(String, usize)> {
        turn.lanes.iter().map(|(id, lane)| (id.clone(), self.room(lane))).filter(|(_, n)| *n > 0).collect()
    }

    /// How many deliveries one subscriber would claim now (see [`Dispatcher::wants`]).
    fn room(&self, lane: &Lane) -> usize {
        if lane.ready.len() >= self.per_subscriber {
            return 0;
        }
        claim_capacity(self.per_subscriber).saturating_sub(lane.running + lane.ready.len())
    }

    /// Starts one attempt, already counted as running; its claim is counted in the slots.
    fn start(&self, claimed: Claimed, route: Arc<Route>, done: &mpsc::UnboundedSender<Completion>) {
        let shared = self.shared.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let completion = attempt(&shared, &route, claimed).await;
            let _ = done.send(completion);
        });
    }

    async fn drain(self, mut done_rx: mpsc::UnboundedReceiver<Completion>, mut turn: Turn) {
        let deadline = Instant::now() + self.grace;
        tracing::info!(in_flight = turn.running, grace = ?self.grace, "delivery loop stopping");
        while turn.running > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(c)) => self.finished(&mut turn, c),
                _ => break,
            }
        }
        if !turn.finished.is_empty() {
            let done = Arc::new(std::mem::take(&mut turn.finished));
            if let Err(e) = self.wiring.outbox.cycle(done, Vec::new(), self.shared.clock.now_ms()).await {
                tracing::error!(error = %e, "recording the last results failed; those attempts are made again");
            }
        }
        if let Err(e) = self.wiring.outbox.release_claims().await {
            tracing::error!(error = %e, "releasing claims failed; the next start releases them");
        }
        tracing::info!(abandoned = turn.running, "delivery loop stopped");
    }
}
