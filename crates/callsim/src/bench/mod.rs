//! `callsim bench`: measures the pushers end to end on this machine with already-built
//! binaries, and the same load generator against trivial in-process sinks, so that every
//! figure also reads as a share of the raw loopback HTTP limit.
//!
//! Phases (each starts its own pusher with a fresh database in a temporary directory and
//! stops it at the end): `sink`, `ingest`, `e2e-cdr`, `e2e-status`, `latency`, `backlog`,
//! `many-subscribers`, `purge`, `soak`, `source-freeswitch`, `source-asterisk`, `source-ucm`.
//! See the crate README for what each figure means.

mod backlog;
pub mod compare;
mod latency;
pub mod load;
mod many;
pub mod paced;
mod phases;
pub mod pusher;
pub mod receiver;
pub mod report;
mod retention;
pub mod sink;
mod source_esl;
mod sources;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use serde_json::json;

use self::pusher::{Program, Pusher, Setup};
use self::report::{BenchReport, Check, Figure, Machine};

/// A phase of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    /// Trivial in-process sinks: the raw loopback limits.
    Sink,
    /// Durable ingest into cdr-pusher without subscribers.
    Ingest,
    /// cdr-pusher end to end.
    E2eCdr,
    /// status-pusher end to end, per-call order checked.
    E2eStatus,
    /// 202-to-first-attempt latency at steady rates.
    Latency,
    /// A queue built up while the receiver is down, then drained.
    Backlog,
    /// The same with many subscribers: the drain's rate, and how evenly they are served.
    ManySubscribers,
    /// Ingest latency while a --queued history is purged by retention.
    Purge,
    /// Steady load with a short retention: the database stops growing.
    Soak,
    /// FreeSWITCH mod_json_cdr POSTs into `sources.freeswitch`, end to end.
    SourceFreeswitch,
    /// Asterisk `Master.csv` lines appended to a file `sources.asterisk_csv` follows.
    SourceAsterisk,
    /// Grandstream UCM records over TCP into `sources.ucm.tcp_listen`.
    SourceUcm,
    /// mod_cti items on a Redis list into cdr-pusher's Redis source.
    SourceRedis,
    /// FreeSWITCH event-socket events into status-pusher's `sources.esl` (it connects).
    SourceEsl,
}

impl Phase {
    /// All phases, in running order.
    pub const ALL: [Phase; 14] = [
        Phase::Sink,
        Phase::Ingest,
        Phase::E2eCdr,
        Phase::E2eStatus,
        Phase::Latency,
        Phase::Backlog,
        Phase::ManySubscribers,
        Phase::Purge,
        Phase::Soak,
        Phase::SourceFreeswitch,
        Phase::SourceAsterisk,
        Phase::SourceUcm,
        Phase::SourceRedis,
        Phase::SourceEsl,
    ];

    /// The phase's name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Sink => "sink",
            Phase::Ingest => "ingest",
            Phase::E2eCdr => "e2e-cdr",
            Phase::E2eStatus => "e2e-status",
            Phase::Latency => "latency",
            Phase::Backlog => "backlog",
            Phase::ManySubscribers => "many-subscribers",
            Phase::Purge => "purge",
            Phase::Soak => "soak",
            Phase::SourceFreeswitch => "source-freeswitch",
            Phase::SourceAsterisk => "source-asterisk",
            Phase::SourceUcm => "source-ucm",
            Phase::SourceRedis => "source-redis",
            Phase::SourceEsl => "source-esl",
        }
    }
}

