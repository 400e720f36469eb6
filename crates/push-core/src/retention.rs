//! The retention job: purges finished events in the background, through the store's
//! [`Store::purge`], one small batch at a time (see `outbox::policy` for what goes).
//!
//! Batches follow each other while there is a backlog to purge, each followed by a pause of
//! four times what it took (at least [`MIN_PAUSE`]): the purge takes at most a fifth of the
//! writer, and its pages reach the disk with the next ingest's fsync a little at a time, so
//! ingest latency stays where it was while a large history goes. Once a sweep has caught up,
//! the job looks again every [`IDLE`].

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    outbox::{RetentionPolicy, Store, StoreError},
    telemetry::metrics as m,
};

/// Shortest pause between two batches while more is waiting.
const MIN_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between two batches while more is waiting.
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// Pause once a sweep found nothing more to purge (and after a failed batch).
pub const IDLE: Duration = Duration::from_secs(1);

/// Starts the job; it ends when `stop` is cancelled or the store has stopped.
pub fn spawn(
    store: Arc<dyn Store>,
    policy: RetentionPolicy,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    m::purged(0);
    tokio::spawn(async move {
        loop {
            let started = std::time::Instant::now();
            let pause = match store.purge(policy, clock.now_ms()).await {
                Ok(report) => {
                    if report.events > 0 {
                        m::purged(report.events);
                        tracing::debug!(events = report.events, deliveries = report.deliveries, "purged");
                    }
                    if report.more {
                        (started.elapsed() * 4).clamp(MIN_PAUSE, MAX_PAUSE)
                    } else {
                        IDLE
                    }
                }
                Err(StoreError::Stopped) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "retention: a purge batch failed; trying again");
                    IDLE
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    })
}
