//! Claims held in memory, shared by the outbox writer (which hands freshly stored deliveries
//! straight to the delivery loop) and the delivery loop (which claims the rest). A slot is
//! one claimed delivery in memory: running, ready to run, or stored by the writer and
//! waiting for its fsync. A subscriber has at most `delivery::claim_capacity` of its
//! in-flight limit, the program at most that of `max_in_flight`; how many of them run at
//! once is the delivery loop's business. Subscribers come and go with a reload
//! ([`Slots::set_capacity`]); a held one ([`Slots::hold`]: breaker open, paused, removed) gets
//! nothing handed over.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering},
        RwLock,
    },
};

/// Free claim slots, per subscriber and in total, and which subscribers have a backlog.
#[derive(Debug)]
pub struct Slots {
    total: AtomicUsize,
    /// Subscriber id → its slots (the writer looks one up per delivery; a reload adds some).
    subscribers: RwLock<HashMap<String, Own>>,
}

/// One subscriber's free slots, and whether the database may hold claimable deliveries of
/// it (a backlog): while it may, new deliveries queue behind the backlog in the database
/// instead of being handed over, so they cannot overtake it (and starve it) under load.
#[derive(Debug)]
struct Own {
    /// Free slots; below zero after its capacity was lowered while its claims were held.
    free: AtomicIsize,
    /// Its capacity, so a new one changes `free` by the difference.
    capacity: AtomicUsize,
    backlog: AtomicBool,
    /// Nothing is handed over (breaker open, paused, removed).
    held: AtomicBool,
    /// How many times the backlog was marked: the delivery loop compares it with what it saw
    /// when it last claimed, to know that work may have become claimable since.
    marks: AtomicU64,
}

impl Own {
    fn new(capacity: usize) -> Self {
        Own {
            free: AtomicIsize::new(capacity as isize),
            capacity: AtomicUsize::new(capacity),
            backlog: AtomicBool::new(true),
            held: AtomicBool::new(false),
            marks: AtomicU64::new(0),
        }
    }

    /// Sets the backlog mark and counts it.
    fn mark(&self) {
        self.backlog.store(true, Ordering::Release);
        self.marks.fetch_add(1, Ordering::AcqRel);
    }
}

/// Takes up to `n` from `counter`; returns how many it got.
fn take_up_to(counter: &AtomicUsize, n: usize) -> usize {
    let before = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v - v.min(n)));
    before.unwrap_or(0).min(n)
}

/// As [`take_up_to`], from a counter that may be below zero (nothing to take then).
fn take_up_to_signed(counter: &AtomicIsize, n: usize) -> usize {
    let n = n.min(isize::MAX as usize) as isize;
    let take = |v: isize| v.clamp(0, n);
    let before = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v - take(v)));
    take(before.unwrap_or(0)) as usize
}

