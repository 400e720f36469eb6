//! An independent reading of SPEC §2 validation, used to check that every record callsim
//! generates would be accepted by the pushers.

use serde_json::{Map, Value};

const CDR_FIELDS: &[&str] = &[
    "callId",
    "serviceType",
    "callerNumber",
    "calleeNumber",
    "startTime",
    "endTime",
    "duration",
    "userData",
    "accountId",
    "party",
    "subServiceType",
    "direction",
    "beginCallTime",
    "ringTime",
    "disposition",
    "releaseDirection",
    "hangupCause",
    "sipCode",
    "recordUrl",
    "extra",
];
const STATUS_FIELDS: &[&str] = &[
    "callId",
    "serviceType",
    "status",
    "timestamp",
    "party",
    "callerNumber",
    "calleeNumber",
    "accountId",
    "userData",
    "disposition",
    "releaseDirection",
    "hangupCause",
    "sipCode",
];
const HANGUP_ONLY: &[&str] = &["disposition", "releaseDirection", "hangupCause", "sipCode"];
const PRIVACY_FIELDS: &[&str] = &[
    "phoneNoX",
    "phoneNoA",
    "phoneNoB",
    "phoneNoE",
    "subscriptionId",
    "numberPoolNo",
    "secretCallType",
    "callDisplayType",
    "calledDisplayNumber",
];
/// Earliest plausible epoch ms (2001-09-09): anything smaller looks like seconds.
const MIN_MS: i64 = 1_000_000_000_000;

fn string_1_64(obj: &Map<String, Value>, key: &str, errs: &mut Vec<String>) {
    if let Some(v) = obj.get(key) {
        match v.as_str() {
            Some(s) if (1..=64).contains(&s.chars().count()) => {}
            _ => errs.push(format!("{key} must be a string of 1-64 characters")),
        }
    }
}

fn ms(obj: &Map<String, Value>, key: &str, errs: &mut Vec<String>) -> Option<i64> {
    let v = obj.get(key)?;
    match v.as_i64() {
        Some(t) if t >= MIN_MS => Some(t),
        _ => {
            errs.push(format!("{key} must be epoch milliseconds"));
            None
        }
    }
}

fn one_of(obj: &Map<String, Value>, key: &str, allowed: &[&str], errs: &mut Vec<String>) {
    if let Some(v) = obj.get(key) {
        if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
            errs.push(format!("{key} has a bad value {v}"));
        }
    }
}

fn int_in(obj: &Map<String, Value>, key: &str, lo: i64, hi: i64, errs: &mut Vec<String>) {
    if let Some(v) = obj.get(key) {
        if !v.as_i64().is_some_and(|n| (lo..=hi).contains(&n)) {
            errs.push(format!("{key} must be an integer {lo}-{hi}"));
        }
    }
}

fn common(obj: &Map<String, Value>, allowed: &[&str], errs: &mut Vec<String>) -> i64 {
    for key in obj.keys() {
        if !allowed.contains(&key.as_str()) && !PRIVACY_FIELDS.contains(&key.as_str()) {
            errs.push(format!("unknown field {key}"));
        }
    }
    match obj.get("callId").and_then(Value::as_str) {
        Some(id) if (1..=128).contains(&id.len()) && id.bytes().all(|b| (0x20..0x7f).contains(&b)) => {}
        _ => errs.push("callId must be 1-128 printable ASCII".into()),
    }
    let service = obj.get("serviceType").and_then(Value::as_i64).unwrap_or(0);
    if service != 100 && service != 200 {
        errs.push("serviceType must be 100 or 200".into());
    }
    for key in ["callerNumber", "calleeNumber", "accountId", "phoneNoX", "phoneNoA", "phoneNoB", "subscriptionId"] {
        string_1_64(obj, key, errs);
    }
    if let Some(u) = obj.get("userData") {
        if u.as_str().is_none_or(|s| s.chars().count() > 2048) {
            errs.push("userData must be a string of <= 2048 characters".into());
        }
    }
    one_of(obj, "party", &["CALLER", "CALLEE"], errs);
    one_of(obj, "disposition", &["ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CANCELLED"], errs);
    one_of(obj, "releaseDirection", &["CALLER", "CALLEE", "PLATFORM", "UNKNOWN"], errs);
    int_in(obj, "hangupCause", 0, 127, errs);
    int_in(obj, "sipCode", 100, 699, errs);
    int_in(obj, "secretCallType", 10, 12, errs);
    let has_privacy = PRIVACY_FIELDS.iter().any(|k| obj.contains_key(*k));
    if service == 100 && has_privacy {
        errs.push("privacy fields with serviceType 100".into());
    }
    if service == 200 && !obj.contains_key("phoneNoX") {
        errs.push("phoneNoX is required with serviceType 200".into());
    }
    service
}

/// Every SPEC §2.1 rule a CDR breaks (empty when valid).
pub fn validate_cdr(value: &Value) -> Vec<String> {
    let Some(obj) = value.as_object() else {
        return vec!["not an object".into()];
    };
    let mut errs = Vec::new();
    let service = common(obj, CDR_FIELDS, &mut errs);
    for key in ["callId", "serviceType", "callerNumber", "calleeNumber", "startTime", "endTime", "duration"] {
        if !obj.contains_key(key) {
            errs.push(format!("{key} is required"));
        }
    }
    let start = ms(obj, "startTime", &mut errs);
    let end = ms(obj, "endTime", &mut errs);
    let begin = ms(obj, "beginCallTime", &mut errs);
    let ring = ms(obj, "ringTime", &mut errs);
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            errs.push("endTime before startTime".into());
        }
        if obj.get("duration").and_then(Value::as_i64) != Some((e - s) / 1000) {
            errs.push("duration inconsistent with the times".into());
        }
    }
    let chain: Vec<i64> = [begin, ring, start].into_iter().flatten().collect();
    if chain.windows(2).any(|w| w[0] > w[1]) {
        errs.push("beginCallTime <= ringTime <= startTime violated".into());
    }
    one_of(obj, "direction", &["INBOUND", "OUTBOUND", "INTERNAL"], &mut errs);
    let (lo, hi) = if service == 200 { (201, 205) } else { (101, 105) };
    int_in(obj, "subServiceType", lo, hi, &mut errs);
    if let Some(extra) = obj.get("extra") {
        if !extra.is_object() || extra.to_string().len() > 4096 {
            errs.push("extra must be an object of <= 4 KiB".into());
        }
    }
    if let Some(url) = obj.get("recordUrl") {
        if !url.as_str().is_some_and(|u| u.starts_with("http://") || u.starts_with("https://")) {
            errs.push("recordUrl must be a URL".into());
        }
    }
    errs
}

/// Every SPEC §2.2 rule a status event (as posted, without sequence) breaks.
pub fn validate_status(value: &Value) -> Vec<String> {
    let Some(obj) = value.as_object() else {
        return vec!["not an object".into()];
    };
    let mut errs = Vec::new();
    common(obj, STATUS_FIELDS, &mut errs);
    one_of(obj, "status", &["DIALING", "RINGING", "ANSWERED", "HANGUP"], &mut errs);
    if ms(obj, "timestamp", &mut errs).is_none() {
        errs.push("timestamp is required".into());
    }
    let hangup = obj.get("status").and_then(Value::as_str) == Some("HANGUP");
    for key in HANGUP_ONLY {
        if obj.contains_key(*key) && !hangup {
            errs.push(format!("{key} only with HANGUP"));
        }
    }
    errs
}
