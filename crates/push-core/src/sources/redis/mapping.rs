//! mod_cti's CDR (seed 002, INTEGRATIONS.md §1.3) as a SPEC §2.1 CDR. mod_cti pushes one
//! flat JSON object per leg, made of the channel variables `cti.json`'s `cdr.fields` names
//! (FreeSWITCH's own names: `uuid`, `caller_id_number`, `start_uepoch`, `hangup_cause`, ...,
//! plus mod_cti's `originator`, `dial_number`, `call_source`, ...). A `number:` prefix in
//! `cti.json` writes a value as a JSON number, so every numeric field is read from a number
//! or a numeric string; a `name:var` rename is just another name.

use serde_json::{json, Map, Value};

use crate::sources::{
    freeswitch::{
        self,
        cause::{Ending, Leg},
    },
    localtime::Zone,
    Mapped,
};

/// `extra` must stay within SPEC §2.1's 4 KiB; fields past this budget are left out.
const EXTRA_BUDGET: usize = 4000;

/// Fields that become canonical fields and are not repeated in `extra`.
const CONSUMED: &[&str] =
    &["caller_id_number", "accountcode", "billsec", "duration", "hangup_cause_q850", "sip_term_status"];

/// The leg times mod_cti can carry, each as `<name>_uepoch` (µs), `<name>_epoch` (s) or
/// `<name>_stamp` (local time), preferred in that order.
const TIMES: &[&str] = &["start", "answer", "progress", "progress_media", "end"];

/// How one source's records are mapped: what the record does not say.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// `serviceType` of every CDR.
    pub service_type: u16,
    /// `accountId` when the record has no `accountcode`.
    pub account_id: Option<String>,
    /// The zone of `*_stamp` local times.
    pub zone: Zone,
}

impl Mapping {
    /// One list item: its CDR, or why it has none.
    pub fn map(&self, raw: &str) -> Mapped {
        match self.cdr(raw) {
            // A leg's uuid is its identity: a forked call's callee legs each keep their CDR.
            Ok((cdr, leg)) => Mapped::keyed(raw, Ok(vec![cdr]), Some(leg)),
            Err(reason) => Mapped::new(raw, Err(reason)),
        }
    }

    /// The CDR of one item, with the leg's uuid.
    fn cdr(&self, raw: &str) -> Result<(Value, String), String> {
        let record = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(record)) => record,
            Ok(_) => return Err("a mod_cti CDR is a JSON object".into()),
            Err(e) => return Err(format!("not JSON: {e}")),
        };
        let r = Record(&record);
        let uuid = r.text("uuid").ok_or("uuid: missing (the leg's uuid)")?;
        let leg = uuid.clone();
        let (call_id, party) = match r.text("originator") {
            Some(a_leg) => (a_leg, "CALLEE"),
            None => (uuid, "CALLER"),
        };
        let caller = r.text("caller_id_number").ok_or("caller_id_number: missing")?;
        let (callee_field, callee) = ["dial_number", "destination_number", "callee_id_number"]
            .into_iter()
            .find_map(|f| r.text(f).map(|v| (f, v)))
            .ok_or("dial_number, destination_number and callee_id_number: all missing")?;
        let times = Times::read(&r, &self.zone)?;
        let start = times.answer.unwrap_or(times.end);
        let mut cdr = json!({
            "callId": call_id, "serviceType": self.service_type, "callerNumber": caller,
            "calleeNumber": callee, "startTime": start, "endTime": times.end,
            "duration": (times.end - start).max(0) / 1000, "party": party,
        });
        let out = cdr.as_object_mut().expect("an object");
        if let Some(account) = r.text("accountcode").or_else(|| self.account_id.clone()) {
            out.insert("accountId".into(), account.into());
        }
        if let Some(begin) = times.begin {
            out.insert("beginCallTime".into(), begin.into());
        }
        if let Some(ring) = times.ring {
            out.insert("ringTime".into(), ring.into());
        }
        outcome_fields(&r, times.answer.is_some(), party == "CALLEE", out)?;
        if let Some(url) = r.text("record_filename").filter(|u| u.starts_with("http://") || u.starts_with("https://")) {
            out.insert("recordUrl".into(), url.into());
        }
        let extra = extra(&record, callee_field);
        if !extra.is_empty() {
            out.insert("extra".into(), Value::Object(extra));
        }
        Ok((cdr, leg))
    }
}

/// A record's fields, read tolerantly.
struct Record<'a>(&'a Map<String, Value>);

