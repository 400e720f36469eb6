//! Claims held in memory, shared by the outbox writer (which hands freshly stored deliveries
//! straight to the delivery loop) and the delivery loop (which claims the rest). A slot is
//! one claimed delivery in memory: running, ready to run, or stored by the writer and
//! waiting for its fsync. A subscriber has at most `delivery::claim_capacity` of its
//! `max_in_flight_per_subscriber`, the program at most that of `max_in_flight`; how many of
//! them run at once is the delivery loop's business.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
};

/// Free claim slots, per subscriber and in total, and which subscribers have a backlog.
#[derive(Debug)]
pub struct Slots {
    total: AtomicUsize,
    subscribers: Vec<Own>,
    /// Subscriber id → its place in `subscribers` (the writer looks one up per delivery).
    index: HashMap<String, usize>,
}

/// One subscriber's free slots, and whether the database may hold claimable deliveries of
/// it (a backlog): while it may, new deliveries queue behind the backlog in the database
/// instead of being handed over, so they cannot overtake it (and starve it) under load.
#[derive(Debug)]
struct Own {
    free: AtomicUsize,
    backlog: AtomicBool,
    /// How many times the backlog was marked: the delivery loop compares it with what it saw
    /// when it last claimed, to know that work may have become claimable since.
    marks: AtomicU64,
}

/// Takes up to `n` from `counter`; returns how many it got.
fn take_up_to(counter: &AtomicUsize, n: usize) -> usize {
    let before = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v - v.min(n)));
    before.unwrap_or(0).min(n)
}

impl Slots {
    /// All slots free; every subscriber may have a backlog (from a previous run) until a
    /// claim finds none.
    pub fn new<'a>(total: usize, per_subscriber: usize, subscribers: impl IntoIterator<Item = &'a str>) -> Self {
        let index: HashMap<String, usize> =
            subscribers.into_iter().enumerate().map(|(i, id)| (id.to_string(), i)).collect();
        let own = |_| Own {
            free: AtomicUsize::new(per_subscriber),
            backlog: AtomicBool::new(true),
            marks: AtomicU64::new(0),
        };
        Slots { total: AtomicUsize::new(total), subscribers: (0..index.len()).map(own).collect(), index }
    }

    fn own(&self, subscriber: &str) -> Option<&Own> {
        self.index.get(subscriber).map(|&i| &self.subscribers[i])
    }

    /// Sets the backlog mark and counts it.
    fn mark(own: &Own) {
        own.backlog.store(true, Ordering::Release);
        own.marks.fetch_add(1, Ordering::AcqRel);
    }

    fn counter(&self, subscriber: &str) -> Option<&AtomicUsize> {
        self.own(subscriber).map(|o| &o.free)
    }

    /// For the writer: whether a new delivery of `subscriber` may be handed straight to the
    /// delivery loop (no backlog, and a slot taken for it). If not, it stays in the database,
    /// and the subscriber is marked as having a backlog.
    pub fn hand_over_one(&self, subscriber: &str) -> bool {
        let Some(own) = self.own(subscriber) else { return false };
        if !own.backlog.load(Ordering::Acquire) && self.take(subscriber, 1) == 1 {
            return true;
        }
        Self::mark(own);
        false
    }

    /// The database may hold claimable deliveries of `subscriber` (a retry, a status let go
    /// after the one before it, a redelivery).
    pub fn mark_backlog(&self, subscriber: &str) {
        if let Some(own) = self.own(subscriber) {
            Self::mark(own);
        }
    }

    /// As [`Slots::mark_backlog`], for every subscriber.
    pub fn mark_all_backlogged(&self) {
        self.subscribers.iter().for_each(Self::mark);
    }

    /// How many times `subscriber`'s backlog was marked so far (see [`Slots::mark_backlog`]),
    /// if the database may hold claimable deliveries of it (`None`: a claim found none since).
    pub fn backlog_marks(&self, subscriber: &str) -> Option<u64> {
        let own = self.own(subscriber)?;
        own.backlog.load(Ordering::Acquire).then(|| own.marks.load(Ordering::Acquire))
    }

    /// How many times `subscriber`'s backlog was marked so far (see [`Slots::mark_backlog`]).
    pub fn marks(&self, subscriber: &str) -> u64 {
        self.own(subscriber).map_or(0, |o| o.marks.load(Ordering::Acquire))
    }

    /// A claim found nothing more of `subscriber` pending in the database.
    pub fn clear_backlog(&self, subscriber: &str) {
        if let Some(own) = self.own(subscriber) {
            own.backlog.store(false, Ordering::Release);
        }
    }

    /// Takes up to `n` slots of `subscriber`; returns how many it got.
    pub fn take(&self, subscriber: &str, n: usize) -> usize {
        let Some(own) = self.counter(subscriber) else { return 0 };
        let wanted = take_up_to(own, n);
        let got = take_up_to(&self.total, wanted);
        own.fetch_add(wanted - got, Ordering::AcqRel);
        got
    }

    /// Returns `n` slots of `subscriber`.
    pub fn give_back(&self, subscriber: &str, n: usize) {
        if n == 0 {
            return;
        }
        if let Some(own) = self.counter(subscriber) {
            own.fetch_add(n, Ordering::AcqRel);
            self.total.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Free slots in all.
    pub fn free_total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Free slots of `subscriber`'s own, whatever the total.
    #[cfg(test)]
    pub(crate) fn free_own(&self, subscriber: &str) -> usize {
        self.counter(subscriber).map(|c| c.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Slots `subscriber` could take now.
    pub fn free(&self, subscriber: &str) -> usize {
        let own = self.counter(subscriber).map(|c| c.load(Ordering::Acquire)).unwrap_or(0);
        own.min(self.total.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_subscriber_and_total_limits_both_hold() {
        let slots = Slots::new(5, 3, ["a", "b"]);
        assert_eq!(slots.take("a", 10), 3, "a's own limit");
        assert_eq!(slots.take("b", 10), 2, "the total limit");
        assert_eq!(slots.free("b"), 0);
        slots.give_back("a", 2);
        assert_eq!(slots.free("b"), 1, "b has 1 of its own left; total has 2");
        assert_eq!(slots.take("b", 5), 1);
        assert_eq!(slots.take("nobody", 1), 0);
    }

    #[test]
    fn no_hand_over_while_a_backlog_may_exist() {
        let slots = Slots::new(10, 2, ["a"]);
        assert!(!slots.hand_over_one("a"), "a backlog from a previous run is assumed until a claim finds none");
        slots.clear_backlog("a");
        assert!(slots.hand_over_one("a"));
        assert!(slots.hand_over_one("a"));
        assert!(!slots.hand_over_one("a"), "no slot left: the delivery stays in the database ...");
        slots.give_back("a", 2);
        assert!(!slots.hand_over_one("a"), "... and later ones queue behind it");
        slots.clear_backlog("a");
        assert!(slots.hand_over_one("a"));
        slots.mark_all_backlogged();
        assert!(!slots.hand_over_one("a"));
    }
}
