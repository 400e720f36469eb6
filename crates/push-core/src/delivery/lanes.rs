//! The delivery loop's decisions, without I/O: which claimed deliveries start, when to make
//! an outbox round trip, and how many deliveries each subscriber claims in it. The
//! [`Dispatcher`](super::Dispatcher) only carries them out (spawns attempts, runs the round
//! trip, sleeps), so a test can drive every decision step by step against the real outbox
//! (`model_tests.rs`).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

#[cfg(doc)]
use super::claim_capacity;
use super::{RECORD_BATCH_PER_SLOT, RECORD_DELAY};
use crate::{
    outbox::{ClaimBatch, Claimed, Completion, NextState},
    slots::Slots,
    subscribers::{Route, Routes},
};

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

/// An outbox round trip as planned: results to record and claims to make, the slots for
/// the claims already taken.
#[derive(Debug)]
pub struct Round {
    /// Finished attempts to record.
    pub results: Arc<Vec<Completion>>,
    /// Deliveries to claim per subscriber.
    pub asked: Vec<(String, usize)>,
}

/// The loop's state between turns.
pub struct Lanes {
    lanes: Vec<Lane>,
    index: HashMap<String, usize>,
    slots: Arc<Slots>,
    max_in_flight: usize,
    per_subscriber: usize,
    /// Claims one subscriber may hold (see [`claim_capacity`]).
    capacity: usize,
    /// Attempts started and not yet finished, in all.
    running: usize,
    /// Results not yet recorded.
    finished: Vec<Completion>,
    /// When the oldest unrecorded result came in.
    oldest_finished: Option<Instant>,
    /// Attempts to start, taken by [`Lanes::starts`].
    starts: Vec<(Claimed, Arc<Route>)>,
    /// Work may be claimable.
    dirty: bool,
    /// When the next claimable delivery falls due.
    next_due: Option<i64>,
}

impl Lanes {
    /// One lane per subscriber of the program, nothing claimed yet.
    pub fn new(
        routes: &Routes,
        slots: Arc<Slots>,
        max_in_flight: usize,
        per_subscriber: usize,
        capacity: usize,
    ) -> Self {
        let lanes: Vec<Lane> =
            routes.all().iter().map(|r| Lane { route: r.clone(), running: 0, ready: VecDeque::new() }).collect();
        let index = lanes.iter().enumerate().map(|(i, l)| (l.route.id.clone(), i)).collect();
        Lanes {
            lanes,
            index,
            slots,
            max_in_flight,
            per_subscriber,
            capacity,
            running: 0,
            finished: Vec::new(),
            oldest_finished: None,
            starts: Vec::new(),
            dirty: true,
            next_due: None,
        }
    }

    /// Attempts started and not yet finished.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The attempts decided since the last call, to be started now (each already counted
    /// as running).
    pub fn starts(&mut self) -> Vec<(Claimed, Arc<Route>)> {
        std::mem::take(&mut self.starts)
    }

    /// New work may be claimable (a commit woke the loop, or a retry fell due).
    pub fn wake(&mut self) {
        self.dirty = true;
    }

    /// Queues deliveries the writer handed over (or a claim returned) and starts what may.
    pub fn enqueue(&mut self, batch: Vec<Claimed>) {
        for claimed in batch {
            match self.index.get(&claimed.subscriber) {
                Some(&i) => self.lanes[i].ready.push_back(claimed),
                // Not a subscriber of this program (any more): its claim is let go.
                None => self.slots.give_back(&claimed.subscriber, 1),
            }
        }
        self.pump_all();
    }

    /// An attempt finished: its slot is free, its result waits to be recorded.
    pub fn finished(&mut self, completion: Completion, at: Instant) {
        self.slots.give_back(&completion.subscriber, 1);
        // Only a freed place under the total limit can let another subscriber go.
        let total_was_full = self.running >= self.max_in_flight;
        self.running -= 1;
        let lane = self.index.get(&completion.subscriber).copied();
        if let Some(i) = lane {
            self.lanes[i].running -= 1;
        }
        match (total_was_full, lane) {
            (false, Some(i)) => self.pump(i),
            _ => self.pump_all(),
        }
        self.oldest_finished.get_or_insert(at);
        self.finished.push(completion);
    }

    /// Starts ready deliveries of lane `i` while the in-flight limits allow.
    fn pump(&mut self, i: usize) {
        let lane = &mut self.lanes[i];
        while self.running < self.max_in_flight && lane.running < self.per_subscriber {
            let Some(claimed) = lane.ready.pop_front() else { break };
            lane.running += 1;
            self.running += 1;
            self.starts.push((claimed, lane.route.clone()));
        }
    }

    /// Pumps every lane: a freed attempt may let another subscriber go under the total limit.
    fn pump_all(&mut self) {
        for i in 0..self.lanes.len() {
            self.pump(i);
        }
    }

