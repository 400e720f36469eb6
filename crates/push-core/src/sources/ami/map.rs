//! AMI events (INTEGRATIONS.md §2.2) to SPEC §2.2 statuses, and the `Cdr` event to a §2.1 CDR.
//!
//! Statuses, grouped by `Linkedid` (the call's oldest channel: the `callId`); `party` CALLER
//! for the channel that is the Linkedid, CALLEE for the others:
//! - `Newchannel` → DIALING of its channel; `DialBegin` → DIALING of `DestUniqueid` (the
//!   same status of the same leg: a duplicate where both came);
//! - `Newstate` with ChannelState 4 (Ring) or 5 (Ringing) → RINGING, 6 (Up) → ANSWERED;
//! - `Hangup` → HANGUP, with `Cause` (Q.850) as hangupCause, its RFC 3398 SIP code, the
//!   disposition (ANSWERED if the channel went Up, else from the cause) and releaseDirection:
//!   the party whose channel of the call hung up first;
//! - `DialEnd` gives no status of its own (its ANSWER is the callee's Newstate Up, the
//!   others end in the callee's Hangup); nothing else does either.
//!
//! `timestamp`: the event's `Timestamp` (`manager.conf` `timestampevents = yes`), else when
//! it was read. The `Cdr` event (cdr_manager) is mapped as an Asterisk CSV record is (same
//! callId, times, disposition), its fields renamed to cdr_csv's columns.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use crate::sources::{
    asterisk_csv::Mapping as CsvMapping,
    esl::frame::Frame,
    outcome::{sip_for_q850, unanswered_disposition},
    Mapped,
};

/// What a session remembers of the calls under way: the channels that went Up, and who
/// hung up first in each call (forgotten when the call's CALLER channel hangs up).
#[derive(Default)]
pub struct Calls {
    answered: HashSet<String>,
    released: HashMap<String, &'static str>,
}

/// The `Cdr` event's fields, and the cdr_csv columns they are.
const CDR_COLUMNS: [(&str, &str); 20] = [
    ("AccountCode", "accountcode"),
    ("Source", "src"),
    ("Destination", "dst"),
    ("DestinationContext", "dcontext"),
    ("CallerID", "clid"),
    ("Channel", "channel"),
    ("DestinationChannel", "dstchannel"),
    ("LastApplication", "lastapp"),
    ("LastData", "lastdata"),
    ("StartTime", "start"),
    ("AnswerTime", "answer"),
    ("EndTime", "end"),
    ("Duration", "duration"),
    ("BillableSeconds", "billsec"),
    ("Disposition", "disposition"),
    ("AMAFlags", "amaflags"),
    ("UniqueID", "uniqueid"),
    ("UserField", "userfield"),
    ("LinkedID", "linkedid"),
    ("Sequence", "sequence"),
];

/// A packet as `Key: Value` lines, for a reject's raw record.
pub fn raw(frame: &Frame) -> String {
    frame.headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect()
}

/// A raw packet read back (a reject re-driven).
pub fn parse_raw(raw: &str) -> Result<Frame, String> {
    let headers = crate::sources::esl::frame::parse_headers(raw.as_bytes())?;
    Ok(Frame { headers, body: Vec::new() })
}

/// The CDR of a `Cdr` event, `None` for any other packet.
pub fn cdr(mapping: &CsvMapping, frame: &Frame) -> Option<Mapped> {
    if !frame.header("Event")?.eq_ignore_ascii_case("Cdr") {
        return None;
    }
    let row: Map<String, Value> = CDR_COLUMNS
        .iter()
        .filter_map(|(field, column)| frame.header(field).map(|v| (column.to_string(), Value::from(v))))
        .collect();
    let mapped = mapping.map(&Value::Object(row).to_string());
    Some(Mapped { raw: raw(frame), ..mapped })
}

/// How statuses are made.
#[derive(Debug, Clone)]
pub struct StatusMapping {
    /// `serviceType`.
    pub service_type: u16,
    /// `accountId`, if configured.
    pub account_id: Option<String>,
}

impl StatusMapping {
    /// The status a packet gives, if any; `now_ms` stands in for a missing `Timestamp`.
    pub fn status(&self, calls: &mut Calls, frame: &Frame, now_ms: i64) -> Option<Mapped> {
        let event = frame.header("Event")?;
        let (leg, status) = match event {
            "Newchannel" => (frame.header("Uniqueid")?, "DIALING"),
            "DialBegin" => (frame.header("DestUniqueid")?, "DIALING"),
            "Newstate" => match frame.header("ChannelState")? {
                "4" | "5" => (frame.header("Uniqueid")?, "RINGING"),
                "6" => (frame.header("Uniqueid")?, "ANSWERED"),
                _ => return None,
            },
            "Hangup" => (frame.header("Uniqueid")?, "HANGUP"),
            _ => return None,
        };
        let dest = event == "DialBegin";
        let linked =
            if dest { frame.header("DestLinkedid").or(frame.header("Linkedid")) } else { frame.header("Linkedid") };
        let Some(call) = linked.filter(|l| !l.is_empty()) else {
            return Some(Mapped::new(raw(frame), Err(format!("the {event} event has no Linkedid"))));
        };
        let party = if leg == call { "CALLER" } else { "CALLEE" };
        let timestamp =
            frame.header("Timestamp").and_then(|t| t.parse::<f64>().ok()).map_or(now_ms, |t| (t * 1000.0) as i64);
        let mut body = json!({"callId": call, "serviceType": self.service_type, "status": status,
                              "timestamp": timestamp, "party": party});
        let out = body.as_object_mut().expect("an object");
        let prefix = if dest { "Dest" } else { "" };
        let number =
            |name: &str| frame.header(&format!("{prefix}{name}")).filter(|v| !v.is_empty() && *v != "<unknown>");
        let (caller, callee) =
            if party == "CALLER" { ("CallerIDNum", "Exten") } else { ("ConnectedLineNum", "CallerIDNum") };
        for (field, value) in [("callerNumber", number(caller)), ("calleeNumber", number(callee))] {
            if let Some(v) = value.filter(|v| *v != "s") {
                out.insert(field.into(), v.into());
            }
        }
        if let Some(account) = &self.account_id {
            out.insert("accountId".into(), account.clone().into());
        }
        match status {
            "ANSWERED" => {
                calls.answered.insert(leg.to_string());
            }
            "HANGUP" => hangup(calls, frame, call, leg, party, out),
            _ => {}
        }
        Some(Mapped::new(raw(frame), Ok(vec![body])))
    }
}

fn hangup(calls: &mut Calls, frame: &Frame, call: &str, leg: &str, party: &'static str, out: &mut Map<String, Value>) {
    let answered = calls.answered.remove(leg);
    let cause = frame.header("Cause").and_then(|c| c.parse::<u16>().ok()).filter(|c| *c <= 127);
    let release = *calls.released.entry(call.to_string()).or_insert(party);
    if party == "CALLER" {
        calls.released.remove(call);
    }
    let disposition = if answered { "ANSWERED" } else { cause.map_or("FAILED", unanswered_disposition) };
    out.insert("disposition".into(), disposition.into());
    out.insert("releaseDirection".into(), release.into());
    if let Some(cause) = cause {
        out.insert("hangupCause".into(), cause.into());
        let sip =
            if answered && cause == 16 { Some(200) } else { Some(cause).filter(|c| *c != 16).and_then(sip_for_q850) };
        if let Some(sip) = sip {
            out.insert("sipCode".into(), sip.into());
        }
    }
}
