//! The reference model of the model test: what every delivery's state should be, and
//! which heads its call's chain.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::outbox::{Completion, NextState};

/// A delivery as the reference model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum State {
    /// Waiting in the database, due at this time (ms).
    Pending(i64),
    /// Attempted; the result is not recorded yet (the database still has it pending).
    Finishing(i64, NextState),
    Delivered,
    Dead,
}

/// The reference model: every delivery by (event id, subscriber), with its call and place;
/// which are not delivered or dead yet; and per subscriber and call the sequences not
/// finished yet.
#[derive(Default)]
pub(super) struct Model {
    pub deliveries: HashMap<(String, String), (String, usize, State)>,
    pub open: HashSet<(String, String)>,
    unfinished: HashMap<String, HashMap<String, BTreeSet<usize>>>,
}

impl Model {
    /// A new delivery, due at `now`.
    pub(super) fn add(&mut self, key: (String, String), call: String, seq: usize, now: i64) {
        self.unfinished.entry(key.1.clone()).or_default().entry(call.clone()).or_default().insert(seq);
        self.open.insert(key.clone());
        self.deliveries.insert(key, (call, seq, State::Pending(now)));
    }

    /// Whether `key` heads its (subscriber, call) chain: no lower sequence is unfinished.
    pub(super) fn heads_chain(&self, key: &(String, String)) -> bool {
        let (call, seq, _) = &self.deliveries[key];
        self.unfinished[&key.1][call].first() == Some(seq)
    }

    /// Applies recorded results.
    pub(super) fn record(&mut self, results: &[Completion], ids: &HashMap<i64, (String, String)>) {
        for c in results {
            let key = &ids[&c.id];
            let entry = self.deliveries.get_mut(key).expect("a known delivery");
            entry.2 = match c.next {
                NextState::Delivered => State::Delivered,
                NextState::Dead => State::Dead,
                NextState::RetryAt(at) => State::Pending(at),
                // Breakers are off in the model: nothing is held; a returned claim is pending as before.
                NextState::Held | NextState::Returned => entry.2,
            };
            if c.next.finishes() {
                self.unfinished.get_mut(&key.1).and_then(|m| m.get_mut(&entry.0)).expect("a chain").remove(&entry.1);
                self.open.remove(key);
            }
        }
    }

    /// Subscribers that have a due delivery heading its chain and not in `in_memory`.
    pub(super) fn due_unclaimed(&self, now: i64, in_memory: &HashSet<(String, String)>) -> HashSet<String> {
        self.open
            .iter()
            .filter(|key| matches!(self.deliveries[*key].2, State::Pending(due) if due <= now))
            .filter(|key| !in_memory.contains(*key) && self.heads_chain(key))
            .map(|key| key.1.clone())
            .collect()
    }
}
