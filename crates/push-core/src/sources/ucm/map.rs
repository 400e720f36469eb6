//! A Grandstream UCM record, as its "CDR Real-time Output" sends it (INTEGRATIONS.md §3),
//! mapped to SPEC §2.1 CDRs: JSON (one flat object of strings, an array of them, or the CDR
//! API's `{"cdr_root": [...]}` / `{"cdr": [...]}` with `main_cdr` + `sub_cdr_N` items) or a
//! CSV row quoted with `'` in the documented column order. XML is recognized and refused.
//!
//! One record is one segment of a call (a ring group, an IVR, a transfer each give one); the
//! segments of a call share `session`. Each keeps its own CDR: its `callId` is the segment's
//! `uniqueid` joined to its `AcctId` (the UCM's CDR row id), so no segment is taken for a
//! duplicate of another, while a re-sent segment is one.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::super::{localtime::Zone, Mapped};
use crate::config::UcmSettings;

/// The columns of a real-time output CSV row, in order (newer firmware may append more,
/// which are ignored).
pub const CSV_COLUMNS: [&str; 32] = [
    "AcctId",
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
    "channel_ext",
    "dstchannel_ext",
    "service",
    "caller_name",
    "recordfiles",
    "dstanswer",
    "chanext",
    "dstchanext",
    "session",
    "action_owner",
    "action_type",
    "src_trunk_name",
    "dst_trunk_name",
];

/// A CSV row shorter than this (up to `uniqueid`) cannot be a UCM record.
const CSV_MIN_COLUMNS: usize = 18;

/// Native fields copied into `extra` when not empty, most useful first; one that would take
/// `extra` over its 4 KiB is left out.
const EXTRA_FIELDS: [&str; 23] = [
    "session",
    "AcctId",
    "uniqueid",
    "action_type",
    "action_owner",
    "src_trunk_name",
    "dst_trunk_name",
    "channel_ext",
    "dstchannel_ext",
    "chanext",
    "dstchanext",
    "userfield",
    "dcontext",
    "channel",
    "dstchannel",
    "clid",
    "caller_name",
    "recordfiles",
    "dstanswer",
    "sn",
    "new_src",
    "reason",
    "lastapp",
];

/// What SPEC §2.1 allows `extra` to take, serialized.
const EXTRA_BUDGET: usize = 4096;

/// One native record: field name to its text.
type Fields = BTreeMap<String, String>;

/// How this UCM's records become CDRs: its zone and what its records do not say.
#[derive(Debug, Clone)]
pub struct UcmMapping {
    zone: Zone,
    service_type: u16,
    account_id: Option<String>,
}

impl UcmMapping {
    /// The mapping `sources.ucm` configures; the error names the key that is wrong.
    pub fn new(settings: &UcmSettings) -> Result<Self, String> {
        let zone = Zone::named(&settings.timezone).map_err(|e| format!("sources.ucm.timezone: {e}"))?;
        if ![100, 200].contains(&settings.service_type) {
            return Err(format!("sources.ucm.service_type: {} is not 100 or 200", settings.service_type));
        }
        Ok(UcmMapping { zone, service_type: settings.service_type, account_id: settings.account_id.clone() })
    }

    /// One record as received (the text of a TCP record or an HTTP body), sniffed: `{`/`[`
    /// JSON, `<` XML (refused), anything else CSV.
    pub fn parse(&self, raw: &str) -> Mapped {
        let text = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        let records = match text.as_bytes().first() {
            None => Err("the record is empty".to_string()),
            Some(b'{' | b'[') => json_records(text),
            Some(b'<') => {
                Err("XML records are not supported: set the UCM's CDR Real-time Output format to JSON".into())
            }
            Some(_) => csv_records(text),
        };
        let cdrs = records.and_then(|records| records.iter().map(|r| self.cdr(r)).collect());
        Mapped::new(raw, cdrs)
    }

    /// The CDR of one segment.
    fn cdr(&self, f: &Fields) -> Result<Value, String> {
        let get = |name: &str| f.get(name).map(|v| v.trim()).unwrap_or("");
        let call_id = segment_id(get("uniqueid"), get("AcctId"), get("dstchannel"))?;
        let caller = nonempty(get("src"), "src (the caller number)")?;
        let callee = nonempty(get("dst"), "dst (the dialled number)")?;
        let begin = self.time(get("start"), "start")?;
        let end = self.time(get("end"), "end")?;
        let disposition = disposition(get("disposition"));
        let answered = match disposition {
            Some(d) => d == "ANSWERED",
            None => !get("answer").is_empty() && get("billsec").parse::<u64>().is_ok_and(|s| s > 0),
        };
        let start = if answered { self.time(get("answer"), "answer")? } else { end };
        let mut cdr = json!({
            "callId": call_id,
            "serviceType": self.service_type,
            "callerNumber": caller,
            "calleeNumber": callee,
            "startTime": start,
            "endTime": end,
            "duration": (end - start).max(0) / 1000,
            "beginCallTime": begin,
        });
        let account = Some(get("accountcode")).filter(|a| !a.is_empty()).or(self.account_id.as_deref());
        let direction = match get("userfield").to_ascii_lowercase().as_str() {
            "inbound" => Some("INBOUND"),
            "outbound" => Some("OUTBOUND"),
            "internal" => Some("INTERNAL"),
            _ => None,
        };
        for (field, value) in [("accountId", account), ("direction", direction), ("disposition", disposition)] {
            if let Some(value) = value {
                cdr[field] = json!(value);
            }
        }
        cdr["extra"] = extra(f);
        Ok(cdr)
    }

