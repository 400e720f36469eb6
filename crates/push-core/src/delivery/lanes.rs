//! The delivery loop's decisions, without I/O: which claimed deliveries start, when to make
//! an outbox round trip, and how many deliveries each subscriber claims in it. The
//! [`Dispatcher`](super::Dispatcher) only carries them out (spawns attempts, runs the round
//! trip, sleeps), so a test can drive every decision step by step against the real outbox
//! (`model_tests/`).

mod control;

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::time::Instant;

#[cfg(doc)]
use super::claim_capacity;
use super::{
    health::Board,
    lane::{returned, Known, Lane},
    RECORD_BATCH_PER_SLOT, RECORD_DELAY,
};
use crate::{
    clock::{Clock, SystemClock},
    config::BreakerSettings,
    outbox::{ClaimBatch, Claimed, Completion, NextState, StoreError},
    slots::Slots,
    subscribers::{Route, Routes},
};

/// The longest the loop sleeps without an event: a safety net for slots given back without
/// waking it (a failed commit's hand-over); a turn that finds nothing to claim costs nothing.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// An attempt to start.
#[derive(Debug)]
pub struct Start {
    /// The delivery.
    pub claimed: Claimed,
    /// Where it goes.
    pub route: Arc<Route>,
    /// It probes an open breaker: a failure does not advance its retry schedule.
    pub probe: bool,
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
    /// Claims a subscriber without its own limit may hold (see [`claim_capacity`]).
    capacity: usize,
    /// Attempts started and not yet finished, in all.
    running: usize,
    /// Results not yet recorded.
    finished: Vec<Completion>,
    /// When the oldest unrecorded result came in.
    oldest_finished: Option<Instant>,
    /// Attempts to start, taken by [`Lanes::starts`].
    starts: Vec<Start>,
    /// The lane a claim round serves first: the one after the last served (round robin).
    claim_cursor: usize,
    /// The lane the next freed place under the total limit goes to first (round robin).
    pump_cursor: usize,
    /// Breakers of new lanes.
    breaker: BreakerSettings,
    /// Time of breakers and returned claims.
    clock: Arc<dyn Clock>,
    /// Where lanes publish their health, if anyone reads it.
    board: Option<Board>,
}

