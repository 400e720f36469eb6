//! One Asterisk CSV line to the canonical CDR of SPEC §2.1. Shared by the file follower and
//! `cdr-pusher import asterisk-csv`, so both give the same CDR (and the same callId: a line
//! read twice, live or imported, is a duplicate).

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::columns::Layout;
use crate::{config::AsteriskCsvSettings, sources::localtime::Zone, sources::Mapped};

/// The columns a CDR field is made of; the others go into `extra` under their own names.
const CONSUMED: [&str; 6] = ["accountcode", "src", "dst", "start", "answer", "end"];

/// Columns that hold numbers (Asterisk writes them unquoted in cdr_csv, or `f` floats).
const NUMERIC: [&str; 3] = ["duration", "billsec", "sequence"];

/// How one configured file's lines become CDRs.
#[derive(Debug, Clone)]
pub struct Mapping {
    layout: Layout,
    zone: Zone,
    service_type: u16,
    account_id: Option<String>,
}

/// One line's values by column name.
struct Row {
    names: Vec<String>,
    values: Vec<String>,
}

impl Row {
    /// The value of column `name`, `""` if the file has no such column.
    fn get(&self, name: &str) -> &str {
        self.names.iter().position(|n| n == name).map_or("", |i| self.values[i].trim())
    }
}

impl Mapping {
    /// The mapping `settings` describe; the error names a bad `timezone`.
    pub fn new(settings: &AsteriskCsvSettings) -> Result<Mapping, String> {
        Ok(Mapping {
            layout: Layout::new(&settings.columns),
            zone: Zone::named(&settings.timezone)?,
            service_type: settings.service_type,
            account_id: settings.account_id.clone(),
        })
    }

    /// Maps one line (without its line end): one CDR, or why not.
    pub fn map(&self, raw: &str) -> Mapped {
        match self.cdr(raw) {
            Ok((cdr, record)) => Mapped::keyed(raw, Ok(vec![cdr]), record),
            Err(reason) => Mapped::new(raw, Err(reason)),
        }
    }

    /// The CDR of one line, with the line's identity within its call (see [`record_key`]).
    fn cdr(&self, raw: &str) -> Result<(Value, Option<String>), String> {
        let row = if raw.trim_start().starts_with('{') {
            json_row(raw)?
        } else {
            let values = split(raw)?;
            Row { names: self.layout.names(&values)?, values }
        };
        let start = self.time(&row, "start")?.ok_or("start is empty")?;
        let end = self.time(&row, "end")?.ok_or("end is empty")?;
        let answer = self.time(&row, "answer")?;
        let connected = answer.unwrap_or(end);
        let mut cdr = json!({
            "callId": call_id(&row, raw),
            "serviceType": self.service_type,
            "callerNumber": caller_number(&row),
            "calleeNumber": row.get("dst"),
            "startTime": connected,
            "endTime": end,
            "duration": (end - connected).max(0) / 1000,
            "beginCallTime": start,
        });
        let object = cdr.as_object_mut().expect("an object");
        if let Some(party) = party(&row) {
            object.insert("party".into(), party.into());
        }
        if let Some(disposition) = disposition(row.get("disposition")) {
            object.insert("disposition".into(), disposition.into());
        }
        let account = Some(row.get("accountcode")).filter(|a| !a.is_empty()).map(str::to_string);
        if let Some(account) = account.or_else(|| self.account_id.clone()) {
            object.insert("accountId".into(), account.into());
        }
        object.insert("extra".into(), Value::Object(extra(&row)?));
        Ok((cdr, record_key(&row)))
    }

    /// Column `name` as epoch ms: `%Y-%m-%d %H:%M:%S` in the zone, or epoch seconds
    /// (cdr_custom's `start(int64)` / `start(double)`); `None` if empty (an unanswered call's
    /// answer time).
    fn time(&self, row: &Row, name: &str) -> Result<Option<i64>, String> {
        let text = row.get(name);
        if text.is_empty() {
            return Ok(None);
        }
        if let Ok(secs) = text.parse::<f64>() {
            return Ok(Some((secs * 1000.0).round() as i64));
        }
        self.zone.epoch_ms(text).map(Some).map_err(|e| format!("{name}: {e}"))
    }
}

/// The line's values: one CSV record, quotes doubled inside quoted values.
fn split(raw: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(raw.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(str::to_string).collect()),
        Ok(false) => Err("empty line".into()),
        Err(e) => Err(format!("not a CSV line: {e}")),
    }
}

/// A line of cdr_custom's JSON format (Asterisk 20+, `format = json`): one object whose
/// names are the fields; it names its columns itself, whatever `columns` says.
fn json_row(raw: &str) -> Result<Row, String> {
    let object: Map<String, Value> = serde_json::from_str(raw).map_err(|e| format!("not a JSON object: {e}"))?;
    let (mut names, mut values) = (Vec::new(), Vec::new());
    for (name, value) in object {
        names.push(name.to_ascii_lowercase());
        values.push(match value {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        });
    }
    Ok(Row { names, values })
}