    /// A local `YYYY-MM-DD HH:MM:SS` of the UCM as epoch ms.
    fn time(&self, text: &str, field: &str) -> Result<i64, String> {
        if text.is_empty() {
            return Err(format!("{field} is empty"));
        }
        self.zone.epoch_ms(text).map_err(|e| format!("{field}: {e}"))
    }
}

/// The segment's `callId`: `<uniqueid>-<AcctId>`; without an AcctId (firmware that sends
/// none) the destination channel tells the parallel segments of one channel apart.
fn segment_id(uniqueid: &str, acct_id: &str, dstchannel: &str) -> Result<String, String> {
    let uniqueid = nonempty(uniqueid, "uniqueid")?;
    Ok(match (acct_id, dstchannel) {
        ("", "") => uniqueid.to_string(),
        ("", channel) => format!("{uniqueid}-{channel}"),
        (acct, _) => format!("{uniqueid}-{acct}"),
    })
}

fn nonempty<'a>(value: &'a str, what: &str) -> Result<&'a str, String> {
    if value.is_empty() {
        Err(format!("{what} is empty"))
    } else {
        Ok(value)
    }
}

/// The UCM's dispositions in the CDR's terms (CONGESTION, as Asterisk writes it, failed);
/// an unknown one is left out.
fn disposition(native: &str) -> Option<&'static str> {
    Some(match native.to_ascii_uppercase().as_str() {
        "ANSWERED" => "ANSWERED",
        "NO ANSWER" | "NOANSWER" => "NO_ANSWER",
        "BUSY" => "BUSY",
        "FAILED" | "CONGESTION" => "FAILED",
        _ => return None,
    })
}

/// The useful native fields that the CDR lacks, within `extra`'s budget.
fn extra(f: &Fields) -> Value {
    let mut extra = Map::new();
    let mut size = 2; // {}
    for name in EXTRA_FIELDS {
        let Some(value) = f.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) else { continue };
        let value = Value::String(value.to_string());
        let cost = name.len() + 4 + value.to_string().len(); // "name": value and a comma
        if size + cost <= EXTRA_BUDGET {
            size += cost;
            extra.insert(name.to_string(), value);
        }
    }
    Value::Object(extra)
}

/// The records of a JSON text: a flat object, an array of them, or the CDR API's wrappers.
fn json_records(text: &str) -> Result<Vec<Fields>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("the record is not valid JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut object) => match ["cdr_root", "cdr"].iter().find_map(|k| object.remove(*k)) {
            Some(Value::Array(items)) => items,
            Some(_) => return Err("cdr_root / cdr is not an array".into()),
            None => vec![Value::Object(object)],
        },
        _ => return Err("the record is not a JSON object".into()),
    };
    let mut records = Vec::new();
    for item in items {
        let Value::Object(object) = item else { return Err("an item of the record is not a JSON object".into()) };
        records.append(&mut segments(object)?);
    }
    if records.is_empty() {
        return Err("the record holds no CDR".into());
    }
    Ok(records)
}

/// A CDR API item's segments (`main_cdr`, then `sub_cdr_1`, `sub_cdr_2`, ...), or the item
/// itself when it is a flat record.
fn segments(mut object: Map<String, Value>) -> Result<Vec<Fields>, String> {
    let mut parts: Vec<(u32, Value)> = Vec::new();
    for key in object.keys().cloned().collect::<Vec<_>>() {
        let order = match key.as_str() {
            "main_cdr" => 0,
            sub => match sub.strip_prefix("sub_cdr_").and_then(|n| n.parse::<u32>().ok()) {
                Some(n) => n,
                None => continue,
            },
        };
        parts.push((order, object.remove(&key).unwrap_or_default()));
    }
    if parts.is_empty() {
        return Ok(vec![flat(object)?]);
    }
    parts.sort_by_key(|(order, _)| *order);
    parts
        .into_iter()
        .map(|(_, part)| match part {
            Value::Object(fields) => flat(fields),
            _ => Err("main_cdr / sub_cdr_N is not a JSON object".into()),
        })
        .collect()
}

/// A flat object's fields as text: strings as they are, numbers and booleans written out,
/// null empty. A nested value has no place in a UCM record.
fn flat(object: Map<String, Value>) -> Result<Fields, String> {
    let mut fields = Fields::new();
    for (name, value) in object {
        let text = match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            Value::Bool(_) | Value::Number(_) => value.to_string(),
            Value::Array(_) | Value::Object(_) => return Err(format!("{name} is not a string")),
        };
        fields.insert(name, text);
    }
    Ok(fields)
}

