//! Configuration: built-in defaults, then the YAML file, then `VOICE_PUSH__...` variables.
//!
//! This is the only module that reads configuration files or environment variables. The
//! defaults are the repository's own `config/config.yaml`, compiled in, so the programs start
//! from any working directory; a file given with `--config` (or `VOICE_PUSH_CONFIG`) and the
//! environment override them key by key. Everything is validated once, at start, and an
//! invalid value stops the program with a message naming its key.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

mod sources;
mod validate;

pub use self::sources::{
    AmiSettings, AsteriskCsvSettings, CsvColumns, CsvLayout, EslSettings, FreeswitchSettings, RedisSettings,
    SourcesSettings, UcmSettings,
};

use base64::Engine as _;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// The defaults every program starts from: the documented `config/config.yaml`.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../../../config/config.yaml");

/// Prefix of environment overrides: `VOICE_PUSH__DELIVERY__TIMEOUT=5s`.
pub const ENV_PREFIX: &str = "VOICE_PUSH";

/// Keys whose environment override is a comma-separated list.
const LIST_KEYS: [&str; 3] = ["retry.schedule", "ingest.auth_tokens", "ingest.allowed_ips"];

/// Which of the two pushers a process is; picks its section of the config and its API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `cdr-pusher`: call detail records, no ordering between records.
    Cdr,
    /// `status-pusher`: call status events, delivered in per-call order.
    Status,
}

impl Service {
    /// Program name, used for log files and the `User-Agent`-independent log fields.
    pub fn program(self) -> &'static str {
        match self {
            Service::Cdr => "cdr-pusher",
            Service::Status => "status-pusher",
        }
    }
}

/// A secret (token, signing key) that never shows up in `Debug` output or logs.
#[derive(Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must not be logged.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret value, for the few places that must compare or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The whole validated configuration of one program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Log level and daily log files.
    pub log: LogSettings,
    /// Retry schedule of failed attempts.
    pub retry: RetrySettings,
    /// Outbound attempt limits.
    pub delivery: DeliverySettings,
    /// When a failing subscriber stops being attempted, and how it is probed.
    #[serde(default)]
    pub breaker: BreakerSettings,
    /// The PBX-facing ingest API.
    pub ingest: IngestSettings,
    /// The operations API.
    pub admin: AdminSettings,
    /// Connection limits of the listener.
    pub server: ServerSettings,
    /// How long finished events are kept.
    pub outbox: OutboxSettings,
    /// cdr-pusher's listener and database.
    pub cdr: ServiceSettings,
    /// status-pusher's listener and database.
    pub status: ServiceSettings,
    /// Who receives what.
    pub subscribers: Vec<Subscriber>,
    /// Switches read natively (all off by default).
    #[serde(default)]
    pub sources: SourcesSettings,
}

/// `log:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Default filter when `RUST_LOG` is not set.
    pub level: String,
    /// Directory of daily log files; empty for stdout only.
    pub dir: String,
}

/// `retry:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Wait before retry 1..N, counted from the failure before it.
    #[serde(deserialize_with = "durations")]
    pub schedule: Vec<Duration>,
    /// Longest wait a subscriber's `Retry-After` can ask for.
    #[serde(with = "humantime_serde", default = "default_retry_after_cap")]
    pub retry_after_cap: Duration,
}

/// `delivery:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Deadline of one attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Concurrent attempts of the whole program.
    pub max_in_flight: usize,
    /// Concurrent attempts to one subscriber, so one slow subscriber cannot take them all.
    pub max_in_flight_per_subscriber: usize,
    /// How long in-flight attempts may run on after a shutdown signal.
    #[serde(with = "humantime_serde", default = "default_shutdown_grace")]
    pub shutdown_grace: Duration,
    /// How long a replica's claim on a delivery lasts in a shared (PostgreSQL) outbox before
    /// another replica may attempt it: longer than `timeout`, so a live replica's attempt is
    /// never taken over.
    #[serde(with = "humantime_serde", default = "default_lease")]
    pub lease: Duration,
}

/// `breaker:` section: a subscriber that fails `failures` attempts in a row is not
/// attempted (its deliveries keep their schedules) except for one probe at a time, `probe`
/// after it opened, then at doubling intervals up to `probe_max`; the first success closes it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// Consecutive failed attempts that open the breaker; 0 turns breakers off.
    pub failures: u32,
    /// First wait before a probe.
    #[serde(with = "humantime_serde")]
    pub probe: Duration,
    /// Longest wait between probes.
    #[serde(with = "humantime_serde")]
    pub probe_max: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { failures: 10, probe: Duration::from_secs(5), probe_max: Duration::from_secs(300) }
    }
}

/// `ingest:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Accepted Bearer tokens; empty means no authentication.
    pub auth_tokens: Vec<Secret>,
    /// Allowed client networks; empty means everyone.
    #[serde(deserialize_with = "networks")]
    pub allowed_ips: Vec<IpNet>,
    /// Requests per second per client address; 0 turns the limit off.
    pub rate_limit_per_second: u32,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

/// `server:` section: what one client's connections may hold, so that slow or idle clients
/// cannot exhaust the server (see `server`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// A request head must arrive whole within this time of its first byte.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and nothing received is closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog until one closes. 0: from
    /// the open-files limit (`server::auto_connection_cap`).
    pub max_connections: usize,
}

/// `outbox:` section: retention. `0s` turns a purge off (the history is then kept for good).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// An event whose deliveries are all delivered is purged once this old.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// An event with a dead delivery (and none pending) is purged once this old.
    #[serde(with = "humantime_serde")]
    pub dead_retention: Duration,
    /// Duplicates, 409 after HANGUP and sequences are answered as before for events this
    /// young, even when their bodies were purged.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
}

