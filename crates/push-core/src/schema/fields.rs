//! The field tables of SPEC §2.1 (CDR) and §2.2 (status event), and the rules that tie
//! several fields together.

use serde_json::Value;

use super::{
    members::tag,
    rules::{int, Rule, MAX_EXTRA_DEPTH},
    FieldError,
};
use crate::config::Service;

/// When a field may or must appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Always present.
    Required,
    /// May be absent or `null`.
    Optional,
    /// Only with serviceType 200.
    Privacy,
    /// Status events: only with status HANGUP.
    HangupOnly,
    /// Assigned by the pusher; refused on input.
    OutputOnly,
}

/// One row of a field table.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    /// JSON name, as in the SPEC.
    pub name: &'static str,
    /// Shape of the value.
    pub rule: Rule,
    /// Presence rule.
    pub need: Need,
}

const fn f(name: &'static str, rule: Rule, need: Need) -> FieldSpec {
    FieldSpec { name, rule, need }
}

const NUMBER: Rule = Rule::Text { min: 1, max: 64 };
const SERVICE_TYPE: Rule = Rule::Code(&[100, 200]);
const PARTY: Rule = Rule::Word(&["CALLER", "CALLEE"]);
const DISPOSITION: Rule = Rule::Word(&["ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CANCELLED"]);
const RELEASE: Rule = Rule::Word(&["CALLER", "CALLEE", "PLATFORM", "UNKNOWN"]);
const CAUSE: Rule = Rule::Int { min: 0, max: 127 };
const SIP: Rule = Rule::Int { min: 100, max: 699 };
const USER_DATA: Rule = Rule::Text { min: 0, max: 2048 };
const STATUS: Rule = Rule::Word(&["DIALING", "RINGING", "ANSWERED", "HANGUP"]);

use Need::*;

/// Privacy-number fields, valid only with serviceType 200.
const PRIVACY: [FieldSpec; 9] = [
    f("phoneNoX", NUMBER, Privacy),
    f("phoneNoA", NUMBER, Privacy),
    f("phoneNoB", NUMBER, Privacy),
    f("phoneNoE", NUMBER, Privacy),
    f("subscriptionId", NUMBER, Privacy),
    f("numberPoolNo", NUMBER, Privacy),
    f("secretCallType", Rule::Code(&[10, 11, 12]), Privacy),
    f("callDisplayType", Rule::Int { min: 1, max: 4 }, Privacy),
    f("calledDisplayNumber", NUMBER, Privacy),
];

const CDR: [FieldSpec; 29] = [
    f("callId", Rule::CallId, Required),
    f("serviceType", SERVICE_TYPE, Required),
    f("callerNumber", NUMBER, Required),
    f("calleeNumber", NUMBER, Required),
    f("startTime", Rule::Millis, Required),
    f("endTime", Rule::Millis, Required),
    f("duration", Rule::Int { min: 0, max: i32::MAX as i64 }, Required),
    f("userData", USER_DATA, Optional),
    f("accountId", NUMBER, Optional),
    f("party", PARTY, Optional),
    f("subServiceType", Rule::Code(&[101, 102, 103, 104, 105, 201, 202, 203, 204, 205]), Optional),
    f("direction", Rule::Word(&["INBOUND", "OUTBOUND", "INTERNAL"]), Optional),
    f("beginCallTime", Rule::Millis, Optional),
    f("ringTime", Rule::Millis, Optional),
    f("disposition", DISPOSITION, Optional),
    f("releaseDirection", RELEASE, Optional),
    f("hangupCause", CAUSE, Optional),
    f("sipCode", SIP, Optional),
    f("recordUrl", Rule::Url, Optional),
    f("extra", Rule::Object { max_bytes: 4096, max_depth: MAX_EXTRA_DEPTH }, Optional),
    PRIVACY[0],
    PRIVACY[1],
    PRIVACY[2],
    PRIVACY[3],
    PRIVACY[4],
    PRIVACY[5],
    PRIVACY[6],
    PRIVACY[7],
    PRIVACY[8],
];

const STATUS_FIELDS: [FieldSpec; 23] = [
    f("callId", Rule::CallId, Required),
    f("serviceType", SERVICE_TYPE, Required),
    f("status", STATUS, Required),
    f("timestamp", Rule::Millis, Required),
    f("sequence", Rule::Int { min: 0, max: i64::MAX }, OutputOnly),
    f("party", PARTY, Optional),
    f("callerNumber", NUMBER, Optional),
    f("calleeNumber", NUMBER, Optional),
    f("accountId", NUMBER, Optional),
    f("userData", USER_DATA, Optional),
    f("disposition", DISPOSITION, HangupOnly),
    f("releaseDirection", RELEASE, HangupOnly),
    f("hangupCause", CAUSE, HangupOnly),
    f("sipCode", SIP, HangupOnly),
    PRIVACY[0],
    PRIVACY[1],
    PRIVACY[2],
    PRIVACY[3],
    PRIVACY[4],
    PRIVACY[5],
    PRIVACY[6],
    PRIVACY[7],
    PRIVACY[8],
];

/// The most fields a table has (the CDR's).
pub(super) const MAX_FIELDS: usize = CDR.len();
const _: () = assert!(STATUS_FIELDS.len() <= MAX_FIELDS);

const fn tags<const N: usize>(specs: &[FieldSpec; N]) -> [u64; N] {
    let mut tags = [0; N];
    let mut at = 0;
    while at < N {
        tags[at] = tag(specs[at].name);
        at += 1;
    }
    tags
}