/// What to run, as given on the command line.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Directory with `cdr-pusher` and `status-pusher`.
    pub bin_dir: PathBuf,
    /// Events of the ingest and end-to-end phases (default 100,000; smoke 2,000).
    pub events: Option<u64>,
    /// Events queued in the backlog phase (default 1,000,000; smoke 5,000).
    pub queued: Option<u64>,
    /// Events queued in the many-subscribers phase, each for every subscriber (default
    /// 10,000; smoke 100).
    pub many_events: Option<u64>,
    /// Subscribers of the many-subscribers phase (default 100, at least 2).
    pub subscribers: Option<usize>,
    /// Concurrent clients of the closed-loop loads.
    pub concurrency: usize,
    /// Shrink everything to a few thousand events and short phases.
    pub smoke: bool,
    /// Phases to run; empty = all.
    pub only: Vec<Phase>,
    /// Where the temporary directories (databases) go; default the system's.
    pub work_dir: Option<PathBuf>,
    /// A PostgreSQL server (`postgres://…` of a role that may create databases): the
    /// end-to-end phases keep their outbox there, a new database each, instead of SQLite.
    pub database: Option<String>,
    /// Replicas of the pusher on that database in the end-to-end phases (the load goes to
    /// each in turn).
    pub replicas: usize,
}

/// The sizes and time bounds a run uses, after `--smoke`.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Events of the ingest and end-to-end phases.
    pub events: u64,
    /// Events queued in the backlog phase.
    pub queued: u64,
    /// Events queued in the many-subscribers phase, each for every subscriber.
    pub many_events: u64,
    /// Subscribers of the many-subscribers phase.
    pub subscribers: usize,
    /// Longest the many-subscribers drain may take before the phase gives up on the
    /// subscribers still missing events (it also gives up after `stall` without progress).
    pub many_limit: Duration,
    /// Concurrent clients of the closed-loop loads.
    pub concurrency: usize,
    /// Longest a closed-loop load may run.
    pub load_limit: Duration,
    /// How long each sink load runs.
    pub sink_window: Duration,
    /// Length of each steady-rate step of the latency phase.
    pub step: Duration,
    /// Waiting for deliveries gives up after this long without progress.
    pub stall: Duration,
    /// Waiting for deliveries gives up after this long in all.
    pub wait_limit: Duration,
}

impl Sizes {
    /// Resolves the options.
    pub fn from_options(o: &BenchOptions) -> Sizes {
        let (events, queued, many) = if o.smoke { (2_000, 5_000, 100) } else { (100_000, 1_000_000, 10_000) };
        let many_events = o.many_events.unwrap_or(many).max(100);
        let subscribers = o.subscribers.unwrap_or(DEFAULT_SUBSCRIBERS).max(2);
        Sizes {
            events: o.events.unwrap_or(events).max(100),
            queued: o.queued.unwrap_or(queued).max(1_000),
            many_events,
            subscribers,
            many_limit: many_limit(many_events * subscribers as u64, o.smoke),
            concurrency: o.concurrency.max(1),
            load_limit: Duration::from_secs(if o.smoke { 20 } else { 300 }),
            sink_window: Duration::from_secs(if o.smoke { 1 } else { 5 }),
            step: Duration::from_secs(if o.smoke { 2 } else { 10 }),
            stall: Duration::from_secs(if o.smoke { 15 } else { 30 }),
            wait_limit: Duration::from_secs(if o.smoke { 60 } else { 1_800 }),
        }
    }
}

/// Subscribers of the many-subscribers phase unless `--subscribers` says otherwise.
pub const DEFAULT_SUBSCRIBERS: usize = 100;

/// The many-subscribers drain's time limit for `deliveries`: a fixed margin plus the time
/// they take at 5,000 per second (release drains run at 18-30k/s on the bench machine), so
/// that hitting the limit means subscribers were left unserved rather than a slow machine.
fn many_limit(deliveries: u64, smoke: bool) -> Duration {
    let margin = if smoke { 20 } else { 60 };
    Duration::from_secs(margin + deliveries / 5_000)
}

/// What the phases share: options, sizes and the report being filled.
pub struct Ctx {
    /// Options.
    pub options: BenchOptions,
    /// Sizes.
    pub sizes: Sizes,
    /// The report so far.
    pub report: BenchReport,
}

