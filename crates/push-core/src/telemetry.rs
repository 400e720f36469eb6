//! Logs and metrics: installs the global subscriber and recorder once; everything else only
//! emits events through the helpers here.
//!
//! Logs go to stdout and, when `log.dir` is set, to daily files named
//! `<program>.<YYYY-MM-DD>.log`. Every attempt is one line with eventId, callId, subscriber,
//! attempt, HTTP status or error, and latency.

use std::{io::IsTerminal as _, sync::OnceLock};

use anyhow::Context as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_appender::{non_blocking::WorkerGuard, rolling};
use tracing_subscriber::{fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _, EnvFilter, Layer as _};

use crate::config::LogSettings;

/// Keeps the log file writer alive; dropping it flushes the file.
pub struct LogGuard {
    _file: Option<WorkerGuard>,
}

/// Installs logging for `program`: `RUST_LOG` or `log.level`, stdout, and the daily files.
pub fn init(program: &str, log: &LogSettings) -> anyhow::Result<LogGuard> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let stdout = fmt::layer().with_ansi(std::io::stdout().is_terminal()).with_filter(filter());
    let (file, guard) = if log.dir.is_empty() {
        (None, None)
    } else {
        std::fs::create_dir_all(&log.dir).with_context(|| format!("creating log.dir {}", log.dir))?;
        let appender = rolling::Builder::new()
            .rotation(rolling::Rotation::DAILY)
            .filename_prefix(program)
            .filename_suffix("log")
            .build(&log.dir)
            .with_context(|| format!("opening daily log files in {}", log.dir))?;
        let (writer, guard) =
            tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(appender);
        (Some(fmt::layer().with_ansi(false).with_writer(writer).with_filter(filter())), Some(guard))
    };
    tracing_subscriber::registry().with(stdout).with(file).try_init().context("installing the log subscriber")?;
    Ok(LogGuard { _file: guard })
}

/// Prometheus metrics of both programs, labelled by subscriber where it applies.
pub mod metrics {
    use super::*;

    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    /// How often histogram samples are folded into their buckets without a scrape.
    const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    /// Installs the process-wide recorder (once) and returns the handle `/metrics` renders.
    pub fn handle() -> PrometheusHandle {
        HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full("voice_push_attempt_latency_seconds".into()),
                        &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
                    )
                    .expect("bucket list is not empty");
                let recorder = builder.build_recorder();
                let handle = recorder.handle();
                // Histogram samples pile up until they are folded into buckets: by a scrape
                // of /metrics, or here, so a process nobody scrapes does not grow.
                let upkeep = handle.clone();
                let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
                // Another recorder may already be installed (tests); this one then only renders.
                let _ = ::metrics::set_global_recorder(recorder);
                handle
            })
            .clone()
    }

    /// Counts accepted events and duplicates of one ingest request.
    pub fn ingested(accepted: u64, duplicates: u64) {
        ::metrics::counter!("voice_push_events_accepted_total").increment(accepted);
        ::metrics::counter!("voice_push_events_duplicate_total").increment(duplicates);
    }

    /// Counts events purged by retention (`voice_push_purged_total`; 0 registers it).
    pub fn purged(events: u64) {
        ::metrics::counter!("voice_push_purged_total").increment(events);
    }

    /// Sets `voice_push_oldest_due_age_seconds{subscriber}`: how long the subscriber's oldest
    /// due delivery has waited for a claim, 0 when nothing due waits (a gauge has no null).
    /// Set by each scrape of `/metrics`, so it also covers a subscriber that is no longer
    /// configured (no handle of its own) but still has deliveries in the outbox.
    pub fn oldest_due_age(subscriber: &str, seconds: f64) {
        ::metrics::gauge!("voice_push_oldest_due_age_seconds", "subscriber" => subscriber.to_string()).set(seconds);
    }

    /// One subscriber's metric handles, registered once so the delivery path only touches
    /// atomics (no label allocation or registry lookup per attempt).
    #[derive(Clone)]
    pub struct SubscriberMetrics {
        /// `voice_push_queue_depth`: deliveries pending.
        pub queue_depth: ::metrics::Gauge,
        /// `voice_push_subscriber_state`: 0 closed, 1 open (breaker), 2 paused, 3 removed.
        pub state: ::metrics::Gauge,
        delivered: ::metrics::Counter,
        failed: ::metrics::Counter,
        dead: ::metrics::Counter,
        latency: ::metrics::Histogram,
    }

    impl std::fmt::Debug for SubscriberMetrics {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SubscriberMetrics")
        }
    }

    impl SubscriberMetrics {
        /// Counts one finished attempt: its latency, and delivered, failed or (failed and) dead.
        pub fn attempt(&self, latency: std::time::Duration, delivered: bool, dead: bool) {
            self.latency.record(latency.as_secs_f64());
            match (delivered, dead) {
                (true, _) => self.delivered.increment(1),
                (false, false) => self.failed.increment(1),
                (false, true) => {
                    self.failed.increment(1);
                    self.dead.increment(1);
                }
            }
        }

        /// Registers (or finds) the series labelled `subscriber`.
        pub fn new(subscriber: &str) -> Self {
            handle();
            let label = || [("subscriber", subscriber.to_string())];
            SubscriberMetrics {
                queue_depth: ::metrics::gauge!("voice_push_queue_depth", &label()),
                state: ::metrics::gauge!("voice_push_subscriber_state", &label()),
                delivered: ::metrics::counter!("voice_push_delivered_total", &label()),
                failed: ::metrics::counter!("voice_push_attempts_failed_total", &label()),
                dead: ::metrics::counter!("voice_push_dead_total", &label()),
                latency: ::metrics::histogram!("voice_push_attempt_latency_seconds", &label()),
            }
        }
    }
}