/// `admin:` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token of the operations API; empty means open.
    pub token: Secret,
}

/// `cdr:` and `status:` sections.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Address of the HTTP listener; port 0 picks a free port.
    pub listen: String,
    /// `sqlite://path`: the outbox file, created on first start.
    pub database: String,
    /// Serve HTTPS with this certificate and key.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// `status.supersede` (status-pusher only): a status that keeps failing for a subscriber
    /// is given up as `superseded` once a later status of its call is pending for it, so the
    /// call's later statuses go on. Off by default: every status, in order (SPEC).
    #[serde(default)]
    pub supersede: bool,
}

/// PEM files of the optional HTTPS listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// One receiving application.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Subscriber {
    /// Stable name, stored with each delivery.
    pub id: String,
    /// Where cdr-pusher posts; none means no CDRs for this subscriber.
    #[serde(default)]
    pub cdr_url: Option<String>,
    /// Where status-pusher posts; none means no status events.
    #[serde(default)]
    pub status_url: Option<String>,
    /// Service types (100, 200) this subscriber receives.
    pub service_types: Vec<u16>,
    /// Accounts this subscriber receives; empty means all.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// `whsec_<base64>` signing secret; none means unsigned pushes.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Concurrent attempts to this subscriber; none means `delivery.max_in_flight_per_subscriber`.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Outbound pushes per second to this subscriber; 0 means no limit.
    #[serde(default)]
    pub rate_limit_per_second: u32,
    /// Statuses status-pusher pushes to this subscriber (e.g. `[ANSWERED, HANGUP]`); empty
    /// means all. Sequence numbers stay the call's, so a filtered subscriber sees gaps.
    #[serde(default)]
    pub statuses: Vec<String>,
}

impl Subscriber {
    /// Concurrent attempts this subscriber may have, given the program's default.
    pub fn in_flight_limit(&self, delivery: &DeliverySettings) -> usize {
        self.max_in_flight.unwrap_or(delivery.max_in_flight_per_subscriber)
    }

    /// The URL this subscriber wants `service`'s events at, if any.
    pub fn url_for(&self, service: Service) -> Option<&str> {
        match service {
            Service::Cdr => self.cdr_url.as_deref(),
            Service::Status => self.status_url.as_deref(),
        }
    }
}

impl Settings {
    /// The section of the program that runs.
    pub fn service(&self, service: Service) -> &ServiceSettings {
        match service {
            Service::Cdr => &self.cdr,
            Service::Status => &self.status,
        }
    }

    /// Mutable access to a program's section, for tests and tools that rewrite it.
    pub fn service_mut(&mut self, service: Service) -> &mut ServiceSettings {
        match service {
            Service::Cdr => &mut self.cdr,
            Service::Status => &mut self.status,
        }
    }

    /// The built-in defaults alone (the documented config file).
    pub fn defaults() -> Settings {
        let sources = Sources { file: None, env: Some(HashMap::new()) };
        load_from(sources).expect("the built-in config/config.yaml is valid")
    }
}

/// Where to read configuration from, beyond the built-in defaults.
#[derive(Debug, Default)]
pub struct Sources {
    /// A YAML file that must exist.
    pub file: Option<PathBuf>,
    /// Environment variables to use instead of the process environment (tests).
    pub env: Option<HashMap<String, String>>,
}

/// An invalid configuration, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value broke a rule.
    #[error("invalid configuration: key `{key}`: {message}")]
    Invalid {
        /// Dotted key path, e.g. `delivery.timeout`.
        key: String,
        /// The rule it broke.
        message: String,
    },
    /// The file could not be read or parsed, or a value had the wrong type.
    #[error("invalid configuration: {0}")]
    Source(#[from] config::ConfigError),
}

/// Loads the configuration a program starts with: defaults, then `path` (or the default file
/// `config/config.yaml` if it exists), then the process environment.
pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let default_file = Path::new("config/config.yaml");
    let file = match path {
        Some(p) => Some(p.to_path_buf()),
        None if default_file.exists() => Some(default_file.to_path_buf()),
        None => None,
    };
    load_from(Sources { file, env: None })
}

/// Loads and validates configuration from explicit sources.
pub fn load_from(sources: Sources) -> Result<Settings, ConfigError> {
    let mut builder =
        config::Config::builder().add_source(config::File::from_str(DEFAULT_CONFIG_YAML, config::FileFormat::Yaml));
    if let Some(file) = &sources.file {
        builder = builder.add_source(config::File::from(file.as_path()).required(true));
    }
    let mut env = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .try_parsing(true);
    for key in LIST_KEYS {
        env = env.with_list_parse_key(key);
    }
    if let Some(vars) = sources.env {
        env = env.source(Some(vars.into_iter().collect()));
    }
    let settings: Settings = builder.add_source(env).build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

/// Decodes a `whsec_<base64>` secret into its HMAC key.
pub fn signing_key(secret: &Secret) -> Option<Vec<u8>> {
    let encoded = secret.expose().strip_prefix("whsec_")?;
    let key = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    (!key.is_empty()).then_some(key)
}

fn durations<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Duration>, D::Error> {
    let raw = Vec::<String>::deserialize(de)?;
    raw.iter()
        .map(|s| {
            humantime::parse_duration(s.trim())
                .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration: {e}")))
        })
        .collect()
}

fn networks<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(de)?;
    raw.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a CIDR or address")))
        })
        .collect()
}

fn default_retry_after_cap() -> Duration {
    Duration::from_secs(3600)
}

fn default_lease() -> Duration {
    DEFAULT_LEASE
}

/// `delivery.lease` by default: how long a replica's claim lasts in a shared outbox.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
