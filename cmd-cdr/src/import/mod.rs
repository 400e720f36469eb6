//! `cdr-pusher import …`: replays CDRs a switch saved while nobody took them into a running
//! cdr-pusher, through the endpoints a switch uses, so an import gets the same mapping,
//! validation, duplicates and durability as live records, and can run again safely (a record
//! already stored is a duplicate, pushed once). The pusher is reached at `--url` (default:
//! `cdr.listen` of the configuration) with `--token` (default: the first
//! `ingest.auth_tokens`). Prints what it read and what became of it.

mod asterisk;
mod freeswitch;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use push_core::{config::Settings, Service};
use serde_json::Value;

/// What to import.
#[derive(Debug, Subcommand)]
pub enum Import {
    /// A FreeSWITCH mod_json_cdr `err-log-dir` spool: every `*.cdr.json` (and `a_*.cdr.json`),
    /// posted as mod_json_cdr would to `POST /v1/sources/freeswitch`.
    Freeswitch {
        /// The spool directory.
        dir: PathBuf,
    },
    /// A whole Asterisk CSV file (cdr_csv's Master.csv or a cdr_custom file), mapped here as
    /// `sources.asterisk_csv` would and posted to `POST /v1/cdrs`.
    AsteriskCsv {
        /// The file.
        file: PathBuf,
        /// `cdr_csv`, `cdr_custom`, or the column names in order, comma-separated.
        #[arg(long, default_value = "cdr_csv")]
        columns: String,
        /// The IANA zone the file's local times are in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// `serviceType` of the CDRs.
        #[arg(long, default_value_t = 100)]
        service_type: u16,
    },
}

/// Where the running cdr-pusher is.
#[derive(Debug, Args)]
pub struct Target {
    /// Base URL of the running cdr-pusher (default: http:// + `cdr.listen`).
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token for ingest (default: the first of `ingest.auth_tokens`).
    #[arg(long, env = "VOICE_PUSH_IMPORT_TOKEN")]
    pub token: Option<String>,
}

/// What an import read and what became of it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Records read (files, lines).
    pub read: u64,
    /// Stored now.
    pub accepted: u64,
    /// Stored before (by an earlier import, or live).
    pub duplicates: u64,
    /// Refused, each with its reason on stderr.
    pub rejected: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Counts { read, accepted, duplicates, rejected } = self;
        write!(f, "read {read}, accepted {accepted}, duplicates {duplicates}, rejected {rejected}")
    }
}

/// Posts to the running pusher.
pub struct Poster {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Poster {
    /// The pusher `target` names, or the configuration's.
    pub fn new(settings: &Settings, target: &Target) -> anyhow::Result<Poster> {
        let base = match &target.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", settings.service(Service::Cdr).listen),
        };
        let token =
            target.token.clone().or_else(|| settings.ingest.auth_tokens.first().map(|t| t.expose().to_string()));
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
        Ok(Poster { client, base, token })
    }

    /// POSTs `body` to `path`; the status and the JSON answer.
    pub async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        let mut request =
            self.client.post(format!("{}{path}", self.base)).header("content-type", content_type).body(body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response =
            request.send().await.with_context(|| format!("posting to {}{path} (is cdr-pusher running?)", self.base))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

/// Runs an import.
pub async fn run(settings: &Settings, import: Import, target: &Target) -> anyhow::Result<Counts> {
    let poster = Poster::new(settings, target)?;
    match import {
        Import::Freeswitch { dir } => freeswitch::import(&poster, &dir).await,
        Import::AsteriskCsv { file, columns, timezone, service_type } => {
            asterisk::import(&poster, &file, &columns, &timezone, service_type).await
        }
    }
}