impl Slots {
    /// All slots free; every subscriber may have a backlog (from a previous run) until a
    /// claim finds none.
    pub fn new<'a>(total: usize, per_subscriber: usize, subscribers: impl IntoIterator<Item = &'a str>) -> Self {
        let subscribers = subscribers.into_iter().map(|id| (id.to_string(), Own::new(per_subscriber))).collect();
        Slots { total: AtomicUsize::new(total), subscribers: RwLock::new(subscribers) }
    }

    /// Runs `f` on `subscriber`'s slots, if it has any.
    fn with<R>(&self, subscriber: &str, f: impl FnOnce(&Own) -> R) -> Option<R> {
        let map = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
        map.get(subscriber).map(f)
    }

    /// Gives `subscriber` `capacity` slots of its own: a new subscriber (a reload) starts with
    /// a backlog assumed; a known one keeps its claims, and its free slots change by the
    /// difference.
    pub fn set_capacity(&self, subscriber: &str, capacity: usize) {
        let mut map = self.subscribers.write().unwrap_or_else(|e| e.into_inner());
        match map.get(subscriber) {
            Some(own) => {
                let before = own.capacity.swap(capacity, Ordering::AcqRel);
                own.free.fetch_add(capacity as isize - before as isize, Ordering::AcqRel);
            }
            None => {
                map.insert(subscriber.to_string(), Own::new(capacity));
            }
        }
    }

    /// Holds `subscriber` (nothing handed over: its breaker is open, it is paused or
    /// removed), or lets it go again (its backlog is then marked, so the loop claims it).
    pub fn hold(&self, subscriber: &str, held: bool) {
        self.with(subscriber, |own| {
            own.held.store(held, Ordering::Release);
            if !held {
                own.mark();
            }
        });
    }

    /// For the writer: whether a new delivery of `subscriber` may be handed straight to the
    /// delivery loop (no backlog, not held, and a slot taken for it). If not, it stays in the
    /// database, and the subscriber is marked as having a backlog.
    pub fn hand_over_one(&self, subscriber: &str) -> bool {
        self.with(subscriber, |own| {
            if !own.backlog.load(Ordering::Acquire) && !own.held.load(Ordering::Acquire) && self.take_own(own, 1) == 1 {
                return true;
            }
            own.mark();
            false
        })
        .unwrap_or(false)
    }

    /// The database may hold claimable deliveries of `subscriber` (a retry, a status let go
    /// after the one before it, a redelivery).
    pub fn mark_backlog(&self, subscriber: &str) {
        self.with(subscriber, Own::mark);
    }

    /// As [`Slots::mark_backlog`], for every subscriber.
    pub fn mark_all_backlogged(&self) {
        let map = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
        map.values().for_each(Own::mark);
    }

    /// How many times `subscriber`'s backlog was marked so far (see [`Slots::mark_backlog`]),
    /// if the database may hold claimable deliveries of it (`None`: a claim found none since).
    pub fn backlog_marks(&self, subscriber: &str) -> Option<u64> {
        self.with(subscriber, |own| own.backlog.load(Ordering::Acquire).then(|| own.marks.load(Ordering::Acquire)))
            .flatten()
    }

    /// How many times `subscriber`'s backlog was marked so far (see [`Slots::mark_backlog`]).
    pub fn marks(&self, subscriber: &str) -> u64 {
        self.with(subscriber, |own| own.marks.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// A claim found nothing more of `subscriber` pending in the database.
    pub fn clear_backlog(&self, subscriber: &str) {
        self.with(subscriber, |own| own.backlog.store(false, Ordering::Release));
    }

    fn take_own(&self, own: &Own, n: usize) -> usize {
        let wanted = take_up_to_signed(&own.free, n);
        let got = take_up_to(&self.total, wanted);
        own.free.fetch_add((wanted - got) as isize, Ordering::AcqRel);
        got
    }

    /// Takes up to `n` slots of `subscriber`; returns how many it got.
    pub fn take(&self, subscriber: &str, n: usize) -> usize {
        self.with(subscriber, |own| self.take_own(own, n)).unwrap_or(0)
    }

    /// Returns `n` slots of `subscriber`.
    pub fn give_back(&self, subscriber: &str, n: usize) {
        if n == 0 {
            return;
        }
        let known = self.with(subscriber, |own| own.free.fetch_add(n as isize, Ordering::AcqRel)).is_some();
        if known {
            self.total.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Free slots in all.
    pub fn free_total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn free_own_of(&self, subscriber: &str) -> usize {
        self.with(subscriber, |own| own.free.load(Ordering::Acquire).max(0) as usize).unwrap_or(0)
    }

    /// Free slots of `subscriber`'s own, whatever the total.
    #[cfg(test)]
    pub(crate) fn free_own(&self, subscriber: &str) -> usize {
        self.free_own_of(subscriber)
    }

    /// Slots `subscriber` could take now.
    pub fn free(&self, subscriber: &str) -> usize {
        self.free_own_of(subscriber).min(self.total.load(Ordering::Acquire))
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

    #[test]
    fn a_held_subscriber_gets_nothing_handed_over_and_is_marked_when_let_go() {
        let slots = Slots::new(10, 2, ["a"]);
        slots.clear_backlog("a");
        slots.hold("a", true);
        assert!(!slots.hand_over_one("a"), "held");
        slots.clear_backlog("a");
        let marks = slots.marks("a");
        slots.hold("a", false);
        assert!(slots.marks("a") > marks && slots.backlog_marks("a").is_some(), "its backlog is claimed first");
    }

    #[test]
    fn capacity_changes_keep_the_claims_held() {
        let slots = Slots::new(100, 4, ["a"]);
        assert_eq!(slots.take("a", 4), 4);
        slots.set_capacity("a", 2);
        assert_eq!(slots.free("a"), 0, "two claims too many are held");
        slots.give_back("a", 3);
        assert_eq!(slots.free("a"), 1, "one more may go once three came back");
        slots.set_capacity("b", 3);
        assert_eq!(slots.take("b", 5), 3, "a subscriber added by a reload");
        assert!(slots.backlog_marks("b").is_some(), "assumed to have a backlog");
    }
}
