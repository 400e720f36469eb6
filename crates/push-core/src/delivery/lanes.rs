//! The delivery loop's decisions, without I/O: which claimed deliveries start, when to make
//! an outbox round trip, and how many deliveries each subscriber claims in it. The
//! [`Dispatcher`](super::Dispatcher) only carries them out (spawns attempts, runs the round
//! trip, sleeps), so a test can drive every decision step by step against the real outbox
//! (`model_tests/`).

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
    outbox::{ClaimBatch, Claimed, Completion, NextState, StoreError},
    slots::Slots,
    subscribers::{Route, Routes},
};

/// The longest the loop sleeps without an event: a safety net for slots given back without
/// waking it (a failed commit's hand-over); a turn that finds nothing to claim costs nothing.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// One subscriber's share of the loop.
struct Lane {
    /// Where its attempts go.
    route: Arc<Route>,
    /// Its attempts started and not yet finished.
    running: usize,
    /// Its claimed deliveries waiting for an attempt to finish, so a freed attempt starts
    /// the next one at once, without a round trip to the database.
    ready: VecDeque<Claimed>,
    /// What its last claim said about its claimable work in the database.
    known: Known,
    /// Its backlog marks when its claim under way was planned.
    asking_marks: u64,
}

/// What the loop knows of one subscriber's claimable deliveries in the database.
#[derive(Debug, Clone, Copy)]
enum Known {
    /// Some may be due now: at start, and after a claim that was filled.
    Maybe,
    /// Its last claim, planned when the subscriber's backlog marks (see [`Slots::marks`])
    /// stood at `marks`, took everything due; the rest falls due at `at` (never: `None`).
    /// A new mark since (a retry recorded, a status let go, a delivery stored without a
    /// hand-over, a redelivery) makes it [`Known::Maybe`] again.
    Until { at: Option<i64>, marks: u64 },
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
    /// The lane a claim round serves first: the one after the last served (round robin).
    claim_cursor: usize,
    /// The lane the next freed place under the total limit goes to first (round robin).
    pump_cursor: usize,
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
        let lane = |r: &Arc<Route>| Lane {
            route: r.clone(),
            running: 0,
            ready: VecDeque::new(),
            known: Known::Maybe,
            asking_marks: 0,
        };
        let lanes: Vec<Lane> = routes.all().iter().map(lane).collect();
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
            claim_cursor: 0,
            pump_cursor: 0,
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
            (false, Some(i)) => drop(self.pump(i)),
            _ => self.pump_all(),
        }
        self.oldest_finished.get_or_insert(at);
        self.finished.push(completion);
    }

    /// Starts ready deliveries of lane `i` while the in-flight limits allow; returns how many.
    fn pump(&mut self, i: usize) -> usize {
        let lane = &mut self.lanes[i];
        let before = self.running;
        while self.running < self.max_in_flight && lane.running < self.per_subscriber {
            let Some(claimed) = lane.ready.pop_front() else { break };
            lane.running += 1;
            self.running += 1;
            self.starts.push((claimed, lane.route.clone()));
        }
        self.running - before
    }

    /// Pumps every lane, from the one after the last that started something: places freed
    /// under the total limit go round the subscribers instead of to the first ones listed.
    fn pump_all(&mut self) {
        let (n, first) = (self.lanes.len(), self.pump_cursor);
        for k in 0..n {
            if self.running >= self.max_in_flight {
                break;
            }
            let i = (first + k) % n;
            if self.pump(i) > 0 {
                self.pump_cursor = (i + 1) % n;
            }
        }
    }

    /// Whether to make an outbox round trip now: to claim, when a subscriber may have
    /// claimable work, its ready queue has run low and a slot is free; to record results, once
    /// [`RECORD_BATCH_PER_SLOT`] slots' worth have finished, or nothing runs any more, or the
    /// oldest has waited [`RECORD_DELAY`]. Batching both keeps the writer's transactions few
    /// and large: each commit writes the pages it touched once, however many results they
    /// hold (BENCHMARKS.md has the A/B of 5, 10, 20 and 40 ms).
    pub fn round_due(&self, now: i64, at: Instant) -> bool {
        let claim = self.slots.free_total() > 0 && (0..self.lanes.len()).any(|i| self.wants(i, now) > 0);
        let record = !self.finished.is_empty()
            && (self.finished.len() >= self.per_subscriber * RECORD_BATCH_PER_SLOT
                || self.running == 0
                || self.oldest_finished.is_some_and(|t| at.duration_since(t) >= RECORD_DELAY));
        claim || record
    }

    /// How long the loop may sleep: until a subscriber's next delivery falls due, or until
    /// the oldest unrecorded result must be recorded, and at most [`MAX_IDLE`].
    pub fn wait(&self, now: i64, at: Instant) -> Duration {
        let next_due = self
            .lanes
            .iter()
            .filter_map(|lane| match lane.known {
                Known::Until { at: Some(t), .. } if t > now => Some(t),
                _ => None,
            })
            .min();
        let due = match next_due {
            Some(due) => Duration::from_millis((due - now) as u64).min(MAX_IDLE),
            None => MAX_IDLE,
        };
        match self.oldest_finished {
            Some(t) => due.min((t + RECORD_DELAY).saturating_duration_since(at)),
            None => due,
        }
    }

    /// Plans one outbox round trip: record finished attempts, and claim for the subscribers
    /// that want work, taking the slots for it first. The free total is shared: every
    /// subscriber that wants work gets up to an equal share, starting with the one after the
    /// last served (so when the total cannot give each one a slot, the next round trip
    /// serves the next ones), then what the shares left goes to those that want more.
    /// `None` when there is nothing to do.
    pub fn begin_round(&mut self, now: i64) -> Option<Round> {
        let n = self.lanes.len();
        let wanting: Vec<(usize, usize)> = (0..n)
            .map(|k| (self.claim_cursor + k) % n)
            .filter_map(|i| Some((i, self.wants(i, now))).filter(|(_, w)| *w > 0))
            .collect();
        let mut asked: Vec<(usize, usize, usize)> = Vec::new();
        let free = self.slots.free_total();
        if !wanting.is_empty() && free > 0 {
            let share = free.div_ceil(wanting.len());
            for &(i, want) in &wanting {
                if self.slots.free_total() == 0 {
                    break;
                }
                let got = self.slots.take(&self.lanes[i].route.id, want.min(share));
                if got > 0 {
                    asked.push((i, want, got));
                }
            }
            if let Some(&(last, _, _)) = asked.last() {
                self.claim_cursor = (last + 1) % n;
            }
            for (i, want, got) in asked.iter_mut() {
                *got += self.slots.take(&self.lanes[*i].route.id, *want - *got);
            }
        }
        if self.finished.is_empty() && asked.is_empty() {
            return None;
        }
        for &(i, _, _) in &asked {
            self.lanes[i].asking_marks = self.slots.marks(&self.lanes[i].route.id);
        }
        self.oldest_finished = None;
        let asked = asked.into_iter().map(|(i, _, got)| (self.lanes[i].route.id.clone(), got)).collect();
        Some(Round { results: Arc::new(std::mem::take(&mut self.finished)), asked })
    }

    /// Takes a round trip's answer: claimed deliveries join the ready queues, slots asked
    /// for and not filled go back. On an error the results are kept for the next round
    /// (`false`).
    pub fn end_round(&mut self, round: Round, outcome: Result<ClaimBatch, StoreError>, at: Instant) -> bool {
        let Round { results, asked } = round;
        match outcome {
            Ok(batch) => {
                self.give_back_unclaimed(&asked, &batch.items);
                self.learn(&asked, &batch.unfilled);
                for c in results.iter().filter(|c| !matches!(c.next, NextState::RetryAt(_))) {
                    if let Some(&i) = self.index.get(&c.subscriber) {
                        self.lanes[i].route.metrics.queue_depth.decrement(1.0);
                    }
                }
                self.enqueue(batch.items);
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

    /// Gives back at once the slots taken for a claim that came back with fewer deliveries.
    fn give_back_unclaimed(&self, asked: &[(String, usize)], claimed: &[Claimed]) {
        let mut got: HashMap<&str, usize> = HashMap::with_capacity(asked.len());
        for c in claimed {
            *got.entry(c.subscriber.as_str()).or_default() += 1;
        }
        for (subscriber, n) in asked {
            self.slots.give_back(subscriber, n.saturating_sub(got.get(subscriber.as_str()).copied().unwrap_or(0)));
        }
    }

    /// Takes in what a claim said about each asked subscriber's work in the database.
    fn learn(&mut self, asked: &[(String, usize)], unfilled: &[(String, Option<i64>)]) {
        for (subscriber, _) in asked {
            if let Some(&i) = self.index.get(subscriber) {
                self.lanes[i].known = Known::Maybe;
            }
        }
        for (subscriber, at) in unfilled {
            if let Some(&i) = self.index.get(subscriber) {
                let lane = &mut self.lanes[i];
                lane.known = Known::Until { at: *at, marks: lane.asking_marks };
            }
        }
    }

    /// Whether lane `i` may have claimable work in the database now.
    fn claimable(&self, i: usize, now: i64) -> bool {
        // One lookup of the subscriber's slots per lane and turn.
        let Some(now_marks) = self.slots.backlog_marks(&self.lanes[i].route.id) else { return false };
        match self.lanes[i].known {
            Known::Maybe => true,
            Known::Until { at, marks } => now_marks != marks || at.is_some_and(|t| t <= now),
        }
    }

    /// How many deliveries lane `i` would claim now: none if it has nothing claimable, or
    /// while its ready queue holds at least a slot's worth; otherwise up to its
    /// [`claim_capacity`].
    fn wants(&self, i: usize, now: i64) -> usize {
        let lane = &self.lanes[i];
        if lane.ready.len() >= self.per_subscriber || !self.claimable(i, now) {
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
