//! The retention job: purges finished events in the background, through the store's
//! [`Store::purge`], one small batch at a time (see `outbox::policy` for what goes).
//!
//! Batches follow each other while there is a backlog to purge, each followed by a pause of
//! [`PAUSE_FACTOR`] times what it took (at least [`MIN_PAUSE`]): the purge takes at most a
//! tenth of the writer. What a batch costs ingest is less its own time than its pages: each
//! deleted event dirties a leaf of two indexes keyed at random (its dedup key, its call), and
//! those pages go through the WAL, its fsyncs and its checkpoints, which ingest waits for. So
//! a large history goes at several thousand events a second, not at the writer's full speed,
//! and ingest latency stays where it was meanwhile. Once a sweep has caught up,
//! the job looks again every [`IDLE`].

use std::{sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    outbox::{RetentionPolicy, Store, StoreError},
    telemetry::metrics as m,
};

/// A pause after a batch is this many times the batch's own time.
const PAUSE_FACTOR: u32 = 9;
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
                        (started.elapsed() * PAUSE_FACTOR).clamp(MIN_PAUSE, MAX_PAUSE)
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
