//! Payload schemas and validation of SPEC §2: pure, knows nothing of HTTP, SQL or retries.
//!
//! Validation works on the raw JSON so that one request gets *every* violated rule back, with
//! the field and the rule named, instead of the first serde error. A valid event comes out as
//! a [`ValidEvent`]: its routing facts plus the normalized body that subscribers receive
//! (fields in the SPEC's order, `null` optionals dropped, everything else byte-for-byte as
//! sent).

mod fields;
pub mod rules;

use serde::Serialize;
use serde_json::{Map, Value};

pub use self::fields::{FieldSpec, Need};
use crate::config::Service;

/// Most items one ingest request may carry.
pub const MAX_BATCH: usize = 1000;

/// One violated rule, as the API reports it in `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Position of the item in the request (0 for a single object).
    pub index: usize,
    /// The field at fault; empty when the item as a whole is wrong.
    pub field: String,
    /// The rule, as a sentence.
    pub message: String,
}

impl FieldError {
    fn new(index: usize, field: &str, message: impl Into<String>) -> Self {
        FieldError { index, field: field.to_string(), message: message.into() }
    }
}

/// A validated event: what the outbox needs to route, deduplicate and order it.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    /// `callId`.
    pub call_id: String,
    /// `party`, `CALLER` or `CALLEE`, when the call has one record per leg.
    pub party: Option<String>,
    /// `status` of a status event; `None` for a CDR.
    pub status: Option<String>,
    /// `serviceType`, 100 or 200.
    pub service_type: u16,
    /// `accountId`, used to route to subscribers.
    pub account_id: Option<String>,
    /// The normalized object subscribers receive (status events hold a `sequence` slot).
    pub body: Map<String, Value>,
}

impl ValidEvent {
    /// The idempotency key: (callId, party) for a CDR, (callId, party, status) for a status.
    pub fn dedup_key(&self) -> String {
        key(&self.call_id, self.party.as_deref(), self.status.as_deref())
    }

    /// The key of the HANGUP of this event's (callId, party): once it exists, nothing else may.
    pub fn hangup_key(&self) -> String {
        key(&self.call_id, self.party.as_deref(), Some("HANGUP"))
    }

    /// The body serialized once, for the outbox (the JSON tree is dropped), with its keys.
    pub fn into_stored(self) -> StoredEvent {
        let (head, tail) = self.body_parts();
        let dedup_key = self.dedup_key();
        let hangup_key = self.status.is_some().then(|| self.hangup_key());
        StoredEvent { call_id: self.call_id, party: self.party, status: self.status, dedup_key, hangup_key, head, tail }
    }

    /// The body subscribers receive, with `sequence` filled in for status events (the same
    /// bytes the outbox stores, see [`ValidEvent::into_stored`]).
    pub fn body_json(&self, sequence: Option<i64>) -> String {
        let (head, tail) = self.body_parts();
        with_sequence(&head, &tail, sequence)
    }

    /// The serialized body split at the `sequence` slot (a CDR has none: all of it is head).
    fn body_parts(&self) -> (String, String) {
        match self.body.keys().position(|k| k == "sequence") {
            Some(at) => {
                let head = members(self.body.iter().take(at));
                let tail = members(self.body.iter().skip(at + 1));
                (format!("{{{head}"), if tail.is_empty() { "}".to_string() } else { format!(",{tail}}}") })
            }
            None => (format!("{{{}", members(self.body.iter())), "}".to_string()),
        }
    }
}

fn with_sequence(head: &str, tail: &str, sequence: Option<i64>) -> String {
    match sequence {
        Some(seq) => format!("{head},\"sequence\":{seq}{tail}"),
        None => format!("{head}{tail}"),
    }
}

/// A validated event as the outbox keeps it: the routing facts and the body already
/// serialized, split where status-pusher puts `sequence` (after `timestamp`). Building the
/// body once, here, keeps ingest from holding a JSON tree per event while it waits for the
/// commit, and from serializing it again in the writer.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// `callId`.
    pub call_id: String,
    /// `party`, if any.
    pub party: Option<String>,
    /// `status` of a status event; `None` for a CDR.
    pub status: Option<String>,
    dedup_key: String,
    hangup_key: Option<String>,
    head: String,
    tail: String,
}

impl StoredEvent {
    /// See [`ValidEvent::dedup_key`]; computed once, before the event reaches the writer.
    pub fn dedup_key(&self) -> &str {
        &self.dedup_key
    }

    /// See [`ValidEvent::hangup_key`]; `None` for a CDR.
    pub fn hangup_key(&self) -> Option<&str> {
        self.hangup_key.as_deref()
    }

    /// The body subscribers receive, with `sequence` for status events.
    pub fn body_json(&self, sequence: Option<i64>) -> String {
        with_sequence(&self.head, &self.tail, sequence)
    }
}

