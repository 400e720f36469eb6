//! How [`Lanes`] plans claims: the total shared among the subscribers that want work, the
//! next round starting after the last one served, slots of a short claim given back at once,
//! and a subscriber with nothing to claim left out until new work is marked or falls due.

use std::sync::Arc;

use tokio::time::Instant;

use super::lanes::{Lanes, Round};
use crate::{
    config::{Service, Subscriber},
    outbox::{ClaimBatch, Claimed, StoreError},
    slots::Slots,
    subscribers::Routes,
};

const CAPACITY: usize = 288;

/// `n` subscribers `s0…`, `total` free slots in all.
fn lanes(n: usize, total: usize) -> (Lanes, Arc<Slots>) {
    let subscribers: Vec<Subscriber> =
        (0..n).map(|i| crate::testing::subscriber(&format!("s{i}"), "http://127.0.0.1:9")).collect();
    let ids: Vec<String> = subscribers.iter().map(|s| s.id.clone()).collect();
    let slots = Arc::new(Slots::new(total, CAPACITY, ids.iter().map(String::as_str)));
    let routes = Routes::new(&subscribers, Service::Status);
    (Lanes::new(&routes, slots.clone(), 256, 32, CAPACITY), slots)
}

fn claimed(subscriber: &str, id: i64) -> Claimed {
    Claimed {
        id,
        event_id: format!("ev-{id}"),
        subscriber: subscriber.into(),
        call_id: format!("call-{id}"),
        payload: "{}".into(),
        attempts: 0,
        round_start: 0,
    }
}

fn asked(round: &Round) -> Vec<(&str, usize)> {
    round.asked.iter().map(|(s, n)| (s.as_str(), *n)).collect()
}

#[test]
fn the_total_is_shared_among_the_subscribers_that_want_work_only() {
    let (mut lanes, slots) = lanes(5, 10);
    slots.clear_backlog("s4");
    let round = lanes.begin_round(0).expect("a claim round");
    assert_eq!(asked(&round), [("s0", 3), ("s1", 3), ("s2", 3), ("s3", 1)], "equal shares of 10 among 4; none for s4");
    assert_eq!(slots.free_total(), 0);

    // s0 gets all it asked for, s1 one of three, s2 and s3 nothing.
    let batch = ClaimBatch {
        items: vec![claimed("s0", 1), claimed("s0", 2), claimed("s0", 3), claimed("s1", 4)],
        unfilled: vec![("s1".into(), None), ("s2".into(), Some(500)), ("s3".into(), None)],
        superseded: vec![],
    };
    assert!(lanes.end_round(round, Ok(batch), Instant::now()));
    assert_eq!(slots.free_total(), 6, "the short claims' slots are back at once");
    assert_eq!(lanes.starts().len(), 4, "what was claimed starts");
}

#[test]
fn when_the_total_cannot_serve_everyone_the_next_round_starts_after_the_last_served() {
    let (mut lanes, slots) = lanes(4, 2);
    let round = lanes.begin_round(0).expect("a claim round");
    assert_eq!(asked(&round), [("s0", 1), ("s1", 1)]);
    // The round trip failed: its slots come back, and nothing was learnt.
    assert!(!lanes.end_round(round, Err(StoreError::Stopped), Instant::now()));
    assert_eq!(slots.free_total(), 2);
    let round = lanes.begin_round(0).expect("a claim round");
    assert_eq!(asked(&round), [("s2", 1), ("s3", 1)], "s2 and s3 before s0 and s1 again");
}

#[test]
fn a_subscriber_with_nothing_claimable_is_asked_again_when_work_is_marked_or_falls_due() {
    let (mut lanes, slots) = lanes(1, 100);
    let round = lanes.begin_round(0).expect("a claim round");
    let batch = ClaimBatch { items: vec![], unfilled: vec![("s0".into(), Some(1_000))], superseded: vec![] };
    lanes.end_round(round, Ok(batch), Instant::now());
    assert_eq!(slots.free_total(), 100);
    assert!(!lanes.round_due(999, Instant::now()), "its next delivery falls due at 1000");
    assert!(lanes.wait(999, Instant::now()) <= std::time::Duration::from_millis(1), "the loop wakes for it");
    assert!(lanes.round_due(1_000, Instant::now()), "due now");

    let round = lanes.begin_round(1_000).expect("a claim round");
    let batch = ClaimBatch { items: vec![], unfilled: vec![("s0".into(), None)], superseded: vec![] };
    lanes.end_round(round, Ok(batch), Instant::now());
    slots.clear_backlog("s0");
    assert!(!lanes.round_due(10_000, Instant::now()), "nothing pending: not asked, however late");
    slots.mark_backlog("s0");
    assert!(lanes.round_due(10_000, Instant::now()), "the writer left work in the database: asked again");
}

#[test]
fn a_filled_claim_is_followed_by_another_when_the_ready_queue_runs_low() {
    let (mut lanes, _slots) = lanes(1, 1_000);
    let round = lanes.begin_round(0).expect("a claim round");
    assert_eq!(asked(&round), [("s0", CAPACITY)]);
    let items = (0..CAPACITY as i64).map(|i| claimed("s0", i)).collect();
    lanes.end_round(round, Ok(ClaimBatch { items, unfilled: vec![], superseded: vec![] }), Instant::now());
    assert_eq!(lanes.starts().len(), 32, "its in-flight limit");
    assert!(!lanes.round_due(0, Instant::now()), "its ready queue holds more than a slot's worth");
}
