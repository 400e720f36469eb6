//! A randomized model test of the delivery loop's decisions ([`Lanes`]) and the [`Slots`],
//! on the real outbox (a SQLite file in a temporary directory, the real writer and syncer).
//! Each case draws subscribers, limits and a claim batch, then random steps: arrivals of
//! call statuses, attempts finishing (delivered, retry later, dead), time passing, and
//! restarts. After every step, with the loop settled as the real one would (every round trip
//! it finds due is made), it checks against a simple reference model of every delivery:
//! - slots are never leaked: each subscriber's used slots are exactly its claims in memory;
//! - the limits are never exceeded (in flight per subscriber and in all, claims held);
//! - an attempt is only started for a due delivery that heads its call's chain, with no
//!   other status of that call in flight to that subscriber (per-call order);
//! - no subscriber with room of its own (fewer claims in memory than its in-flight limit) and
//!   due, unblocked, unclaimed work is left unasked while the total limit has a free slot,
//!   nor for more claim round trips than there are subscribers (the fairness bound of
//!   ARCHITECTURE.md);
//! - a claimed delivery waiting for the total in-flight limit waits for at most one turn of
//!   every other subscriber (`max_in_flight_per_subscriber` starts each);
//! - in the end, every delivery is delivered or dead, in the model and in the database.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::{sync::mpsc, time::Instant};

use self::model::{Model, State};
use super::lanes::Lanes;
use crate::{
    config::{Service, Subscriber},
    outbox::{Claimed, Completion, IngestItem, IngestOutcome, NextState, Store},
    schema,
    slots::Slots,
    subscribers::Routes,
};

mod model;

const STATUSES: [&str; 4] = ["DIALING", "RINGING", "ANSWERED", "HANGUP"];
/// Deliveries a case stores at most (arrivals stop there), so that a case with one attempt
/// in flight at a time still ends in a few thousand steps.
const MAX_DELIVERIES: usize = 2_000;

/// One case: its parameters, the program under test and the model.
struct Case {
    seed: u64,
    rng: StdRng,
    dir: tempfile::TempDir,
    subscribers: Vec<String>,
    max_in_flight: usize,
    per_subscriber: usize,
    capacity: usize,
    now: i64,
    base: Instant,
    node: Option<Node>,
    /// Attempts in flight (started by the lanes, not finished yet).
    running: Vec<Claimed>,
    /// Delivery row id → model key, learnt from claims.
    ids: HashMap<i64, (String, String)>,
    model: Model,
    /// Calls not hung up yet, with the sequence of their next status.
    open_calls: Vec<(String, usize)>,
    calls: usize,
    /// Per subscriber: claim round trips it has waited through with room and due work.
    starving: HashMap<String, usize>,
    /// Per subscriber: attempts of others started while its ready work waited.
    overtaken: HashMap<String, usize>,
}

/// The program under test: the outbox with its writer, the slots and the lanes.
struct Node {
    outbox: Arc<dyn Store>,
    task: tokio::task::JoinHandle<()>,
    slots: Arc<Slots>,
    handed: mpsc::UnboundedReceiver<Vec<Claimed>>,
    lanes: Lanes,
}

