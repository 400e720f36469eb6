//! Whether the outbox can take writes, as its last writes showed.
//!
//! A reader answering `SELECT 1` proves the file can be read, not written: a full disk or a
//! file that became read-only fails only commits. So the writer and the syncer record here
//! the outcome of every transaction that changed rows (and of its fsync), and `/readyz`
//! answers 503 while the last one failed. A transaction that changed nothing (a delivery
//! loop turn with nothing to claim) proves nothing and leaves the state as it was. The state
//! clears with the next write that succeeds: an ingest retried by a client, or the delivery
//! loop's bookkeeping.

use std::sync::atomic::{AtomicBool, Ordering};

/// The outcome of the outbox's last writes; shared by the writer, the syncer and `/readyz`.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: AtomicBool,
}

impl WriteHealth {
    /// Records a transaction's outcome (`wrote`: it changed rows). A failure always counts;
    /// a success only when something was written.
    pub(super) fn record<E: std::fmt::Display>(&self, outcome: &Result<(), E>, wrote: bool) {
        match outcome {
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "the outbox cannot take writes; /readyz answers 503");
                }
            }
            Ok(()) if wrote => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("the outbox takes writes again; /readyz answers 200");
                }
            }
            Ok(()) => {}
        }
    }

    /// Whether the last write that changed rows failed.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_holds_until_a_write_succeeds() {
        let health = WriteHealth::default();
        assert!(!health.failing());
        health.record(&Err::<(), _>("disk full"), false);
        assert!(health.failing());
        health.record(&Ok::<(), &str>(()), false);
        assert!(health.failing(), "a transaction that wrote nothing proves nothing");
        health.record(&Ok::<(), &str>(()), true);
        assert!(!health.failing());
    }
}
