//! The `calls` driver: starts calls at a steady rate and posts each call's records to the
//! pushers at the moments they happen, compressed by a speed factor.
//!
//! Clock model: simulated time starts at the wall clock (or `start_ms`) and runs `speed`
//! times faster than wall time. Call `i` starts `i / rate` wall seconds into the run, so its
//! simulated begin time is `start + i * speed / rate` seconds; a record due `d` simulated
//! ms after the call began is posted `d / speed` wall ms after the call started. With
//! `speed > 1` timestamps therefore run ahead of the wall clock, as in a fast-forwarded
//! recording. Within one call, posts are sequential: a status is posted only after the
//! previous one was answered, and each leg's CDR only after its HANGUP was.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::generator::{CallGenerator, GenConfig};
use crate::ingest::IngestClient;
use crate::model::{Call, Payload};
use crate::native::{CdrFormat, LegNumber, NativeSender};
use crate::stats::{CallsSummary, Kind, LiveStats};

/// When a run stops starting new calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunLimit {
    /// After this many calls.
    Count(u64),
    /// After this much wall time (calls in flight then run to their end).
    Duration(Duration),
    /// Only when the stop token is cancelled.
    UntilStopped,
}

/// Everything a `calls` run needs; build with [`CallsOptions::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct CallsOptions {
    /// Base URL of cdr-pusher (`http://127.0.0.1:8081`); `None` skips CDRs. With a native
    /// `cdr_format`: the pusher's base URL (freeswitch), the file (asterisk-csv) or
    /// `host:port` (ucm-tcp).
    pub cdr_url: Option<String>,
    /// How CDRs are sent: SPEC JSON to `/v1/cdrs`, or a switch's native form.
    pub cdr_format: CdrFormat,
    /// Base URL of status-pusher (`http://127.0.0.1:8082`); `None` skips status events.
    pub status_url: Option<String>,
    /// Bearer token for the ingest API.
    pub token: Option<String>,
    /// New calls per wall-clock second.
    pub rate: f64,
    /// When to stop starting calls.
    pub limit: RunLimit,
    /// How much faster than real time calls play out (10 = a 20 s ring takes 2 s).
    pub speed: f64,
    /// Seed of the call generator.
    pub seed: u64,
    /// What calls to generate.
    pub generator: GenConfig,
    /// Most calls in flight at once; the scheduler waits when reached.
    pub max_in_flight: usize,
    /// Timeout of one ingest request.
    pub timeout: Duration,
    /// Simulated clock origin, epoch ms; `None` = the wall clock at the start of the run.
    pub start_ms: Option<i64>,
}

impl CallsOptions {
    /// Defaults: 5 calls/s, 10 calls, real time, seed 42, default mixes.
    pub fn new(cdr_url: Option<String>, status_url: Option<String>) -> Self {
        Self {
            cdr_url,
            cdr_format: CdrFormat::Json,
            status_url,
            token: None,
            rate: 5.0,
            limit: RunLimit::Count(10),
            speed: 1.0,
            seed: 42,
            generator: GenConfig::default(),
            max_in_flight: 10_000,
            timeout: Duration::from_secs(10),
            start_ms: None,
        }
    }

    /// Rejects settings that cannot run.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err("rate must be > 0 calls/s".into());
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err("speed must be > 0".into());
        }
        if self.max_in_flight == 0 {
            return Err("max in flight must be >= 1".into());
        }
        if self.cdr_url.is_none() && self.status_url.is_none() {
            return Err("give at least one of the CDR and status URLs".into());
        }
        if self.cdr_format != CdrFormat::Json && self.cdr_url.is_none() {
            return Err("a native CDR format needs --cdr-url (URL, file or host:port)".into());
        }
        self.generator.validate()
    }
}

/// Current wall clock in epoch ms.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// A configured run; create, optionally watch [`CallsDriver::stats`], then [`run`](Self::run).
pub struct CallsDriver {
    opts: CallsOptions,
    client: Arc<IngestClient>,
    native: Option<Arc<NativeSender>>,
    stats: Arc<LiveStats>,
}

impl CallsDriver {
    /// Validates the options and builds the HTTP client.
    pub fn new(opts: CallsOptions) -> anyhow::Result<Self> {
        opts.validate().map_err(anyhow::Error::msg)?;
        let json_cdrs = opts.cdr_url.as_deref().filter(|_| opts.cdr_format == CdrFormat::Json);
        let client = IngestClient::new(json_cdrs, opts.status_url.as_deref(), opts.token.clone(), opts.timeout)?;
        let native = match (&opts.cdr_url, opts.cdr_format) {
            (Some(target), format) => NativeSender::new(format, target, opts.token.clone(), opts.timeout)?,
            (None, _) => None,
        };
        Ok(Self { opts, client: Arc::new(client), native: native.map(Arc::new), stats: Arc::new(LiveStats::default()) })
    }

