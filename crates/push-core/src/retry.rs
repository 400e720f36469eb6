//! Retry policy: a pure function from (configuration, attempt number, outcome) to what
//! happens next. No clock, no I/O, so every branch is unit-tested.

use std::time::Duration;

use crate::config::RetrySettings;

/// What an attempt came back with, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The subscriber answered 2xx in time.
    Success,
    /// Non-2xx status; `retry_after` is the subscriber's `Retry-After`, if it sent one.
    Status { code: u16, retry_after: Option<Duration> },
    /// Connection error or timeout.
    Transport,
}

/// The decision after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Done.
    Delivered,
    /// Try again after this wait.
    RetryIn(Duration),
    /// No more automatic attempts: the schedule is used up, or the subscriber said 410 Gone.
    Dead,
}

/// The configured schedule and its bounds.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    schedule: Vec<Duration>,
    retry_after_cap: Duration,
}

impl RetryPolicy {
    /// Builds the policy from the `retry:` section.
    pub fn new(settings: &RetrySettings) -> Self {
        RetryPolicy { schedule: settings.schedule.clone(), retry_after_cap: settings.retry_after_cap }
    }

    /// Decides after the `attempt_in_round`-th attempt (1-based, counted since the delivery
    /// was created or last redelivered by hand) came back with `result`.
    pub fn decide(&self, attempt_in_round: u32, result: AttemptResult) -> Decision {
        let code = match result {
            AttemptResult::Success => return Decision::Delivered,
            AttemptResult::Status { code: 410, .. } => return Decision::Dead,
            AttemptResult::Status { code, .. } => Some(code),
            AttemptResult::Transport => None,
        };
        let Some(&wait) = self.schedule.get(attempt_in_round.saturating_sub(1) as usize) else {
            return Decision::Dead;
        };
        let asked = match result {
            AttemptResult::Status { retry_after: Some(after), .. } if matches!(code, Some(429 | 503)) => {
                after.min(self.retry_after_cap)
            }
            _ => Duration::ZERO,
        };
        Decision::RetryIn(wait.max(asked))
    }

    /// Attempts one round makes at most: the first plus one per scheduled retry.
    pub fn max_attempts(&self) -> u32 {
        self.schedule.len() as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(schedule: &[u64]) -> RetryPolicy {
        RetryPolicy::new(&RetrySettings {
            schedule: schedule.iter().map(|s| Duration::from_secs(*s)).collect(),
            retry_after_cap: Duration::from_secs(600),
        })
    }

    fn status(code: u16, retry_after: Option<u64>) -> AttemptResult {
        AttemptResult::Status { code, retry_after: retry_after.map(Duration::from_secs) }
    }

    #[test]
    fn follows_the_default_schedule_then_dies() {
        let p = policy(&[0, 5, 30, 300, 1800]);
        let waits: Vec<_> = (1..=5).map(|n| p.decide(n, AttemptResult::Transport)).collect();
        let expected: Vec<_> =
            [0, 5, 30, 300, 1800].iter().map(|s| Decision::RetryIn(Duration::from_secs(*s))).collect();
        assert_eq!(waits, expected);
        assert_eq!(p.decide(6, status(500, None)), Decision::Dead);
        assert_eq!(p.max_attempts(), 6);
    }

    #[test]
    fn success_is_delivered_at_any_attempt() {
        let p = policy(&[1]);
        assert_eq!(p.decide(1, AttemptResult::Success), Decision::Delivered);
        assert_eq!(p.decide(9, AttemptResult::Success), Decision::Delivered);
    }

    #[test]
    fn gone_is_dead_at_once() {
        assert_eq!(policy(&[0, 5]).decide(1, status(410, None)), Decision::Dead);
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_and_is_capped() {
        let p = policy(&[5, 5]);
        assert_eq!(p.decide(1, status(429, Some(60))), Decision::RetryIn(Duration::from_secs(60)));
        assert_eq!(p.decide(1, status(503, Some(1))), Decision::RetryIn(Duration::from_secs(5)));
        assert_eq!(p.decide(1, status(503, Some(100_000))), Decision::RetryIn(Duration::from_secs(600)));
        assert_eq!(p.decide(1, status(500, Some(60))), Decision::RetryIn(Duration::from_secs(5)), "only 429/503");
    }

    #[test]
    fn empty_schedule_means_one_attempt() {
        assert_eq!(policy(&[]).decide(1, status(500, None)), Decision::Dead);
    }
}
