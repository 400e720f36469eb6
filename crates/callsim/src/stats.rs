//! Counters of a `calls` run: live atomics that the progress bar reads while the run goes
//! on, and the summary the run returns at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::model::Disposition;

/// How many non-accepted answers are kept verbatim for the summary.
const MAX_SAMPLES: usize = 5;
/// How much of a rejection body is kept.
const SAMPLE_CHARS: usize = 300;

/// Which pusher a post went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// status-pusher.
    Status,
    /// cdr-pusher.
    Cdr,
}

/// What the ingest API answered to one post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostOutcome {
    /// 2xx with `"duplicate":false`.
    Accepted,
    /// 2xx with `"duplicate":true`.
    Duplicate,
    /// A 4xx: the pusher refused the record (validation, auth, 409, rate limit...).
    Rejected {
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// A 5xx, a timeout or a transport error.
    Error(String),
}

/// Live counters of one kind of post.
#[derive(Debug, Default)]
pub struct KindCounters {
    /// Posts attempted.
    pub sent: AtomicU64,
    /// 2xx, not duplicate.
    pub accepted: AtomicU64,
    /// 2xx, duplicate.
    pub duplicates: AtomicU64,
    /// 4xx.
    pub rejected: AtomicU64,
    /// 5xx or transport errors.
    pub errors: AtomicU64,
}

impl KindCounters {
    /// A consistent-enough copy for display.
    pub fn snapshot(&self) -> KindSummary {
        KindSummary {
            sent: self.sent.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

/// Shared, lock-free (apart from samples) counters of a running `calls` driver.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Calls started.
    pub calls_started: AtomicU64,
    /// Calls whose every record was posted.
    pub calls_finished: AtomicU64,
    /// Status event posts.
    pub status: KindCounters,
    /// CDR posts.
    pub cdr: KindCounters,
    scenarios: [AtomicU64; 5],
    latencies_us: Mutex<Vec<u32>>,
    samples: Mutex<Vec<String>>,
}

impl LiveStats {
    /// Counts a started call with its scenario.
    pub fn call_started(&self, scenario: Disposition) {
        self.calls_started.fetch_add(1, Relaxed);
        self.scenarios[scenario.index()].fetch_add(1, Relaxed);
    }

    /// Counts one post and its answer; `what` names the record for rejection samples.
    pub fn record(&self, kind: Kind, what: &str, outcome: &PostOutcome, latency: Duration) {
        let counters = match kind {
            Kind::Status => &self.status,
            Kind::Cdr => &self.cdr,
        };
        counters.sent.fetch_add(1, Relaxed);
        let sample = match outcome {
            PostOutcome::Accepted => {
                counters.accepted.fetch_add(1, Relaxed);
                None
            }
            PostOutcome::Duplicate => {
                counters.duplicates.fetch_add(1, Relaxed);
                None
            }
            PostOutcome::Rejected { status, body } => {
                counters.rejected.fetch_add(1, Relaxed);
                Some(format!("{what}: HTTP {status} {body}"))
            }
            PostOutcome::Error(e) => {
                counters.errors.fetch_add(1, Relaxed);
                Some(format!("{what}: {e}"))
            }
        };
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.lock().expect("latency lock").push(micros);
        if let Some(sample) = sample {
            let mut samples = self.samples.lock().expect("sample lock");
            if samples.len() < MAX_SAMPLES {
                samples.push(sample.chars().take(SAMPLE_CHARS).collect());
            }
        }
    }

    /// The final summary of a run that started calls for `starting` and ended after
    /// `elapsed`.
    pub fn summary(&self, starting: Duration, elapsed: Duration) -> CallsSummary {
        let scenarios = Disposition::ALL
            .iter()
            .map(|d| (d.cli_name().to_string(), self.scenarios[d.index()].load(Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut latencies = self.latencies_us.lock().expect("latency lock").clone();
        CallsSummary {
            calls: self.calls_started.load(Relaxed),
            calls_finished: self.calls_finished.load(Relaxed),
            scenarios,
            status: self.status.snapshot(),
            cdr: self.cdr.snapshot(),
            latency: LatencySummary::from_micros(&mut latencies),
            starting,
            elapsed,
            samples: self.samples.lock().expect("sample lock").clone(),
        }
    }
}

/// Counts of one kind of post, or of all posts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindSummary {
    /// Posts attempted.
    pub sent: u64,
    /// 2xx, not duplicate.
    pub accepted: u64,
    /// 2xx with `"duplicate":true`.
    pub duplicates: u64,
    /// 4xx.
    pub rejected: u64,
    /// 5xx or transport errors.
    pub errors: u64,
}

impl std::ops::Add for KindSummary {
    type Output = KindSummary;

    fn add(self, o: KindSummary) -> KindSummary {
        KindSummary {
            sent: self.sent + o.sent,
            accepted: self.accepted + o.accepted,
            duplicates: self.duplicates + o.duplicates,
            rejected: self.rejected + o.rejected,
            errors: self.errors + o.errors,
        }
    }
}

/// Ingest latency of the posts (request to response).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Posts measured.
    pub count: u64,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
}

impl LatencySummary {
    /// Percentiles of the given microsecond samples (sorted in place).
    pub fn from_micros(samples: &mut [u32]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            f64::from(samples[i]) / 1000.0
        };
        Self { count: samples.len() as u64, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

/// What a `calls` run did, returned by [`crate::calls::CallsDriver::run`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CallsSummary {
    /// Calls started.
    pub calls: u64,
    /// Calls whose every record was posted.
    pub calls_finished: u64,
    /// Calls per scenario name (`answered`, `no_answer`, ...).
    pub scenarios: BTreeMap<String, u64>,
    /// Status event posts.
    pub status: KindSummary,
    /// CDR posts.
    pub cdr: KindSummary,
    /// Ingest latency over all posts.
    pub latency: LatencySummary,
    /// Wall time spent starting calls (the rate applies to this).
    #[serde(serialize_with = "secs")]
    pub starting: Duration,
    /// Wall time of the whole run, until the last call ended.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
    /// The first few rejections and errors, verbatim.
    pub samples: Vec<String>,
}

impl CallsSummary {
    /// Both kinds together.
    pub fn total(&self) -> KindSummary {
        self.status + self.cdr
    }
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
