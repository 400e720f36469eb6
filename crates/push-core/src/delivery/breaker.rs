//! A subscriber's circuit breaker (issue 14): a pure state machine of its attempts' results
//! and the clock, so every transition is unit-tested. The delivery loop asks it whether the
//! subscriber may be attempted, and when to probe it.
//!
//! Closed: every attempt goes; `failures` failed attempts in a row open it. Open: nothing is
//! attempted except one probe at a time, the first `probe` after opening, then at doubling
//! intervals up to `probe_max`; a probe's failure keeps it open (and does not advance the
//! probed delivery's retry schedule), its success closes it.

use std::time::Duration;

use crate::config::BreakerSettings;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts go.
    Closed,
    /// Only probes go; the next one is due at `probe_at` (ms).
    Open {
        /// When the next probe may start (ms).
        probe_at: i64,
        /// The wait that led to `probe_at`; the next one doubles it.
        interval: Duration,
        /// A probe is in flight.
        probing: bool,
    },
}

/// What an attempt's result did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing changed state.
    Same,
    /// It opened: the subscriber's waiting claims go back to the database.
    Opened,
    /// A probe succeeded: attempts go again at full speed.
    Closed,
}

/// One subscriber's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: BreakerSettings,
    /// Failed attempts in a row (reset by a success).
    failures: u32,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: &BreakerSettings) -> Self {
        Breaker { settings: settings.clone(), failures: 0, state: BreakerState::Closed }
    }

    /// Its state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether attempts may start freely (closed).
    pub fn is_closed(&self) -> bool {
        self.state == BreakerState::Closed
    }

    /// Whether a probe may start now: open, due, none in flight.
    pub fn probe_due(&self, now: i64) -> bool {
        matches!(self.state, BreakerState::Open { probe_at, probing: false, .. } if probe_at <= now)
    }

    /// When the next probe may start, while open and not probing.
    pub fn next_probe(&self) -> Option<i64> {
        match self.state {
            BreakerState::Open { probe_at, probing: false, .. } => Some(probe_at),
            _ => None,
        }
    }

    /// A probe starts.
    pub fn probe_started(&mut self) {
        if let BreakerState::Open { probing, .. } = &mut self.state {
            *probing = true;
        }
    }

    /// A probe ended without an attempt (its claim was given back): the next may start.
    pub fn probe_abandoned(&mut self) {
        if let BreakerState::Open { probing, .. } = &mut self.state {
            *probing = false;
        }
    }

    /// Takes in a finished attempt's result at `now` (ms); `probe` says it was a probe.
    pub fn record(&mut self, success: bool, probe: bool, now: i64) -> Transition {
        if success {
            self.failures = 0;
            return match self.state {
                BreakerState::Closed => Transition::Same,
                // An attempt started before it opened may succeed too: it closes it as well.
                BreakerState::Open { .. } => {
                    self.state = BreakerState::Closed;
                    Transition::Closed
                }
            };
        }
        self.failures = self.failures.saturating_add(1);
        match self.state {
            BreakerState::Closed if self.settings.failures > 0 && self.failures >= self.settings.failures => {
                let interval = self.settings.probe;
                self.state = BreakerState::Open { probe_at: now + millis(interval), interval, probing: false };
                Transition::Opened
            }
            BreakerState::Open { interval, probing: true, .. } if probe => {
                let interval = (interval * 2).min(self.settings.probe_max);
                self.state = BreakerState::Open { probe_at: now + millis(interval), interval, probing: false };
                Transition::Same
            }
            _ => Transition::Same,
        }
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(failures: u32) -> BreakerSettings {
        BreakerSettings { failures, probe: Duration::from_secs(5), probe_max: Duration::from_secs(300) }
    }

    #[test]
    fn opens_after_the_configured_failures_in_a_row_only() {
        let mut b = Breaker::new(&settings(3));
        assert_eq!(b.record(false, false, 0), Transition::Same);
        assert_eq!(b.record(false, false, 0), Transition::Same);
        assert_eq!(b.record(true, false, 0), Transition::Same, "a success resets the count");
        assert_eq!(b.record(false, false, 0), Transition::Same);
        assert_eq!(b.record(false, false, 0), Transition::Same);
        assert!(b.is_closed());
        assert_eq!(b.record(false, false, 1000), Transition::Opened);
        assert_eq!(b.next_probe(), Some(6000));
        assert!(!b.probe_due(5999) && b.probe_due(6000));
    }

    #[test]
    fn probes_double_up_to_the_cap_and_a_success_closes() {
        let mut b = Breaker::new(&settings(1));
        b.record(false, false, 0);
        let mut now = 0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let at = b.next_probe().unwrap();
            waits.push((at - now) / 1000);
            now = at;
            b.probe_started();
            assert!(!b.probe_due(now), "one probe at a time");
            assert_eq!(b.record(false, true, now), Transition::Same);
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        b.probe_started();
        assert_eq!(b.record(true, true, now), Transition::Closed);
        assert!(b.is_closed() && b.failures() == 0);
    }

    #[test]
    fn a_late_failure_of_an_attempt_started_while_closed_does_not_move_the_probe() {
        let mut b = Breaker::new(&settings(1));
        b.record(false, false, 0);
        assert_eq!(b.record(false, false, 100), Transition::Same);
        assert_eq!(b.next_probe(), Some(5000));
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let mut b = Breaker::new(&settings(0));
        for _ in 0..1000 {
            b.record(false, false, 0);
        }
        assert!(b.is_closed());
    }
}
