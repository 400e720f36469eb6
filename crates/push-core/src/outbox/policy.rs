//! What retention keeps, as a pure function of the configuration: shared by every backend,
//! so they purge the same events.

use crate::config::OutboxSettings;

/// The three windows of `outbox:`, in ms; `None` where the setting is `0s` (off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// An event whose deliveries are all delivered (or that has none) goes once this old.
    pub retention_ms: Option<i64>,
    /// An event with a dead delivery and none pending goes once this old.
    pub dead_retention_ms: Option<i64>,
    /// A purged event's dedup key is kept until the event is this old (SPEC §3 answers).
    pub dedup_window_ms: Option<i64>,
}

impl RetentionPolicy {
    /// The policy of `outbox:`.
    pub fn from_settings(settings: &OutboxSettings) -> Self {
        let ms = |d: std::time::Duration| Some(d.as_millis() as i64).filter(|&ms| ms > 0);
        RetentionPolicy {
            retention_ms: ms(settings.retention),
            dead_retention_ms: ms(settings.dead_retention),
            dedup_window_ms: ms(settings.dedup_window),
        }
    }

    /// Whether anything is ever purged.
    pub fn purges_anything(&self) -> bool {
        self.retention_ms.is_some() || self.dead_retention_ms.is_some()
    }

    /// Events created at or after the returned time are too young for any purge; `None`
    /// when nothing is ever purged.
    pub fn youngest_purgeable(&self, now: i64) -> Option<i64> {
        let shortest = match (self.retention_ms, self.dead_retention_ms) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(now - shortest)
    }

    /// Whether an event created at `created_at` goes now, given whether one of its
    /// deliveries is pending and whether one is dead. Pending ones never go.
    pub fn purges(&self, pending: bool, dead: bool, created_at: i64, now: i64) -> bool {
        let keep_for = match (pending, dead) {
            (true, _) => return false,
            (false, true) => self.dead_retention_ms,
            (false, false) => self.retention_ms,
        };
        keep_for.is_some_and(|ms| created_at < now - ms)
    }
}

/// What one purge batch removed, and whether more is waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Events removed.
    pub events: u64,
    /// Their deliveries.
    pub deliveries: u64,
    /// Their attempt rows.
    pub attempts: u64,
    /// Another batch would find more now: run it soon rather than after the pause.
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn policy(retention: i64, dead: i64) -> RetentionPolicy {
        let on = |d: i64| Some(d).filter(|&d| d > 0);
        RetentionPolicy { retention_ms: on(retention), dead_retention_ms: on(dead), dedup_window_ms: on(7 * DAY) }
    }

    #[test]
    fn pending_events_are_never_purged_however_old() {
        let p = policy(7 * DAY, 30 * DAY);
        assert!(!p.purges(true, false, 0, 1000 * DAY));
        assert!(!p.purges(true, true, 0, 1000 * DAY));
    }

    #[test]
    fn delivered_and_dead_events_each_keep_their_own_window() {
        let p = policy(7 * DAY, 30 * DAY);
        let now = 100 * DAY;
        assert!(!p.purges(false, false, now - 7 * DAY, now), "exactly the retention: kept");
        assert!(p.purges(false, false, now - 7 * DAY - 1, now));
        assert!(!p.purges(false, true, now - 8 * DAY, now), "a dead one is kept for dead_retention");
        assert!(p.purges(false, true, now - 30 * DAY - 1, now));
        assert_eq!(p.youngest_purgeable(now), Some(now - 7 * DAY));
    }

    #[test]
    fn a_window_of_zero_turns_its_purge_off() {
        let p = policy(0, 30 * DAY);
        assert!(!p.purges(false, false, 0, 1000 * DAY));
        assert!(p.purges(false, true, 0, 1000 * DAY));
        assert_eq!(p.youngest_purgeable(1000 * DAY), Some(970 * DAY));
        let off = policy(0, 0);
        assert!(!off.purges_anything());
        assert_eq!(off.youngest_purgeable(5), None);
    }
}