impl Record<'_> {
    /// A non-empty text (a number is written as text).
    fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A number, from a JSON number or a numeric string (`number:` in `cti.json` or not);
    /// absent or empty is `None`, anything else an error naming the field.
    fn number(&self, name: &str) -> Result<Option<i64>, String> {
        let bad = || format!("{name}: not a number");
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).map(Some).ok_or_else(bad),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => {
                let s = s.trim();
                s.parse::<i64>().ok().or_else(|| s.parse::<f64>().ok().map(|f| f as i64)).map(Some).ok_or_else(bad)
            }
            Some(_) => Err(bad()),
        }
    }

    /// The time `name` (one of [`TIMES`]) in epoch ms; 0 or empty means it did not happen.
    fn time(&self, name: &str, zone: &Zone) -> Result<Option<i64>, String> {
        if let Some(us) = self.number(&format!("{name}_uepoch"))? {
            return Ok((us > 0).then_some(us / 1000));
        }
        if let Some(s) = self.number(&format!("{name}_epoch"))? {
            return Ok((s > 0).then_some(s * 1000));
        }
        match self.text(&format!("{name}_stamp")) {
            Some(stamp) => zone.epoch_ms(&stamp).map(Some).map_err(|e| format!("{name}_stamp: {e}")),
            None => Ok(None),
        }
    }
}

/// A leg's times in epoch ms.
struct Times {
    begin: Option<i64>,
    ring: Option<i64>,
    answer: Option<i64>,
    end: i64,
}

impl Times {
    fn read(r: &Record<'_>, zone: &Zone) -> Result<Times, String> {
        let end = r.time("end", zone)?.ok_or("end time: none of end_uepoch, end_epoch, end_stamp")?;
        let billsec = r.number("billsec")?.filter(|s| *s > 0);
        let answer = r.time("answer", zone)?.or(billsec.map(|s| end - s * 1000));
        let duration = r.number("duration")?.filter(|s| *s > 0);
        let begin = r.time("start", zone)?.or(duration.map(|s| end - s * 1000));
        let ring = [r.time("progress", zone)?, r.time("progress_media", zone)?].into_iter().flatten().min();
        Ok(Times { begin, ring, answer, end })
    }
}

/// `hangupCause`, `disposition`, `sipCode` and `releaseDirection`, as for mod_json_cdr
/// (mod_cti copies the same channel variables): the cause text first, since FreeSWITCH
/// reports Q.850 16 for every cause of its own above 127 (`sources::freeswitch::cause`).
fn outcome_fields(r: &Record<'_>, answered: bool, b_leg: bool, out: &mut Map<String, Value>) -> Result<(), String> {
    let cause = r.text("hangup_cause");
    let how = r.text("sip_hangup_disposition");
    let ending = Ending {
        leg: if b_leg { Leg::B } else { Leg::A },
        cause: cause.as_deref(),
        sip_term: r.number("sip_term_status")?.filter(|c| (100..=699).contains(c)).map(|c| c as u16),
        how: how.as_deref(),
        answered,
        had_other_leg: b_leg || r.text("bridge_uuid").is_some(),
        reported_q850: r.number("hangup_cause_q850")?.filter(|c| (0..=127).contains(c)).map(|c| c as u16),
    };
    freeswitch::cause::outcome(&ending).write_into(out);

    Ok(())
}

/// The record's other scalar fields, in its order, within [`EXTRA_BUDGET`]: the leg's own
/// `uuid`, `originator`, `bridge_uuid`, `direction`, `hangup_cause`, mod_cti's `account`,
/// `call_source`, `source_name`, ... and whatever `cti.json` adds. Nested values (a
/// `details` blob) and the time fields, already mapped, are left out.
fn extra(record: &Map<String, Value>, callee_field: &str) -> Map<String, Value> {
    let mut extra = Map::new();
    let mut used = 2;
    for (name, value) in record {
        let is_time = TIMES
            .iter()
            .any(|t| name.strip_prefix(t).is_some_and(|rest| ["_uepoch", "_epoch", "_stamp"].contains(&rest)));
        if is_time || name == callee_field || CONSUMED.contains(&name.as_str()) || value.is_object() || value.is_array()
        {
            continue;
        }
        let size = name.len() + value.to_string().len() + 4;
        if used + size > EXTRA_BUDGET {
            continue;
        }
        used += size;
        extra.insert(name.clone(), value.clone());
    }
    extra
}
