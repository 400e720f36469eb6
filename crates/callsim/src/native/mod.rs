//! callsim speaking the switches (issue 13, point 6): each generated CDR written in a
//! switch's own native form instead of SPEC JSON, so that cdr-pusher's sources can be driven
//! end to end. [`freeswitch`] builds mod_json_cdr's document of a leg, [`asterisk`] cdr_csv's
//! `Master.csv` line, [`ucm`] a Grandstream UCM "CDR Real-time Output" record; [`sender`]
//! delivers them as those switches do (HTTP POST, a file appended to, a TCP connection).

pub mod asterisk;
pub mod freeswitch;
pub mod sender;
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

    #[test]
    fn times_are_utc_seconds() {
        assert_eq!(utc_seconds(1_764_000_000_999), "2025-11-24 16:00:00");
        assert_eq!(utc_seconds(0), "1970-01-01 00:00:00");
    }
}
