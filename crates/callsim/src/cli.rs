//! Command-line interface: the `calls`, `receive`, `generate` and `bench` subcommands and
//! their options, turned into the library's option structs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bench::{BenchOptions, Phase};
use crate::calls::{CallsOptions, RunLimit};
use crate::generator::GenConfig;
use crate::mix::{parse_scenario_mix, parse_service_mix, Mix};
use crate::model::Disposition;
use crate::native::CdrFormat;
use crate::receive::ReceiverConfig;

/// Carrier call simulator, subscriber test receiver and load driver for voice-push.
#[derive(Debug, Parser)]
#[command(name = "callsim", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate calls and post their status events and CDRs to the pushers in real time.
    Calls(CallsArgs),
    /// Run a webhook receiver that checks and logs what the pushers deliver.
    Receive(ReceiveArgs),
    /// Print generated records as JSON lines, without sending anything.
    Generate(GenerateArgs),
    /// Benchmark already-built pushers end to end on this machine (see the README).
    Bench(BenchArgs),
    /// Play a switch's real-time interface (FreeSWITCH ESL or Asterisk AMI) for status-pusher
    /// to connect to, serving generated calls as events.
    Switch(SwitchArgs),
}

/// Options of the call generator, shared by `calls` and `generate`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Service type shares, e.g. 100=0.7,200=0.3.
    #[arg(long, default_value = "100=0.7,200=0.3", value_parser = parse_service_mix)]
    pub service_mix: Mix<u16>,
    /// Outcome shares: answered, no_answer, busy, failed, cancelled.
    #[arg(
        long,
        default_value = "answered=0.6,no_answer=0.15,busy=0.1,failed=0.05,cancelled=0.1",
        value_parser = parse_scenario_mix
    )]
    pub scenario_mix: Mix<Disposition>,
    /// Account ids to spread calls over (comma-separated); none = no accountId.
    #[arg(long, value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// Share of service-100 calls that are two-leg callbacks (sub-service 105).
    #[arg(long, default_value_t = 0.1)]
    pub callback_share: f64,
    /// Seed of the generator; random (and printed) when omitted.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Prefix of call ids; default `sim<start ms>-`, unique per run.
    #[arg(long)]
    pub call_id_prefix: Option<String>,
}

impl GenArgs {
    /// The generator configuration; the default call-id prefix derives from `start_ms`.
    pub fn config(&self, start_ms: i64) -> GenConfig {
        GenConfig {
            service_mix: self.service_mix.clone(),
            scenario_mix: self.scenario_mix.clone(),
            accounts: self.accounts.clone(),
            callback_share: self.callback_share,
            call_id_prefix: self.call_id_prefix.clone().unwrap_or_else(|| format!("sim{start_ms}-")),
        }
    }
}

/// Options of `callsim calls`.
#[derive(Debug, Args)]
pub struct CallsArgs {
    /// Base URL of cdr-pusher; omit to send no CDRs. With --cdr-format asterisk-csv: the
    /// file to append to; ucm-tcp: host:port of the UCM source's TCP listener.
    #[arg(long)]
    pub cdr_url: Option<String>,
    /// How CDRs are sent: SPEC JSON to /v1/cdrs, or a switch's native form (freeswitch:
    /// mod_json_cdr to /v1/sources/freeswitch; asterisk-csv: Master.csv lines; ucm-tcp: UCM
    /// real-time output records over TCP).
    #[arg(long, value_enum, default_value_t = CdrFormat::Json)]
    pub cdr_format: CdrFormat,
    /// Base URL of status-pusher; omit to send no status events.
    #[arg(long)]
    pub status_url: Option<String>,
    /// New calls per second (wall clock).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// Stop starting calls after this many.
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// Stop starting calls after this long (e.g. 60s, 5m); calls in flight still end.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Time compression: 10 plays a 20 s ring in 2 s.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Origin of the simulated clock, epoch ms (default: now): with the same --seed, two runs
    /// send identical records.
    #[arg(long)]
    pub start: Option<i64>,
    /// Bearer token for the ingest API.
    #[arg(long, env = "CALLSIM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Most calls in flight at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// Timeout of one ingest request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the final summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Generator options.
    #[command(flatten)]
    pub generator: GenArgs,
}

impl CallsArgs {
    /// The driver options, with the seed chosen by the caller.
    pub fn options(&self, seed: u64, start_ms: i64) -> CallsOptions {
        let limit = match (self.count, self.duration) {
            (Some(n), _) => RunLimit::Count(n),
            (None, Some(d)) => RunLimit::Duration(d),
            (None, None) => RunLimit::UntilStopped,
        };
        CallsOptions {
            token: self.token.clone(),
            rate: self.rate,
            limit,
            speed: self.speed,
            seed,
            generator: self.generator.config(start_ms),
            max_in_flight: self.max_in_flight,
            timeout: self.timeout,
            start_ms: Some(start_ms),
            cdr_format: self.cdr_format,
            ..CallsOptions::new(self.cdr_url.clone(), self.status_url.clone())
        }
    }
}

