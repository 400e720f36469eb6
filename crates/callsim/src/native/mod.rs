//! callsim speaking the switches (issue 13, point 6): each generated CDR written in a
//! switch's own native form instead of SPEC JSON, so that cdr-pusher's sources can be driven
//! end to end. [`freeswitch`] builds mod_json_cdr's document of a leg, [`asterisk`] cdr_csv's
//! `Master.csv` line, [`ucm`] a Grandstream UCM "CDR Real-time Output" record, [`redis`] mod_cti's
//! Redis list item; [`sender`] delivers them as those switches do (HTTP POST, a file appended
//! to, a TCP connection, an LPUSH).

pub mod asterisk;
pub mod freeswitch;
pub mod redis;
pub mod sender;
pub mod switch;
pub mod ucm;

use std::time::{Duration, UNIX_EPOCH};

use clap::ValueEnum;

use crate::model::{Cdr, Party};

pub use sender::NativeSender;

/// How `calls` sends CDRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum CdrFormat {
    /// SPEC JSON to `POST /v1/cdrs` (the default).
    #[default]
    Json,
    /// mod_json_cdr's document, POSTed to `/v1/sources/freeswitch?uuid=<leg>`.
    Freeswitch,
    /// cdr_csv's `Master.csv` line, appended to the file `--cdr-url` names.
    AsteriskCsv,
    /// The UCM's JSON record, one TCP connection each, to `--cdr-url` (`host:port`).
    UcmTcp,
    /// mod_cti's JSON item, LPUSHed to a Redis list: `--cdr-url redis://host:port/?list=cdr`
    /// (the list defaults to `cdr`).
    Redis,
}

/// Where a CDR sits in the run, for the ids a switch numbers itself (the UCM's `AcctId`, the
/// channel counters): the generated call's ordinal (1-based) and its leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegNumber {
    /// The call's position in the run, from 1.
    pub call: u64,
    /// 0 for the caller's (or only) leg, 1 for the callee's leg of a callback.
    pub leg: u64,
}

impl LegNumber {
    /// The leg of `cdr` in call number `call`.
    pub fn of(call: u64, cdr: &Cdr) -> Self {
        Self { call, leg: u64::from(cdr.party == Some(Party::Callee)) }
    }

    /// A number unique to this leg within the run (2 per call).
    pub fn serial(self) -> u64 {
        self.call * 2 + self.leg
    }
}

/// The b-leg uuid of a call whose a-leg uuid is `call_id` (FreeSWITCH) and the uniqueid of
/// its callee's channel (Asterisk): derived, so that the same call always gives the same.
pub fn b_leg_id(call_id: &str) -> String {
    format!("{call_id}-b")
}

/// Epoch ms as `YYYY-MM-DD HH:MM:SS` in UTC, second precision (truncated), as Asterisk and the
/// UCM write their times.
pub fn utc_seconds(ms: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(ms.div_euclid(1000).max(0) as u64);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    text.trim_end_matches('Z').replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::generator::{CallGenerator, GenConfig};
    use crate::model::Payload;

    fn some_cdrs() -> Vec<Cdr> {
        let config = GenConfig { accounts: vec!["acme \"east\"".into()], callback_share: 0.5, ..GenConfig::default() };
        let mut generator = CallGenerator::new(config, 3);
        (0..50)
            .flat_map(|i| generator.next_call(1_764_000_000_000 + i * 1000).posts)
            .filter_map(|p| match p.payload {
                Payload::Cdr(c) => Some(c),
                Payload::Status(_) => None,
            })
            .collect()
    }

    #[test]
    fn cdr_csv_quotes_strings_and_leaves_numbers_bare() {
        for cdr in some_cdrs() {
            let line = asterisk::line(&cdr, 7);
            assert!(line.starts_with("\"acme \"\"east\"\"\",\""), "{line}");
            assert!(line.ends_with(&format!(",\"{}\",7\n", cdr.common.call_id)), "{line}");
            let answer = match cdr.release.disposition {
                crate::model::Disposition::Answered => utc_seconds(cdr.start_time),
                _ => String::new(),
            };
            let times =
                format!(",\"{}\",\"{answer}\",\"{}\",", utc_seconds(cdr.begin_call_time), utc_seconds(cdr.end_time));
            assert!(line.contains(&times), "start, answer (empty if unanswered), end: {line}");
        }
    }

    #[test]
    fn ucm_records_are_flat_strings_and_freeswitch_variables_strings() {
        for (i, cdr) in some_cdrs().iter().enumerate() {
            let record = ucm::record(cdr, LegNumber::of(i as u64 + 1, cdr));
            assert!(record.as_object().unwrap().values().all(serde_json::Value::is_string), "{record}");
            let doc = freeswitch::document(cdr);
            assert!(doc["variables"].as_object().unwrap().values().all(serde_json::Value::is_string));
            assert_eq!(doc["callflow"][0]["caller_profile"]["uuid"], doc["variables"]["uuid"]);
        }
    }

    #[test]
    fn times_are_utc_seconds() {
        assert_eq!(utc_seconds(1_764_000_000_999), "2025-11-24 16:00:00");
        assert_eq!(utc_seconds(0), "1970-01-01 00:00:00");
    }
}