    /// Whether to make an outbox round trip now: to claim, when work may be claimable and a
    /// subscriber's ready queue has run low; to record results, once
    /// [`RECORD_BATCH_PER_SLOT`] slots' worth have finished, or nothing runs any more, or the
    /// oldest has waited [`RECORD_DELAY`]. Batching both keeps the writer's transactions few
    /// and large: each commit writes the pages it touched once, however many results they
    /// hold (BENCHMARKS.md has the A/B of 5, 10, 20 and 40 ms).
    pub fn round_due(&self, _now: i64, at: Instant) -> bool {
        let claim = self.dirty && self.lanes.iter().any(|lane| self.room(lane) > 0);
        let record = !self.finished.is_empty()
            && (self.finished.len() >= self.per_subscriber * RECORD_BATCH_PER_SLOT
                || self.running == 0
                || self.oldest_finished.is_some_and(|t| at.duration_since(t) >= RECORD_DELAY));
        claim || record
    }

    /// How long the loop may sleep: until the next due retry, or until the oldest
    /// unrecorded result must be recorded.
    pub fn wait(&self, now: i64, at: Instant) -> Duration {
        let due = match self.next_due {
            Some(due) => Duration::from_millis((due - now).clamp(0, 3_600_000) as u64),
            None => Duration::from_secs(3600),
        };
        match self.oldest_finished {
            Some(t) => due.min((t + RECORD_DELAY).saturating_duration_since(at)),
            None => due,
        }
    }

    /// Plans one outbox round trip: record finished attempts, claim what fits (taking the
    /// slots for it first). `None` when there is nothing to do.
    pub fn begin_round(&mut self, _now: i64) -> Option<Round> {
        let asked: Vec<(String, usize)> = self
            .lanes
            .iter()
            .map(|lane| (lane.route.id.clone(), self.room(lane)))
            .filter(|(_, n)| *n > 0)
            .map(|(subscriber, n)| {
                let got = self.slots.take(&subscriber, n);
                (subscriber, got)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        if self.finished.is_empty() && asked.is_empty() {
            return None;
        }
        // A round trip that claims nothing leaves `dirty` for when a queue runs low.
        self.dirty &= asked.is_empty();
        self.oldest_finished = None;
        Some(Round { results: Arc::new(std::mem::take(&mut self.finished)), asked })
    }

    /// Takes a round trip's answer: claimed deliveries join the ready queues, slots asked
    /// for and not filled go back. On an error the results are kept for the next round
    /// (`false`).
    pub fn end_round(&mut self, round: Round, outcome: anyhow::Result<ClaimBatch>, at: Instant) -> bool {
        let Round { results, asked } = round;
        let total: usize = asked.iter().map(|(_, n)| n).sum();
        match outcome {
            Ok(batch) => {
                self.give_back_unclaimed(&asked, &batch.items);
                for c in results.iter().filter(|c| !matches!(c.next, NextState::RetryAt(_))) {
                    if let Some(&i) = self.index.get(&c.subscriber) {
                        self.lanes[i].route.metrics.queue_depth.decrement(1.0);
                    }
                }
                let filled = total > 0 && batch.items.len() >= total;
                if total > 0 {
                    self.next_due = batch.next_due;
                }
                self.enqueue(batch.items);
                self.dirty |= filled || !results.is_empty();
                true
            }
            Err(e) => {
                self.give_back_unclaimed(&asked, &[]);
                tracing::error!(error = %e, "recording results / claiming work failed; will retry");
                let mut kept = Arc::try_unwrap(results).unwrap_or_else(|shared| (*shared).clone());
                kept.append(&mut self.finished);
                self.finished = kept;
                self.oldest_finished.get_or_insert(at);
                false
            }
        }
    }

    /// Results not recorded yet, for the last round trip at shutdown.
    pub fn take_finished(&mut self) -> Vec<Completion> {
        self.oldest_finished = None;
        std::mem::take(&mut self.finished)
    }

    /// Gives back the slots taken for a claim that came back with fewer deliveries.
    fn give_back_unclaimed(&self, asked: &[(String, usize)], claimed: &[Claimed]) {
        for (subscriber, n) in asked {
            let got = claimed.iter().filter(|c| &c.subscriber == subscriber).count();
            self.slots.give_back(subscriber, n.saturating_sub(got));
        }
    }

    /// How many deliveries one subscriber would claim now: none while its ready queue holds
    /// at least a slot's worth; otherwise up to its [`claim_capacity`].
    fn room(&self, lane: &Lane) -> usize {
        if lane.ready.len() >= self.per_subscriber {
            return 0;
        }
        self.capacity.saturating_sub(lane.running + lane.ready.len())
    }
}

#[cfg(test)]
impl Lanes {
    /// (attempts in flight, event ids of the ready queue) of `subscriber`.
    pub(super) fn held(&self, subscriber: &str) -> (usize, Vec<String>) {
        let lane = &self.lanes[self.index[subscriber]];
        (lane.running, lane.ready.iter().map(|c| c.event_id.clone()).collect())
    }
}
