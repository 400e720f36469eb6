//! In-flight capacity shared by the outbox writer (which hands freshly stored deliveries
//! straight to the delivery loop) and the delivery loop (which claims the rest). A slot is
//! one attempt in flight; a subscriber has at most `max_in_flight_per_subscriber`, the
//! program at most `max_in_flight`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Free attempt slots, per subscriber and in total.
#[derive(Debug)]
pub struct Slots {
    total: AtomicUsize,
    subscribers: Vec<(String, AtomicUsize)>,
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1)).is_ok()
}

impl Slots {
    /// All slots free.
    pub fn new<'a>(total: usize, per_subscriber: usize, subscribers: impl IntoIterator<Item = &'a str>) -> Self {
        Slots {
            total: AtomicUsize::new(total),
            subscribers: subscribers.into_iter().map(|s| (s.to_string(), AtomicUsize::new(per_subscriber))).collect(),
        }
    }

    fn counter(&self, subscriber: &str) -> Option<&AtomicUsize> {
        self.subscribers.iter().find(|(id, _)| id == subscriber).map(|(_, c)| c)
    }

    /// Takes up to `n` slots of `subscriber`; returns how many it got.
    pub fn take(&self, subscriber: &str, n: usize) -> usize {
        let Some(own) = self.counter(subscriber) else { return 0 };
        let mut got = 0;
        while got < n && take_one(own) {
            if !take_one(&self.total) {
                own.fetch_add(1, Ordering::AcqRel);
                break;
            }
            got += 1;
        }
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
}
