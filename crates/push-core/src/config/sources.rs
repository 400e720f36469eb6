//! `sources:`: the switches a program reads natively (issue 13), each a module of
//! the `sources` module. Every source maps its records to SPEC §2.1 CDRs; what the native record
//! does not say comes from here.

use std::time::Duration;

use serde::Deserialize;

/// `sources:` section; every source is off unless configured.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourcesSettings {
    /// FreeSWITCH mod_json_cdr posting to `POST /v1/sources/freeswitch` (cdr-pusher).
    #[serde(default)]
    pub freeswitch: Option<FreeswitchSettings>,
    /// Asterisk cdr_csv / cdr_custom files followed as they grow (cdr-pusher).
    #[serde(default)]
    pub asterisk_csv: Vec<AsteriskCsvSettings>,
    /// Grandstream UCM real-time CDR output: a TCP listener and `POST /v1/sources/ucm`.
    #[serde(default)]
    pub ucm: Option<UcmSettings>,
    /// A Redis list filled by FreeSWITCH mod_cti (cdr-pusher).
    #[serde(default)]
    pub redis: Option<RedisSettings>,
    /// FreeSWITCH's event socket, read as an inbound client (status-pusher).
    #[serde(default)]
    pub esl: Option<EslSettings>,
    /// Asterisk's manager interface, read as a client: call events for status-pusher, `Cdr`
    /// events (cdr_manager) for cdr-pusher.
    #[serde(default)]
    pub ami: Option<AmiSettings>,
}

fn service_type() -> u16 {
    100
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// `sources.freeswitch`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FreeswitchSettings {
    /// `serviceType` of its CDRs.
    #[serde(default = "service_type")]
    pub service_type: u16,
    /// `accountId` of its CDRs, unless `account_variable` gives one.
    #[serde(default)]
    pub account_id: Option<String>,
    /// A channel variable holding the `accountId` (e.g. `accountcode`).
    #[serde(default)]
    pub account_variable: Option<String>,
    /// mod_json_cdr's `encode-values` (its default is true): percent-decode every variable.
    #[serde(default = "yes")]
    pub encoded_values: bool,
    /// Channel variables copied into `extra`, by name.
    #[serde(default)]
    pub variables: Vec<String>,
}

/// Which columns an Asterisk CSV file has.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CsvColumns {
    /// `cdr_csv` (Master.csv) or `cdr_custom` (its legacy mapping).
    Named(CsvLayout),
    /// The column names in order, as `cdr_custom.conf` writes them.
    List(Vec<String>),
}

/// The two layouts Asterisk ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CsvLayout {
    /// cdr_csv's `Master.csv`: accountcode, src, dst, ... (16 to 21 columns).
    CdrCsv,
    /// cdr_custom's legacy mapping: clid, src, dst, ...
    CdrCustom,
}

/// One entry of `sources.asterisk_csv`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AsteriskCsvSettings {
    /// The file Asterisk appends to.
    pub path: std::path::PathBuf,
    /// Its columns.
    #[serde(default = "cdr_csv")]
    pub columns: CsvColumns,
    /// The zone Asterisk wrote local times in (IANA name; `usegmtime=yes` means UTC).
    #[serde(default = "utc")]
    pub timezone: String,
    /// `serviceType` of its CDRs.
    #[serde(default = "service_type")]
    pub service_type: u16,
    /// `accountId` of its CDRs when the record's accountcode is empty.
    #[serde(default)]
    pub account_id: Option<String>,
}

fn cdr_csv() -> CsvColumns {
    CsvColumns::Named(CsvLayout::CdrCsv)
}

/// `sources.ucm`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UcmSettings {
    /// Where the UCM's "CDR Real-time Output" connects (TCP); none = HTTP only.
    #[serde(default)]
    pub tcp_listen: Option<String>,
    /// A TCP connection that sends nothing for this long is closed.
    #[serde(with = "humantime_serde", default = "ucm_idle")]
    pub idle_timeout: Duration,
    /// The zone of the UCM's local times.
    #[serde(default = "utc")]
    pub timezone: String,
    /// `serviceType` of its CDRs.
    #[serde(default = "service_type")]
    pub service_type: u16,
    /// `accountId` of its CDRs when the record's accountcode is empty.
    #[serde(default)]
    pub account_id: Option<String>,
}

fn ucm_idle() -> Duration {
    Duration::from_secs(30)
}

/// `sources.redis`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:6379/0`.
    pub url: String,
    /// The list mod_cti pushes CDRs onto (`cti.json`'s `cdr.redis.list`).
    #[serde(default = "cdr_list")]
    pub list: String,
    /// Where items wait between BLMOVE and their commit.
    #[serde(default = "processing_list")]
    pub processing_list: String,
    /// Also SUBSCRIBE to this channel (lossy: PUBLISH reaches only who listens at the time).
    #[serde(default)]
    pub channel: Option<String>,
    /// The zone of local times in the records.
    #[serde(default = "utc")]
    pub timezone: String,
    /// `serviceType` of its CDRs.
    #[serde(default = "service_type")]
    pub service_type: u16,
    /// `accountId` of its CDRs, unless the record has one.
    #[serde(default)]
    pub account_id: Option<String>,
}

fn cdr_list() -> String {
    "cdr".into()
}

fn processing_list() -> String {
    "cdr:processing".into()
}

/// `sources.esl`: FreeSWITCH mod_event_socket (INTEGRATIONS.md §1.2), which status-pusher
/// connects to as an inbound client for each leg's real-time state.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EslSettings {
    /// The switch (`event_socket.conf.xml`'s `listen-ip`).
    pub host: String,
    /// Its `listen-port`.
    #[serde(default = "esl_port")]
    pub port: u16,
    /// Its `password`.
    pub password: String,
    /// `serviceType` of its statuses.
    #[serde(default = "service_type")]
    pub service_type: u16,
    /// `accountId` of its statuses.
    #[serde(default)]
    pub account_id: Option<String>,
}

fn esl_port() -> u16 {
    8021
}

/// `sources.ami`: the Asterisk Manager Interface (INTEGRATIONS.md §2.2), which a program
/// connects to and logs in to (`manager.conf`, `read = call,cdr`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AmiSettings {
    /// The Asterisk host.
    pub host: String,
    /// `manager.conf`'s `port`.
    #[serde(default = "ami_port")]
    pub port: u16,
    /// The `[user]` section of `manager.conf`.
    pub username: String,
    /// Its `secret`.
    pub secret: String,
    /// The zone of the `Cdr` event's local times (cdr-pusher).
    #[serde(default = "utc")]
    pub timezone: String,
    /// `serviceType` of its statuses and CDRs.
    #[serde(default = "service_type")]
    pub service_type: u16,
    /// `accountId` of its statuses, and of CDRs whose AccountCode is empty.
    #[serde(default)]
    pub account_id: Option<String>,
}

fn ami_port() -> u16 {
    5038
}