impl Lanes {
    /// One lane per subscriber of the program, nothing claimed yet; breakers off until
    /// [`Lanes::with_breakers`].
    pub fn new(
        routes: &Routes,
        slots: Arc<Slots>,
        max_in_flight: usize,
        per_subscriber: usize,
        capacity: usize,
    ) -> Self {
        let off = BreakerSettings { failures: 0, ..BreakerSettings::default() };
        let lanes: Vec<Lane> =
            routes.all().iter().map(|r| Lane::new(r.clone(), (per_subscriber, capacity), &off)).collect();
        let index = lanes.iter().enumerate().map(|(i, l)| (l.route.id.clone(), i)).collect();
        for lane in lanes.iter().filter(|l| l.capacity != capacity) {
            slots.set_capacity(&lane.route.id, lane.capacity);
        }
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
            breaker: off,
            clock: Arc::new(SystemClock),
            board: None,
        }
    }

    /// Turns on every lane's breaker, on `clock`'s time, publishing health to `board`.
    pub fn with_breakers(mut self, settings: &BreakerSettings, clock: Arc<dyn Clock>, board: Board) -> Self {
        self.breaker = settings.clone();
        for lane in &mut self.lanes {
            lane.breaker = super::breaker::Breaker::new(settings);
        }
        self.clock = clock;
        self.board = Some(board);
        (0..self.lanes.len()).for_each(|i| self.publish(i));
        self
    }

    /// Attempts started and not yet finished.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The attempts decided since the last call, to be started now (each already counted
    /// as running).
    pub fn starts(&mut self) -> Vec<Start> {
        std::mem::take(&mut self.starts)
    }

    /// Queues deliveries the writer handed over (or a claim returned) and starts what may.
    /// A delivery its lane cannot take (not a subscriber of this program any more, paused,
    /// breaker open) goes back to the database unattempted.
    pub fn enqueue(&mut self, batch: Vec<Claimed>) {
        let now = self.clock.now_ms();
        for claimed in batch {
            match self.index.get(&claimed.subscriber).map(|&i| &mut self.lanes[i]) {
                Some(lane) if lane.open_for_attempts() || (lane.ready.is_empty() && lane.wants_probe(now)) => {
                    lane.ready.push_back(claimed)
                }
                _ => self.give_back_unattempted(claimed, now),
            }
        }
        self.pump_all();
    }

    /// Lets a claim go without an attempt: its slot now, its row with the next record.
    fn give_back_unattempted(&mut self, claimed: Claimed, now: i64) {
        self.slots.give_back(&claimed.subscriber, 1);
        self.oldest_finished.get_or_insert(Instant::now());
        self.finished.push(returned(claimed, now));
    }

    /// An attempt finished: its slot is free, its result waits to be recorded, and its
    /// subscriber's breaker learns of it.
    pub fn finished(&mut self, completion: Completion, at: Instant) {
        self.slots.give_back(&completion.subscriber, 1);
        // Only a freed place under the total limit can let another subscriber go.
        let total_was_full = self.running >= self.max_in_flight;
        self.running -= 1;
        let lane = self.index.get(&completion.subscriber).copied();
        if let Some(i) = lane {
            self.lanes[i].running -= 1;
            self.learn_result(i, &completion);
        }
        match (total_was_full, lane) {
            (false, Some(i)) => drop(self.pump(i)),
            _ => self.pump_all(),
        }
        self.oldest_finished.get_or_insert(at);
        self.finished.push(completion);
    }

    /// Starts ready deliveries of lane `i` while the in-flight limits, its breaker and its
    /// rate limit allow; returns how many.
    fn pump(&mut self, i: usize) -> usize {
        let (now, at) = (self.clock.now_ms(), Instant::now());
        let lane = &mut self.lanes[i];
        let before = self.running;
        while self.running < self.max_in_flight && lane.may_start(now, at) {
            let Some(claimed) = lane.ready.pop_front() else { break };
            let probe = !lane.breaker.is_closed();
            if probe {
                lane.breaker.probe_started();
                lane.probe = Some(claimed.id);
            }
            lane.running += 1;
            self.running += 1;
            self.starts.push(Start { claimed, route: lane.route.clone(), probe });
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

    /// How long the loop may sleep: until a subscriber's next delivery falls due, a probe
    /// or a rate limit's token is due, or the oldest unrecorded result must be recorded, and
    /// at most [`MAX_IDLE`].
    pub fn wait(&self, now: i64, at: Instant) -> Duration {
        let next_due = self
            .lanes
            .iter()
            .filter_map(|lane| match lane.known {
                Known::Until { at: Some(t), .. } if t > now => Some(t),
                _ => None,
            })
            .min();
        let mut due = match next_due {
            Some(due) => Duration::from_millis((due - now) as u64).min(MAX_IDLE),
            None => MAX_IDLE,
        };
        for timer in self.lanes.iter().filter_map(|lane| lane.next_timer(now, at)) {
            due = due.min(timer);
        }
        match self.oldest_finished {
            Some(t) => due.min((t + RECORD_DELAY).saturating_duration_since(at)),
            None => due,
        }
    }

    /// After a sleep: starts what a probe or a rate limit's token now lets go.
    pub fn tick(&mut self) {
        self.pump_all();
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
                for c in results.iter().filter(|c| c.next.finishes()) {
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

    /// How many deliveries lane `i` would claim now: none if it has nothing claimable, is
    /// paused or removed, or while its ready queue holds at least a slot's worth; one for
    /// the probe of an open breaker that is due; otherwise up to its capacity.
    fn wants(&self, i: usize, now: i64) -> usize {
        let lane = &self.lanes[i];
        if !lane.open_for_attempts() {
            let probe = lane.wants_probe(now) && lane.ready.is_empty() && self.claimable(i, now);
            return usize::from(probe);
        }
        if lane.ready.len() >= lane.limit || !self.claimable(i, now) {
            return 0;
        }
        lane.capacity.saturating_sub(lane.running + lane.ready.len())
    }

    /// Lane `i`'s breaker and health take in a finished attempt.
    fn learn_result(&mut self, i: usize, c: &Completion) {
        let now = self.clock.now_ms();
        let lane = &mut self.lanes[i];
        let probe = lane.probe == Some(c.id);
        if probe {
            lane.probe = None;
        }
        let success = c.next == NextState::Delivered;
        let before = lane.breaker.failures();
        let transition = lane.breaker.record(success, probe, now);
        if !success {
            lane.failed += 1;
            lane.last_error = c.error.clone().or_else(|| c.status.map(|s| format!("HTTP {s}")));
        }
        match transition {
            super::breaker::Transition::Opened => self.breaker_opened(i, now),
            super::breaker::Transition::Closed => self.breaker_closed(i),
            super::breaker::Transition::Same if success && before == 0 => return,
            super::breaker::Transition::Same => {}
        }
        self.publish(i);
    }

    /// Lane `i`'s breaker opened: its waiting claims go back, nothing more is handed over.
    fn breaker_opened(&mut self, i: usize, now: i64) {
        let lane = &mut self.lanes[i];
        let (id, failures) = (lane.route.id.clone(), lane.breaker.failures());
        let probe_in_ms = lane.breaker.next_probe().map(|t| t - now);
        tracing::warn!(subscriber = %id, failures, probe_in_ms, last_error = lane.last_error.as_deref().unwrap_or(""),
            "breaker opened: the subscriber is not attempted, except for probes, until one succeeds");
        self.set_aside(i, now);
        self.slots.hold(&id, true);
    }

    /// Lane `i`'s breaker closed: its deliveries go again, claimed from the database.
    fn breaker_closed(&mut self, i: usize) {
        let lane = &mut self.lanes[i];
        tracing::info!(subscriber = %lane.route.id, "breaker closed: delivery resumes");
        lane.known = Known::Maybe;
        if !lane.paused && !lane.removed {
            self.slots.hold(&lane.route.id, false);
        }
    }

    /// Gives lane `i`'s ready queue back to the database unattempted.
    fn set_aside(&mut self, i: usize, now: i64) {
        let back = self.lanes[i].return_ready(now);
        if !back.is_empty() {
            self.slots.give_back(&self.lanes[i].route.id, back.len());
            self.oldest_finished.get_or_insert(Instant::now());
            self.finished.extend(back);
        }
    }

    /// Publishes lane `i`'s health (board and gauge).
    fn publish(&self, i: usize) {
        let lane = &self.lanes[i];
        let health = lane.health();
        lane.route.metrics.state.set(health.state.gauge());
        if let Some(board) = &self.board {
            board.publish(&lane.route.id, health);
        }
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