/// The records of CSV text quoted with `'`, one per row, columns in [`CSV_COLUMNS`] order; a
/// header row (first column `AcctId`) is skipped.
fn csv_records(text: &str) -> Result<Vec<Fields>, String> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).quote(b'\'').flexible(true).from_reader(text.as_bytes());
    let mut records = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| format!("the record is not a CSV row: {e}"))?;
        if row.get(0) == Some("AcctId") {
            continue;
        }
        if row.len() < CSV_MIN_COLUMNS {
            let n = row.len();
            return Err(format!(
                "a CSV row of {n} columns; a UCM row has at least {CSV_MIN_COLUMNS} (AcctId to uniqueid)"
            ));
        }
        records.push(CSV_COLUMNS.iter().zip(row.iter()).map(|(c, v)| (c.to_string(), v.to_string())).collect());
    }
    if records.is_empty() {
        return Err("the record holds no CSV row".into());
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(zone: &str) -> UcmMapping {
        let settings = UcmSettings {
            tcp_listen: None,
            idle_timeout: std::time::Duration::from_secs(1),
            timezone: zone.into(),
            service_type: 100,
            account_id: Some("acct-cfg".into()),
        };
        UcmMapping::new(&settings).unwrap()
    }

    const ROW: &str = "'7','','1001','1002','from-internal','\"Ann\" <1001>','PJSIP/1001-1','PJSIP/1002-2','Dial','PJSIP/1002','2024-05-01 10:00:00','2024-05-01 10:00:05','2024-05-01 10:01:05','65','60','ANSWERED','DOCUMENTATION','1714557600.7','Internal'";

    #[test]
    fn an_answered_csv_row_maps_with_its_talk_time() {
        let cdr = mapping("UTC").parse(ROW).cdrs.unwrap().remove(0);
        assert_eq!(cdr["callId"], "1714557600.7-7");
        assert_eq!(cdr["beginCallTime"], 1_714_557_600_000_i64);
        assert_eq!(cdr["startTime"], 1_714_557_605_000_i64);
        assert_eq!(cdr["endTime"], 1_714_557_665_000_i64);
        assert_eq!(cdr["duration"], 60);
        assert_eq!((cdr["direction"].as_str(), cdr["disposition"].as_str()), (Some("INTERNAL"), Some("ANSWERED")));
        assert_eq!(cdr["accountId"], "acct-cfg", "no accountcode: the configured one");
        assert_eq!(cdr["extra"]["clid"], "\"Ann\" <1001>", "double quotes are plain text in a '-quoted row");
    }

    #[test]
    fn unmappable_records_say_why() {
        let m = mapping("UTC");
        let reason = |raw: &str| m.parse(raw).cdrs.unwrap_err();
        assert!(reason("   \0").contains("empty"));
        assert!(reason("<cdr><src>1</src></cdr>").contains("XML"));
        assert!(reason("{\"src\": ").contains("not valid JSON"));
        assert!(reason("'1','2','3'").contains("3 columns"));
        assert!(reason(&ROW.replace("'2024-05-01 10:00:00'", "'yesterday'")).contains("start"));
        assert!(reason(&ROW.replace("'1714557600.7'", "''")).contains("uniqueid"));
        assert!(reason(r#"{"src": {"nested": 1}}"#).contains("src is not a string"));
    }

    #[test]
    fn segments_of_a_cdr_api_item_each_give_a_cdr() {
        let seg = |acct: &str| json!({"AcctId": acct, "uniqueid": "1.1", "src": "1", "dst": "2", "start": "2024-05-01 10:00:00", "end": "2024-05-01 10:00:09", "answer": "", "disposition": "NO ANSWER"});
        let body =
            json!({"cdr_root": [{"sub_cdr_2": seg("3"), "main_cdr": seg("1"), "sub_cdr_1": seg("2")}, seg("4")]});
        let cdrs = mapping("UTC").parse(&body.to_string()).cdrs.unwrap();
        let ids: Vec<&str> = cdrs.iter().map(|c| c["callId"].as_str().unwrap()).collect();
        assert_eq!(ids, ["1.1-1", "1.1-2", "1.1-3", "1.1-4"]);
        assert_eq!(cdrs[0]["startTime"], cdrs[0]["endTime"], "never answered: connected = released");
        assert_eq!(cdrs[0]["duration"], 0);
    }

    #[test]
    fn a_bad_zone_or_service_type_names_its_key() {
        let mut settings = UcmSettings {
            tcp_listen: None,
            idle_timeout: std::time::Duration::from_secs(1),
            timezone: "Mars/Olympus".into(),
            service_type: 100,
            account_id: None,
        };
        assert!(UcmMapping::new(&settings).unwrap_err().starts_with("sources.ucm.timezone"));
        (settings.timezone, settings.service_type) = ("UTC".into(), 300);
        assert!(UcmMapping::new(&settings).unwrap_err().starts_with("sources.ucm.service_type"));
    }
}