/// linkedid (the call, shared by its legs), else uniqueid (the channel), else an id derived
/// from the line itself: the same line read again gets the same id, two calls never share one
/// (their start, channel or numbers differ).
fn call_id(row: &Row, raw: &str) -> String {
    for name in ["linkedid", "uniqueid"] {
        let id = row.get(name);
        if !id.is_empty() {
            return id.to_string();
        }
    }
    let digest = Sha256::digest(raw.trim_end_matches(['\r', '\n']).as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("ast-{hex}")
}

/// A channel writes a line per party it was bridged or dialled with (several dial attempts,
/// a forked dial): its uniqueid with the line's sequence (`newcdrcolumns`), else with its
/// dstchannel and start, tells the lines of one (callId, party) apart, so none is taken for a
/// duplicate of another; the same line read again gets the same identity. `None` without a
/// linkedid: the callId is then the channel's own.
fn record_key(row: &Row) -> Option<String> {
    party(row)?;
    let (unique, sequence) = (row.get("uniqueid"), row.get("sequence"));
    Some(match sequence.is_empty() {
        false => format!("{unique}/{sequence}"),
        true => format!("{unique}/{}/{}", row.get("dstchannel"), row.get("start")),
    })
}

/// With a linkedid, the call's first channel (uniqueid = linkedid) is the caller's leg.
fn party(row: &Row) -> Option<&'static str> {
    let (linked, unique) = (row.get("linkedid"), row.get("uniqueid"));
    if linked.is_empty() || unique.is_empty() {
        return None;
    }
    Some(if linked == unique { "CALLER" } else { "CALLEE" })
}

/// src, else the number of the caller id (`"Name" <number>`).
fn caller_number(row: &Row) -> String {
    let src = row.get("src");
    if !src.is_empty() {
        return src.to_string();
    }
    let clid = row.get("clid");
    let number = clid.rsplit_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(n, _)| n.trim());
    number.unwrap_or_default().to_string()
}

/// Asterisk's disposition (`ast_cdr_disp2str`, or its number with `disposition(int64)`) in
/// the CDR's terms; CONGESTION is a failure. `None` for anything else (kept in `extra`).
fn disposition(text: &str) -> Option<&'static str> {
    Some(match text.to_ascii_uppercase().as_str() {
        "ANSWERED" | "8" => "ANSWERED",
        "NO ANSWER" | "0" | "1" => "NO_ANSWER",
        "BUSY" | "4" => "BUSY",
        "FAILED" | "CONGESTION" | "2" | "16" => "FAILED",
        _ => return None,
    })
}

/// Every other non-empty column under its Asterisk name; duration, billsec and sequence as
/// numbers (a column that should be one and is not means the columns are configured wrong).
fn extra(row: &Row) -> Result<Map<String, Value>, String> {
    let mut extra = Map::new();
    for (name, value) in row.names.iter().zip(&row.values) {
        let value = value.trim();
        if value.is_empty() || CONSUMED.contains(&name.as_str()) {
            continue;
        }
        let value = if NUMERIC.contains(&name.as_str()) {
            number(value).ok_or_else(|| format!("{name}: {value:?} is not a number (are the columns right?)"))?
        } else {
            Value::String(value.to_string())
        };
        extra.insert(name.clone(), value);
    }
    Ok(extra)
}

fn number(text: &str) -> Option<Value> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(n.into());
    }
    text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CsvColumns, CsvLayout};

    fn mapping(columns: CsvColumns, timezone: &str) -> Mapping {
        let mut settings: AsteriskCsvSettings =
            serde_json::from_value(json!({"path": "/x", "timezone": timezone})).unwrap();
        settings.columns = columns;
        Mapping::new(&settings).unwrap()
    }

    #[test]
    fn without_ids_the_line_itself_names_the_call() {
        let m = mapping(CsvColumns::Named(CsvLayout::CdrCsv), "UTC");
        let line = r#""","100","200","default","""A"" <100>","PJSIP/a-1","","Hangup","","2023-12-01 00:00:00","","2023-12-01 00:00:05",5,0,"CONGESTION","DOCUMENTATION""#;
        let a = m.map(line).cdrs.unwrap().remove(0);
        let again = m.map(&format!("{line}\r")).cdrs.unwrap().remove(0);
        assert_eq!(a["callId"], again["callId"], "a line read again is the same call");
        assert!(a["callId"].as_str().unwrap().starts_with("ast-"));
        let other = m.map(&line.replace("00:00:05", "00:00:06")).cdrs.unwrap().remove(0);
        assert_ne!(a["callId"], other["callId"]);
        assert_eq!(a["disposition"], "FAILED");
        assert_eq!(a["startTime"], a["endTime"], "unanswered: connected = released");
        assert_eq!(a["duration"], 0);
        assert!(a.get("party").is_none());
    }

    #[test]
    fn a_json_line_names_its_own_fields() {
        let m = mapping(CsvColumns::Named(CsvLayout::CdrCsv), "UTC");
        let line = r#"{"clid":"\"Alice\" <1000>","src":"1000","dst":"2000","start":"2023-12-01 00:00:00","answer":"2023-12-01 00:00:10","end":"2023-12-01 00:01:10","duration":70,"billsec":60,"disposition":"ANSWERED","uniqueid":"1701388800.1","sequence":3}"#;
        let cdr = m.map(line).cdrs.unwrap().remove(0);
        assert_eq!((cdr["callId"].as_str(), cdr["duration"].as_i64()), (Some("1701388800.1"), Some(60)));
        assert_eq!(cdr["extra"]["clid"], "\"Alice\" <1000>");
        assert_eq!(cdr["extra"]["sequence"], 3);
        assert!(m.map("{not json").cdrs.unwrap_err().starts_with("not a JSON object"));
    }

    #[test]
    fn a_line_that_does_not_fit_says_why() {
        let m = mapping(CsvColumns::Named(CsvLayout::CdrCsv), "UTC");
        assert!(m.map("a,b,c").cdrs.unwrap_err().contains("3 columns"));
        let bad_time =
            r#""","1","2","d","c","ch","","app","","yesterday","","2023-12-01 00:00:05",5,0,"BUSY","DOCUMENTATION""#;
        assert!(m.map(bad_time).cdrs.unwrap_err().starts_with("start: "));
        let bad_number = bad_time.replace("yesterday", "2023-12-01 00:00:00").replace(",5,0,", ",x,0,");
        assert!(m.map(&bad_number).cdrs.unwrap_err().contains("duration"));
    }
}
