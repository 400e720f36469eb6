//! One subscriber's share of the delivery loop: its attempts in flight, its ready queue, its
//! breaker, pause and rate limit. [`Lanes`](super::lanes::Lanes) holds one per subscriber.

use std::{collections::VecDeque, sync::Arc};

use tokio::time::Instant;

use super::{
    breaker::{Breaker, BreakerState},
    health::{Health, SubscriberState},
    pace::Pace,
};
use crate::{
    config::BreakerSettings,
    outbox::{Claimed, Completion, NextState},
    subscribers::Route,
};

/// What the loop knows of one subscriber's claimable deliveries in the database.
#[derive(Debug, Clone, Copy)]
pub(super) enum Known {
    /// Some may be due now: at start, and after a claim that was filled.
    Maybe,
    /// Its last claim, planned when the subscriber's backlog marks (see
    /// [`crate::slots::Slots::marks`]) stood at `marks`, took everything due; the rest falls
    /// due at `at` (never: `None`). A new mark since (a retry recorded, a status let go, a
    /// delivery stored without a hand-over, a redelivery) makes it [`Known::Maybe`] again.
    Until { at: Option<i64>, marks: u64 },
}

/// One subscriber's share of the loop.
pub(super) struct Lane {
    /// Where its attempts go.
    pub route: Arc<Route>,
    /// Its attempts started and not yet finished.
    pub running: usize,
    /// Its claimed deliveries waiting for an attempt to finish, so a freed attempt starts
    /// the next one at once, without a round trip to the database.
    pub ready: VecDeque<Claimed>,
    /// What its last claim said about its claimable work in the database.
    pub known: Known,
    /// Its backlog marks when its claim under way was planned.
    pub asking_marks: u64,
    /// Attempts in flight at most.
    pub limit: usize,
    /// Claims held in memory at most (see [`super::claim_capacity`]).
    pub capacity: usize,
    /// Its circuit breaker.
    pub breaker: Breaker,
    /// The delivery a probe of its open breaker is attempting.
    pub probe: Option<i64>,
    /// Paused by the operator.
    pub paused: bool,
    /// No longer configured.
    pub removed: bool,
    /// Its rate limit, if it has one.
    pub pace: Option<Pace>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// Failed attempts since start.
    pub failed: u64,
}

impl Lane {
    /// A lane for `route`, nothing claimed yet.
    pub fn new(route: Arc<Route>, defaults: (usize, usize), breaker: &BreakerSettings) -> Self {
        let (limit, capacity) = own_limits(&route, defaults);
        Lane {
            pace: Pace::new(route.rate_limit_per_second, Instant::now()),
            route,
            running: 0,
            ready: VecDeque::new(),
            known: Known::Maybe,
            asking_marks: 0,
            limit,
            capacity,
            breaker: Breaker::new(breaker),
            probe: None,
            paused: false,
            removed: false,
            last_error: None,
            failed: 0,
        }
    }

    /// Takes a reloaded configuration of its subscriber.
    pub fn reconfigure(&mut self, route: Arc<Route>, defaults: (usize, usize)) {
        (self.limit, self.capacity) = own_limits(&route, defaults);
        if self.route.rate_limit_per_second != route.rate_limit_per_second {
            self.pace = Pace::new(route.rate_limit_per_second, Instant::now());
        }
        self.route = route;
        self.removed = false;
    }

    /// Whether its attempts may start freely.
    pub fn open_for_attempts(&self) -> bool {
        !self.paused && !self.removed && self.breaker.is_closed()
    }

    /// Whether it waits for one probe to be claimed and started.
    pub fn wants_probe(&self, now: i64) -> bool {
        !self.paused && !self.removed && self.running == 0 && self.breaker.probe_due(now)
    }

    /// Whether one more ready delivery may start under its own limits (not the total).
    pub fn may_start(&mut self, now: i64, at: Instant) -> bool {
        if self.ready.is_empty() {
            return false;
        }
        if !self.open_for_attempts() {
            return self.wants_probe(now);
        }
        self.running < self.limit && self.pace.as_mut().is_none_or(|p| p.take(at))
    }

    /// Claims of its ready queue given back unattempted (breaker opened, paused, removed),
    /// as completions to record.
    pub fn return_ready(&mut self, at: i64) -> Vec<Completion> {
        self.ready.drain(..).map(|c| returned(c, at)).collect()
    }

    /// When it next needs the loop without any other event: a probe falling due, or a token
    /// of its rate limit for a ready delivery.
    pub fn next_timer(&self, now: i64, at: Instant) -> Option<std::time::Duration> {
        if !self.paused && !self.removed && self.running == 0 {
            if let Some(probe_at) = self.breaker.next_probe() {
                return Some(std::time::Duration::from_millis((probe_at - now).max(0) as u64));
            }
        }
        match (&self.pace, self.open_for_attempts() && !self.ready.is_empty() && self.running < self.limit) {
            (Some(pace), true) => Some(pace.wait(at)),
            _ => None,
        }
    }

    /// Its health as the API shows it.
    pub fn health(&self) -> Health {
        let state = match (self.removed, self.paused, self.breaker.state()) {
            (true, _, _) => SubscriberState::Removed,
            (_, true, _) => SubscriberState::Paused,
            (_, _, BreakerState::Open { .. }) => SubscriberState::Open,
            _ => SubscriberState::Closed,
        };
        let next_probe_at = match self.breaker.state() {
            BreakerState::Open { probe_at, .. } => Some(probe_at),
            BreakerState::Closed => None,
        };
        Health {
            state,
            consecutive_failures: self.breaker.failures(),
            last_error: self.last_error.clone(),
            next_probe_at,
            failed_attempts: self.failed,
            max_in_flight: self.limit,
            rate_limit_per_second: self.route.rate_limit_per_second,
        }
    }
}

/// A route's (in-flight limit, claim capacity), given the program's defaults of both.
pub(super) fn own_limits(route: &Route, (limit, capacity): (usize, usize)) -> (usize, usize) {
    match route.max_in_flight {
        Some(own) => (own, super::claim_capacity(own)),
        None => (limit, capacity),
    }
}

/// A claim given back without an attempt.
pub(super) fn returned(c: Claimed, at: i64) -> Completion {
    Completion {
        id: c.id,
        subscriber: c.subscriber,
        call_id: c.call_id,
        attempt: c.attempts,
        at,
        status: None,
        error: None,
        latency_ms: 0,
        next: NextState::Returned,
    }
}