impl Case {
    async fn new(seed: u64) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = [1, 2, 3, 5, 10, 40][rng.random_range(0..6)];
        let max_in_flight = [1, 2, 4, 16, 256][rng.random_range(0..5)];
        let per_subscriber = [1, 2, 4, 32][rng.random_range(0..4)];
        let batch = [1, 2, 8, 256][rng.random_range(0..4)];
        let mut case = Case {
            seed,
            rng,
            dir: tempfile::tempdir().unwrap(),
            subscribers: (0..n).map(|i| format!("s{i}")).collect(),
            max_in_flight,
            per_subscriber,
            capacity: per_subscriber + batch.max(per_subscriber),
            now: 1_701_388_800_000,
            base: Instant::now(),
            node: None,
            running: Vec::new(),
            ids: HashMap::new(),
            model: Model::default(),
            open_calls: Vec::new(),
            calls: 0,
            starving: HashMap::new(),
            overtaken: HashMap::new(),
        };
        case.start().await;
        case
    }

    fn describe(&self) -> String {
        format!(
            "seed {}: {} subscribers, max_in_flight {}, per subscriber {}, claim capacity {}",
            self.seed,
            self.subscribers.len(),
            self.max_in_flight,
            self.per_subscriber,
            self.capacity
        )
    }

    fn at(&self) -> Instant {
        self.base + Duration::from_millis((self.now - 1_701_388_800_000) as u64)
    }

    fn node(&mut self) -> &mut Node {
        self.node.as_mut().expect("running")
    }

    /// Starts the program on the case's database (a restart if it ran before).
    async fn start(&mut self) {
        let subscribers: Vec<Subscriber> =
            self.subscribers.iter().map(|id| crate::testing::subscriber(id, "http://127.0.0.1:9")).collect();
        let routes = Routes::new(&subscribers, Service::Status);
        let total = self.max_in_flight + self.capacity - self.per_subscriber;
        let slots = Arc::new(Slots::new(total, self.capacity, self.subscribers.iter().map(String::as_str)));
        let url = format!("sqlite://{}", self.dir.path().join("status.db").display());
        let opened = crate::outbox::open(&url, Service::Status, slots.clone()).await.expect("outbox");
        let (outbox, handed, task) = (opened.store, opened.handed, opened.task);
        let lanes = Lanes::new(&routes, slots.clone(), self.max_in_flight, self.per_subscriber, self.capacity);
        self.node = Some(Node { outbox, task, slots, handed, lanes });
    }

    /// Stops the program as a crash would: claims in memory and unrecorded results are lost.
    async fn restart(&mut self) {
        let node = self.node.take().expect("running");
        node.outbox.close().await;
        drop(node.lanes);
        drop(node.handed);
        drop(node.outbox);
        node.task.await.unwrap();
        for (_, _, state) in self.model.deliveries.values_mut() {
            if let State::Finishing(due, _) = *state {
                *state = State::Pending(due);
            }
        }
        self.running.clear();
        // A new program starts its own turns.
        self.starving.clear();
        self.overtaken.clear();
        self.start().await;
    }

    /// Statuses of new and open calls arrive, in one request.
    async fn arrive(&mut self) {
        if self.model.deliveries.len() >= MAX_DELIVERIES {
            return;
        }
        let (mut events, mut seqs) = (Vec::new(), Vec::new());
        for _ in 0..self.rng.random_range(1..=8) {
            if self.open_calls.is_empty() || self.rng.random_bool(0.3) {
                self.calls += 1;
                self.open_calls.push((format!("call-{}", self.calls), 0));
            }
            let i = self.rng.random_range(0..self.open_calls.len());
            let (call, next) = self.open_calls[i].clone();
            events.push(serde_json::json!({"callId": call, "serviceType": 100, "status": STATUSES[next],
                                           "timestamp": 1_701_388_800_000_i64 + next as i64}));
            seqs.push(next);
            match next {
                3 => drop(self.open_calls.swap_remove(i)),
                _ => self.open_calls[i].1 += 1,
            }
        }
        let valid = schema::validate_body(Service::Status, &serde_json::Value::Array(events)).expect("valid");
        let items: Vec<IngestItem> = valid
            .into_iter()
            .map(|e| IngestItem {
                event_id: uuid::Uuid::now_v7().to_string(),
                subscribers: self.subscribers.clone(),
                event: e.into_stored(),
            })
            .collect();
        let now = self.now;
        let outcome = self.node().outbox.ingest(items.clone(), now).await.expect("ingest");
        assert!(matches!(outcome, IngestOutcome::Accepted { .. }), "{outcome:?}");
        for (item, seq) in items.into_iter().zip(seqs) {
            for sub in &self.subscribers {
                self.model.add((item.event_id.clone(), sub.clone()), item.event.call_id.clone(), seq, now);
            }
        }
        while let Ok(batch) = self.node().handed.try_recv() {
            self.node().lanes.enqueue(batch);
        }
    }

    /// Some attempts in flight finish with a random result.
    fn finish_some(&mut self, all: bool) {
        let mut i = 0;
        while i < self.running.len() {
            if !all && self.rng.random_bool(0.5) {
                i += 1;
                continue;
            }
            let c = self.running.swap_remove(i);
            let roll = self.rng.random_range(0..100);
            let next = match roll {
                _ if all || roll < 70 => NextState::Delivered,
                70..95 => NextState::RetryAt(self.now + self.rng.random_range(0..300)),
                _ => NextState::Dead,
            };
            let key = self.ids[&c.id].clone();
            let entry = self.model.deliveries.get_mut(&key).unwrap();
            let State::Pending(due) = entry.2 else { panic!("{key:?} finished while {:?}", entry.2) };
            entry.2 = State::Finishing(due, next);
            let completion = Completion {
                id: c.id,
                subscriber: c.subscriber,
                call_id: c.call_id,
                attempt: c.attempts + 1,
                at: self.now,
                status: Some(200),
                error: None,
                latency_ms: 1,
                next,
            };
            let at = self.at();
            self.node().lanes.finished(completion, at);
        }
    }

    /// Takes the attempts the lanes started, checking each against the model.
    fn take_starts(&mut self) {
        let starts = self.node().lanes.starts();
        let started: Vec<String> = starts.iter().map(|s| s.claimed.subscriber.clone()).collect();
        for claimed in starts.into_iter().map(|s| s.claimed) {
            let key = (claimed.event_id.clone(), claimed.subscriber.clone());
            self.ids.insert(claimed.id, key.clone());
            let (call, seq, state) = self.model.deliveries.get(&key).cloned().expect("started a known delivery");
            assert!(matches!(state, State::Pending(due) if due <= self.now), "{key:?} started while {state:?}");
            assert!(self.model.heads_chain(&key), "{key:?} (call {call} #{seq}) started before an earlier status");
            let busy = self.running.iter().any(|r| r.subscriber == claimed.subscriber && r.call_id == call);
            assert!(!busy, "{key:?}: another status of {call} is in flight to {}", claimed.subscriber);
            self.running.push(claimed);
        }
        // Subscribers whose ready work still waits for a place under the total limit were
        // overtaken by every start of another subscriber's.
        for sub in &self.subscribers {
            let (running, ready) = self.node.as_ref().expect("running").lanes.held(sub);
            let overtaken = self.overtaken.entry(sub.clone()).or_default();
            if started.contains(sub) {
                *overtaken = 0;
            }
            if !ready.is_empty() && running < self.per_subscriber {
                *overtaken += started.iter().filter(|s| *s != sub).count();
            }
        }
    }

    /// Runs every round trip the lanes find due, as the loop would; returns who was asked
    /// for work in each round trip that claimed.
    async fn settle(&mut self) -> Vec<Vec<String>> {
        let mut claiming = Vec::new();
        for _ in 0..200 {
            self.take_starts();
            let (now, at) = (self.now, self.at());
            let node = self.node();
            if !node.lanes.round_due(now, at) {
                return claiming;
            }
            let Some(round) = node.lanes.begin_round(now) else { return claiming };
            if !round.asked.is_empty() {
                claiming.push(round.asked.iter().map(|(s, _)| s.clone()).collect());
            }
            let results = round.results.clone();
            let outcome = node.outbox.cycle(round.results.clone(), round.asked.clone(), now).await;
            node.lanes.end_round(round, outcome, at);
            self.model.record(&results, &self.ids);
        }
        panic!("{}: the loop never rests (200 round trips in one turn)", self.describe());
    }

    /// The checks made after every step.
    fn check(&mut self, claiming_rounds: &[Vec<String>]) {
        let node = self.node.as_ref().expect("running");
        let case = self.describe();
        let mut in_memory: HashSet<(String, String)> = HashSet::new();
        let (mut used_total, mut running_total) = (0, 0);
        for sub in &self.subscribers {
            let (running, ready) = node.lanes.held(sub);
            let held = running + ready.len();
            let mine = self.running.iter().filter(|c| &c.subscriber == sub).count();
            assert_eq!(running, mine, "{sub}: the lanes count {running} in flight, the test holds {mine}");
            assert!(running <= self.per_subscriber, "{sub}: {running} in flight, limit {}", self.per_subscriber);
            assert!(held <= self.capacity, "{sub}: {held} claims held, capacity {}", self.capacity);
            let used = self.capacity - node.slots.free_own(sub);
            assert_eq!(used, held, "{sub}: {used} slots used for {held} claims in memory (leak)");
            used_total += used;
            running_total += running;
            in_memory.extend(ready.iter().map(|e| (e.clone(), sub.clone())));
            in_memory.extend(
                self.running.iter().filter(|c| &c.subscriber == sub).map(|c| (c.event_id.clone(), sub.clone())),
            );
            let waits = !ready.is_empty() && running < self.per_subscriber;
            let overtaken = self.overtaken.entry(sub.clone()).or_default();
            *overtaken = if waits { *overtaken } else { 0 };
            let bound = self.subscribers.len() * self.per_subscriber;
            assert!(*overtaken <= bound, "{case}: {sub}'s ready work waited through {overtaken} starts of others");
        }
        let total = self.max_in_flight + self.capacity - self.per_subscriber;
        assert_eq!(total - node.slots.free_total(), used_total, "total slots leaked");
        assert!(running_total <= self.max_in_flight, "{running_total} in flight, limit {}", self.max_in_flight);
        let waiting = self.model.due_unclaimed(self.now, &in_memory);
        for sub in &self.subscribers {
            let (running, ready) = node.lanes.held(sub);
            let has_room = running + ready.len() < self.per_subscriber;
            let due_unclaimed = waiting.contains(sub);
            let starving = self.starving.entry(sub.clone()).or_default();
            if !(has_room && due_unclaimed) {
                *starving = 0;
                continue;
            }
            let free = node.slots.free_total();
            assert_eq!(free, 0, "{case}: {sub} has due work and room, {free} slots are free, and the loop rests");
            for asked in claiming_rounds {
                *starving = if asked.contains(sub) { 0 } else { *starving + 1 };
            }
            assert!(*starving <= self.subscribers.len(), "{case}: {sub} waited through {starving} claim round trips");
        }
    }

    /// One random step, then the loop settles and the checks run.
    async fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..35 => self.arrive().await,
            35..70 => self.finish_some(false),
            70..97 => self.now += self.rng.random_range(1..200),
            _ => self.restart().await,
        }
        let rounds = self.settle().await;
        self.check(&rounds);
    }

    /// Every attempt succeeds from now on until nothing is left; then the database agrees.
    async fn finish(&mut self) {
        let turns = self.model.open.len() / self.max_in_flight.min(self.per_subscriber) + 100;
        for _ in 0..turns {
            if self.model.open.is_empty() {
                break;
            }
            self.finish_some(true);
            self.now += 50;
            let rounds = self.settle().await;
            self.check(&rounds);
        }
        let left: Vec<_> = self.model.open.iter().map(|k| (k, self.model.deliveries[k].2)).collect();
        assert!(left.is_empty(), "{}: never finished: {:?}", self.describe(), &left[..left.len().min(5)]);
        let pending = self.node().outbox.pending_counts().await.unwrap();
        assert!(pending.iter().all(|(_, n)| *n == 0), "the database still has pending deliveries: {pending:?}");
    }
}

/// Runs the cases of `seeds` (`MODEL_SEED=n` runs only case n).
async fn run_cases(seeds: std::ops::Range<u64>) {
    let only: Option<u64> = std::env::var("MODEL_SEED").ok().map(|s| s.parse().expect("MODEL_SEED is a number"));
    for seed in seeds.filter(|s| only.is_none_or(|o| o == *s)) {
        let mut case = Case::new(seed).await;
        for _ in 0..150 {
            case.step().await;
        }
        case.finish().await;
        let node = case.node.take().expect("running");
        node.outbox.close().await;
    }
}

#[tokio::test]
async fn the_loop_serves_every_subscriber_within_its_limits_under_random_steps_cases_0_to_15() {
    run_cases(0..16).await;
}

#[tokio::test]
async fn the_loop_serves_every_subscriber_within_its_limits_under_random_steps_cases_16_to_31() {
    run_cases(16..32).await;
}

#[tokio::test]
async fn the_loop_serves_every_subscriber_within_its_limits_under_random_steps_cases_32_to_47() {
    run_cases(32..48).await;
}