const CDR_TAGS: [u64; CDR.len()] = tags(&CDR);
const STATUS_TAGS: [u64; STATUS_FIELDS.len()] = tags(&STATUS_FIELDS);

/// The [`tag`] of each name of [`specs`], position for position, to match members by.
pub(super) fn tags_of(service: Service) -> &'static [u64] {
    match service {
        Service::Cdr => &CDR_TAGS,
        Service::Status => &STATUS_TAGS,
    }
}

/// The field table of `service`'s payload, in the order subscribers receive the fields.
pub fn specs(service: Service) -> &'static [FieldSpec] {
    match service {
        Service::Cdr => &CDR,
        Service::Status => &STATUS_FIELDS,
    }
}

/// One object's fields as the checks after the first pass see them: its values by position in
/// its table (`null` as absent), all of them or only those that passed their own rule (SPEC
/// §3: a field is never reported twice). Looking a name up is a scan of the table's tags.
#[derive(Clone, Copy)]
pub(super) struct View<'v> {
    service: Service,
    values: &'v [Option<&'v Value>],
    failed: &'v [String],
}

impl<'v> View<'v> {
    /// `values` are position for position those of `service`'s table; those named in `failed`
    /// are hidden.
    pub(super) fn new(service: Service, values: &'v [Option<&'v Value>], failed: &'v [String]) -> Self {
        View { service, values, failed }
    }

    /// Whose table the values are of.
    pub(super) fn service(&self) -> Service {
        self.service
    }

    /// Each field of the table with its value as [`View::get`] gives it, in table order.
    pub(super) fn fields(&self) -> impl Iterator<Item = (&'static FieldSpec, Option<&'v Value>)> + use<'v> {
        let failed = self.failed;
        let hidden = move |spec: &FieldSpec| failed.iter().any(|f| f == spec.name);
        specs(self.service).iter().zip(self.values).map(move |(spec, v)| (spec, v.filter(|_| !hidden(spec))))
    }

    /// The value of field `name` unless it is absent, `null`, not of this table, or failed.
    #[inline]
    pub(super) fn get(&self, name: &str) -> Option<&'v Value> {
        if self.failed.iter().any(|f| f == name) {
            return None;
        }
        let (specs, wanted) = (specs(self.service), tag(name));
        let at = tags_of(self.service).iter().position(|t| *t == wanted)?;
        self.values[at].filter(|_| specs[at].name == name)
    }
}

/// Rules across fields; `obj` shows only the fields that passed their own rule.
pub(super) fn cross_check(service: Service, index: usize, obj: View<'_>, errors: &mut Vec<FieldError>) {
    let mut err = |field: &str, msg: String| errors.push(FieldError::new(index, field, msg));
    let service_type = obj.get("serviceType").and_then(Value::as_i64).unwrap_or(0);
    for (spec, value) in obj.fields().filter(|(s, _)| s.need == Privacy) {
        if service_type == 100 && value.is_some() {
            err(spec.name, "is a privacy-number field, only allowed with serviceType 200".into());
        }
    }
    if service_type == 200 && obj.get("phoneNoX").is_none() {
        err("phoneNoX", "is required with serviceType 200".into());
    }
    if let Some(sub) = obj.get("subServiceType").and_then(Value::as_i64) {
        if sub / 100 != service_type / 100 {
            err("subServiceType", format!("{sub} does not belong to serviceType {service_type}"));
        }
    }
    match service {
        Service::Cdr => cdr_times(obj, &mut err),
        Service::Status => {
            let status = obj.get("status").and_then(Value::as_str).unwrap_or("");
            for (spec, value) in obj.fields().filter(|(s, _)| s.need == HangupOnly) {
                if status != "HANGUP" && value.is_some() {
                    err(spec.name, format!("is only allowed with status HANGUP (got {status})"));
                }
            }
        }
    }
}

fn cdr_times(obj: View<'_>, err: &mut impl FnMut(&str, String)) {
    let time = |name: &str| obj.get(name).and_then(|v| int(v).ok());
    let (Some(start), Some(end)) = (time("startTime"), time("endTime")) else {
        return;
    };
    if end < start {
        err("endTime", format!("must not be before startTime ({end} < {start})"));
        return;
    }
    let expected = (end - start) / 1000;
    if let Some(duration) = time("duration") {
        if duration != expected {
            err("duration", format!("must be floor((endTime - startTime) / 1000) = {expected} (got {duration})"));
        }
    }
    let answered = obj.get("disposition").and_then(Value::as_str).is_none_or(|d| d == "ANSWERED");
    if !answered && start != end {
        err("startTime", "must equal endTime when the call was not answered".into());
    }
    let ring = time("ringTime");
    if let Some(begin) = time("beginCallTime") {
        if ring.is_some_and(|r| begin > r) {
            err("beginCallTime", "must not be after ringTime".into());
        } else if begin > start {
            err("beginCallTime", "must not be after startTime".into());
        }
    }
    if ring.is_some_and(|r| r > start) {
        err("ringTime", "must not be after startTime".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_names_have_distinct_tags() {
        let all: Vec<&str> = CDR.iter().chain(&STATUS_FIELDS).map(|s| s.name).collect();
        for name in &all {
            let same_tag: Vec<&&str> = all.iter().filter(|n| tag(n) == tag(name)).collect();
            assert!(same_tag.iter().all(|n| n == &name), "{name} and {same_tag:?}");
        }
        for service in [Service::Cdr, Service::Status] {
            let tags: Vec<u64> = specs(service).iter().map(|s| tag(s.name)).collect();
            assert_eq!(tags_of(service), tags);
        }
    }
}