impl Ctx {
    /// Adds a figure.
    pub fn figure(&mut self, figure: Figure) {
        self.report.figures.push(figure);
    }

    /// Adds a correctness count (to the same check of the phase, if it exists).
    pub fn check(&mut self, phase: Phase, check: &str, count: u64) {
        let existing = self.report.checks.iter_mut().find(|c| c.phase == phase.name() && c.check == check);
        if let Some(c) = existing {
            c.count += count;
            return;
        }
        self.report.checks.push(Check { phase: phase.name().to_string(), check: check.to_string(), count });
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.report.notes.push(note.into());
    }

    /// Creates a temporary directory for one phase's database.
    pub fn temp_dir(&self, phase: Phase) -> anyhow::Result<tempfile::TempDir> {
        let mut builder = tempfile::Builder::new();
        let prefix = format!("callsim-bench-{}-", phase.name());
        builder.prefix(&prefix);
        match &self.options.work_dir {
            Some(dir) => builder.tempdir_in(dir),
            None => builder.tempdir(),
        }
        .context("creating a temporary directory")
    }

    /// Starts `program` in a fresh temporary directory.
    pub fn pusher(&self, phase: Phase, program: Program, setup: &Setup) -> anyhow::Result<(tempfile::TempDir, Pusher)> {
        let dir = self.temp_dir(phase)?;
        let pusher = Pusher::start(&self.options.bin_dir, program, dir.path(), setup)?;
        Ok((dir, pusher))
    }
}

/// Runs the selected phases and returns the finished report (whose `ok` says whether every
/// correctness check passed). Errors only when a phase could not run at all.
pub async fn run(options: BenchOptions) -> anyhow::Result<BenchReport> {
    let started = Instant::now();
    let sizes = Sizes::from_options(&options);
    let probe = options.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let report = BenchReport {
        machine: Machine::detect(&probe),
        options: json!({
            "binDir": options.bin_dir, "events": sizes.events, "queued": sizes.queued,
            "manyEvents": sizes.many_events, "subscribers": sizes.subscribers,
            "concurrency": sizes.concurrency, "smoke": options.smoke,
            "stepSecs": sizes.step.as_secs_f64(), "workDir": probe,
        }),
        ..BenchReport::default()
    };
    let mut ctx = Ctx { options, sizes, report };
    for phase in Phase::ALL {
        if !ctx.options.only.is_empty() && !ctx.options.only.contains(&phase) {
            continue;
        }
        // Each phase starts with the disk idle: the previous phase's database (deleted with
        // its temp dir) is not still being written back while this one waits for fsyncs.
        let _ = tokio::task::spawn_blocking(nix::unistd::sync).await;
        eprintln!("bench: {} ...", phase.name());
        let phase_started = Instant::now();
        phases::run(&mut ctx, phase).await.with_context(|| format!("phase {}", phase.name()))?;
        eprintln!("bench: {} done in {:.1} s", phase.name(), phase_started.elapsed().as_secs_f64());
    }
    ctx.report.elapsed_secs = started.elapsed().as_secs_f64();
    ctx.report.finish();
    Ok(ctx.report)
}

/// Runs the selected phases `rounds` times with each of two builds, alternating (see
/// [`compare`]): `options.bin_dir` first, then `against`, in every round.
pub async fn run_compared(
    options: BenchOptions,
    against: PathBuf,
    rounds: usize,
) -> anyhow::Result<compare::Comparison> {
    let mut done = Vec::new();
    for round in 1..=rounds.max(1) {
        eprintln!("bench: round {round}: {}", options.bin_dir.display());
        let first = run(options.clone()).await?;
        eprintln!("bench: round {round}: {}", against.display());
        let second = run(BenchOptions { bin_dir: against.clone(), ..options.clone() }).await?;
        done.push([first, second]);
    }
    Ok(compare::Comparison::new(done))
}