/// Options of `callsim receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Subscriber secret (whsec_...); turns on signature verification.
    #[arg(long, env = "CALLSIM_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Probability (0-1) of answering --status instead of 200.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// HTTP status of injected failures.
    #[arg(long, default_value_t = 500)]
    pub status: u16,
    /// Wait before answering each push (e.g. 100ms).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Append every push as one JSON line to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of failure injection (random when omitted).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Do not print a line per push (the summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
    /// The subscriber has a `statuses:` filter: a call's sequence numbers skip the statuses
    /// it does not get, so a gap is not an order violation (going backwards still is).
    #[arg(long)]
    pub filtered: bool,
}

impl ReceiveArgs {
    /// The receiver configuration.
    pub fn config(&self) -> ReceiverConfig {
        ReceiverConfig {
            secret: self.secret.clone(),
            fail_rate: self.fail_rate,
            fail_status: self.status,
            delay: self.delay,
            out: self.out.clone(),
            seed: self.seed,
            print: !self.quiet,
            gaps_expected: self.filtered,
            ..ReceiverConfig::default()
        }
    }
}

/// Which records `generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordKind {
    /// Status events and CDRs.
    All,
    /// Status events only.
    Status,
    /// CDRs only.
    Cdr,
}

/// Options of `callsim generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many calls.
    #[arg(long, default_value_t = 10)]
    pub count: u64,
    /// Seconds between call starts (simulated).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Epoch ms of the first call; default now.
    #[arg(long, alias = "start")]
    pub start_ms: Option<i64>,
    /// Which records to print.
    #[arg(long, value_enum, default_value_t = RecordKind::All)]
    pub kind: RecordKind,
    /// Generator options.
    #[command(flatten)]
    pub generator: GenArgs,
}

/// Options of `callsim switch`: one of `--esl` or `--ami`.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// Listen as FreeSWITCH's event socket here (e.g. 127.0.0.1:8021).
    #[arg(long, conflicts_with = "ami", required_unless_present = "ami")]
    pub esl: Option<SocketAddr>,
    /// The event socket's password (`sources.esl.password`).
    #[arg(long, default_value = "ClueCon")]
    pub password: String,
    /// Listen as Asterisk's manager interface here (e.g. 127.0.0.1:5038).
    #[arg(long)]
    pub ami: Option<SocketAddr>,
    /// The manager user (`sources.ami.username`).
    #[arg(long, default_value = "voicepush")]
    pub username: String,
    /// Its secret (`sources.ami.secret`).
    #[arg(long, default_value = "voicepush")]
    pub secret: String,
    /// Calls to serve, then exit; 0 = until interrupted.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Calls per second; 0 = as fast as the connection takes them.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Generator options.
    #[command(flatten)]
    pub generator: GenArgs,
}

/// Options of `callsim bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Directory holding the built `cdr-pusher` and `status-pusher` (nothing is built).
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,
    /// Events of the ingest and end-to-end phases [default: 100000; with --smoke 2000].
    #[arg(long)]
    pub events: Option<u64>,
    /// Events queued while the receiver is down [default: 1000000; with --smoke 5000].
    #[arg(long)]
    pub queued: Option<u64>,
    /// Events queued in the many-subscribers phase, each delivered to every subscriber
    /// [default: 10000; with --smoke 100].
    #[arg(long)]
    pub many_events: Option<u64>,
    /// Subscribers of the many-subscribers phase [default: 100; at least 2].
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Concurrent clients of the sink and ingest loads.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// A quick run (a few thousand events, 2 s latency steps) that checks the bench works.
    #[arg(long)]
    pub smoke: bool,
    /// Also write every figure, check and note to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run only these phases (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Phase>,
    /// Directory for the temporary databases [default: the system temp dir].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Compare with the pushers in this directory: each round runs the phases with
    /// `--bin-dir`, then with these, and the figures are shown side by side.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Run the end-to-end phases on this PostgreSQL server (`postgres://user:pass@host/db`
    /// of a role that may create databases; a new database per phase).
    #[arg(long)]
    pub database: Option<String>,
    /// Replicas of the pusher on `--database` in the end-to-end phases.
    #[arg(long, default_value_t = 1, requires = "database")]
    pub replicas: usize,
    /// Rounds of a comparison (with `--against`).
    #[arg(long, default_value_t = 1, requires = "against")]
    pub rounds: usize,
}

impl BenchArgs {
    /// The bench options.
    pub fn options(&self) -> BenchOptions {
        BenchOptions {
            bin_dir: self.bin_dir.clone(),
            events: self.events,
            queued: self.queued,
            many_events: self.many_events,
            subscribers: self.subscribers,
            concurrency: self.concurrency,
            smoke: self.smoke,
            only: self.only.clone(),
            work_dir: self.work_dir.clone(),
            database: self.database.clone(),
            replicas: self.replicas.max(1),
        }
    }
}