    /// Live counters, for a progress display while the run goes on.
    pub fn stats(&self) -> Arc<LiveStats> {
        Arc::clone(&self.stats)
    }

    /// Runs until the limit is reached (or `stop` is cancelled) and every started call has
    /// been posted completely. On `stop`, no new call starts and calls in flight post
    /// their remaining records at once, so every call still ends with HANGUP and CDR.
    pub async fn run(&self, stop: CancellationToken) -> CallsSummary {
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        self.schedule(&stop, &mut tasks).await;
        let starting = started.elapsed();
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                eprintln!("callsim: a call task failed: {e}");
            }
        }
        self.stats.summary(starting, started.elapsed())
    }

    /// Starts calls at the configured rate until the limit or `stop`.
    async fn schedule(&self, stop: &CancellationToken, tasks: &mut JoinSet<()>) {
        let o = &self.opts;
        let mut generator = CallGenerator::new(o.generator.clone(), o.seed);
        let slots = Arc::new(Semaphore::new(o.max_in_flight));
        let wall0 = Instant::now();
        let sim0 = o.start_ms.unwrap_or_else(now_ms);
        let interval = 1.0 / o.rate;
        for i in 0u64.. {
            if matches!(o.limit, RunLimit::Count(n) if i >= n) {
                break;
            }
            let offset = Duration::from_secs_f64(interval * i as f64);
            if matches!(o.limit, RunLimit::Duration(d) if offset >= d) {
                break;
            }
            tokio::select! {
                _ = sleep_until(wall0 + offset) => {}
                _ = stop.cancelled() => break,
            }
            let permit = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => p.expect("semaphore never closed"),
                _ = stop.cancelled() => break,
            };
            let begin = sim0 + (interval * i as f64 * o.speed * 1000.0) as i64;
            let call = generator.next_call(begin);
            self.stats.call_started(call.scenario);
            let play = PlayCall {
                number: i + 1,
                client: Arc::clone(&self.client),
                native: self.native.clone(),
                stats: Arc::clone(&self.stats),
                speed: o.speed,
                stop: stop.clone(),
            };
            tasks.spawn(async move {
                play.run(call).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
    }
}

/// What one call task needs to play its call out.
struct PlayCall {
    /// The call's ordinal in the run, from 1 (numbers the native records' own ids).
    number: u64,
    client: Arc<IngestClient>,
    native: Option<Arc<NativeSender>>,
    stats: Arc<LiveStats>,
    speed: f64,
    stop: CancellationToken,
}

impl PlayCall {
    /// Posts the call's records in order, each at its (compressed) moment.
    async fn run(self, call: Call) {
        let anchor = Instant::now();
        for post in &call.posts {
            let sim_offset_ms = (post.at - call.begin_time).max(0) as f64;
            let due = anchor + Duration::from_secs_f64(sim_offset_ms / 1000.0 / self.speed);
            tokio::select! {
                _ = sleep_until(due) => {}
                _ = self.stop.cancelled() => {}
            }
            let sent = match (&post.payload, &self.native) {
                (Payload::Cdr(cdr), Some(native)) => {
                    let (outcome, latency) = native.send(cdr, LegNumber::of(self.number, cdr)).await;
                    Some((Kind::Cdr, outcome, latency))
                }
                _ => self.client.post(&post.payload).await,
            };
            if let Some((kind, outcome, latency)) = sent {
                self.stats.record(kind, &describe(&post.payload), &outcome, latency);
            }
        }
        self.stats.calls_finished.fetch_add(1, Relaxed);
    }
}

/// A short name of a record for rejection samples: `status sim-000001/CALLER HANGUP`.
fn describe(payload: &Payload) -> String {
    let party = payload.party().map(|p| format!("/{}", p.as_str())).unwrap_or_default();
    match payload {
        Payload::Status(s) => {
            format!("status {}{party} {}", payload.call_id(), s.status.as_str())
        }
        Payload::Cdr(_) => format!("cdr {}{party}", payload.call_id()),
    }
}

/// Convenience for tests and benchmarks: runs to completion without a stop signal.
pub async fn run_calls(opts: CallsOptions) -> anyhow::Result<CallsSummary> {
    let driver = CallsDriver::new(opts)?;
    Ok(driver.run(CancellationToken::new()).await)
}