fn key(call_id: &str, party: Option<&str>, status: Option<&str>) -> String {
    let party = party.unwrap_or("");
    match status {
        Some(status) => format!("{call_id}\u{1f}{party}\u{1f}{status}"),
        None => format!("{call_id}\u{1f}{party}"),
    }
}

/// Serializes `entries` as the inside of a JSON object (no braces): `"a":1,"b":2`.
fn members<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>) -> String {
    let mut out = String::new();
    for (k, v) in entries {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out
}

/// Validates a request body: one object or an array of 1..=[`MAX_BATCH`] objects, all valid.
pub fn validate_body(service: Service, body: &Value) -> Result<Vec<ValidEvent>, Vec<FieldError>> {
    validate_body_with(service, body, |event| event)
}

/// Like [`validate_body`], but turns each valid event into `T` as soon as it is validated
/// (ingest makes it a stored event at once, so a request never holds a JSON tree per event).
pub fn validate_body_with<T>(
    service: Service,
    body: &Value,
    mut convert: impl FnMut(ValidEvent) -> T,
) -> Result<Vec<T>, Vec<FieldError>> {
    let items: Vec<&Value> = match body {
        Value::Array(items) if items.is_empty() || items.len() > MAX_BATCH => {
            let msg = format!("an array must hold 1 to {MAX_BATCH} items (got {})", items.len());
            return Err(vec![FieldError::new(0, "", msg)]);
        }
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut valid = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match validate_event(service, index, item) {
            Ok(event) if errors.is_empty() => valid.push(convert(event)),
            Ok(_) => {}
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(valid)
    } else {
        Err(errors)
    }
}

/// Validates one event object against the rules of `service`'s payload.
pub fn validate_event(service: Service, index: usize, value: &Value) -> Result<ValidEvent, Vec<FieldError>> {
    let Some(object) = value.as_object() else {
        return Err(vec![FieldError::new(index, "", "must be a JSON object")]);
    };
    let specs = fields::specs(service);
    let mut errors = unknown_fields(index, object, specs);
    for spec in specs {
        match object.get(spec.name) {
            None | Some(Value::Null) if spec.need == Need::Required => {
                errors.push(FieldError::new(index, spec.name, "is required"));
            }
            None | Some(Value::Null) => {}
            Some(_) if spec.need == Need::OutputOnly => {
                errors.push(FieldError::new(index, spec.name, "is output only; the pusher assigns it"));
            }
            Some(v) => {
                if let Err(msg) = spec.rule.check(v) {
                    errors.push(FieldError::new(index, spec.name, msg));
                }
            }
        }
    }
    // Rules across fields are reported along with the rules of single fields (SPEC §3: every
    // violated rule), judged on the fields that passed their own rule, never twice per field.
    let failed: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
    let key_failed = |f: &String| f == "serviceType" || (service == Service::Status && f == "status");
    if failed.is_empty() {
        fields::cross_check(service, index, object, &mut errors);
    } else if !failed.iter().any(key_failed) {
        let passed: Map<String, Value> =
            object.iter().filter(|(k, _)| !failed.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut cross = Vec::new();
        fields::cross_check(service, index, &passed, &mut cross);
        errors.extend(cross.into_iter().filter(|e| !failed.contains(&e.field)));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(normalize(service, object, specs))
}

fn unknown_fields(index: usize, object: &Map<String, Value>, specs: &[FieldSpec]) -> Vec<FieldError> {
    object
        .keys()
        .filter(|key| !specs.iter().any(|s| s.name == key.as_str()))
        .map(|key| {
            let hint = specs.iter().find(|s| s.name.eq_ignore_ascii_case(key));
            let msg = match hint {
                Some(s) => format!("is not a known field; did you mean `{}`?", s.name),
                None => "is not a known field".to_string(),
            };
            FieldError::new(index, key, msg)
        })
        .collect()
}

fn normalize(service: Service, object: &Map<String, Value>, specs: &[FieldSpec]) -> ValidEvent {
    let mut body = Map::new();
    for spec in specs {
        if spec.need == Need::OutputOnly {
            body.insert(spec.name.to_string(), Value::from(0));
        } else if let Some(v) = object.get(spec.name).filter(|v| !v.is_null()) {
            body.insert(spec.name.to_string(), v.clone());
        }
    }
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
    ValidEvent {
        call_id: text("callId").unwrap_or_default(),
        party: text("party"),
        status: if service == Service::Status { text("status") } else { None },
        service_type: body.get("serviceType").and_then(Value::as_u64).unwrap_or(0) as u16,
        account_id: text("accountId"),
        body,
    }
}

#[cfg(test)]
mod tests;
