//! A validated event and its normalized body, written straight from the field values that
//! were read: no `serde_json::Map` per event, and the body serialized once.

use std::{borrow::Cow, fmt::Write as _};

use serde_json::{Map, Value};

use super::{
    fields::{Need, View},
    members::EXTRA,
};
use crate::config::Service;

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
    /// The native record's own identity, for a record a switch source mapped (see
    /// [`ValidEvent::identify_record`]).
    record: Option<String>,
    body: SplitBody,
}

impl ValidEvent {
    /// Makes the native record's own identity (a leg uuid, a CSV line's uniqueid and
    /// sequence) part of the idempotency key: a switch can write several records for one
    /// (callId, party), a forked call's callee legs say, and each is a CDR of its own, while
    /// the same record sent again is still a duplicate.
    pub fn identify_record(&mut self, record: impl Into<String>) {
        self.record = Some(record.into());
    }

    /// Builds the event once its object passed every rule. The body is its fields in table
    /// order, `null` dropped, split at the output-only `sequence` slot; `extra` is written as
    /// `raw_extra`, its text as sent, when the object was read from its bytes. `scratch` is a
    /// buffer reused across events, so that the body is allocated once, at its exact size.
    pub(super) fn build(fields: View<'_>, raw_extra: Option<&str>, scratch: &mut String) -> Self {
        let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_string);
        scratch.clear();
        scratch.push('{');
        let mut at_slot = None;
        for (spec, value) in fields.fields() {
            if spec.need == Need::OutputOnly {
                at_slot = Some(scratch.len());
            } else if let Some(value) = value {
                // Members before the slot are joined by commas; each one after it follows one.
                if scratch.len() > 1 || at_slot.is_some() {
                    scratch.push(',');
                }
                match raw_extra.filter(|_| spec.name == EXTRA) {
                    Some(raw) => write_raw_member(scratch, spec.name, raw),
                    None => write_member(scratch, spec.name, value),
                }
            }
        }
        scratch.push('}');
        let at = at_slot.unwrap_or(scratch.len() - 1);
        ValidEvent {
            call_id: text("callId").unwrap_or_default(),
            party: text("party"),
            status: if fields.service() == Service::Status { text("status") } else { None },
            service_type: fields.get("serviceType").and_then(Value::as_u64).unwrap_or(0) as u16,
            account_id: text("accountId"),
            record: None,
            body: SplitBody { json: scratch.as_str().into(), slot: at },
        }
    }

    /// The idempotency key: (callId, party) for a CDR, (callId, party, status) for a status;
    /// with the native record's identity when a source gave one.
    pub fn dedup_key(&self) -> String {
        let key = key(&self.call_id, self.party.as_deref(), self.status.as_deref());
        match &self.record {
            Some(record) => format!("{key}|#{record}"),
            None => key,
        }
    }

    /// The key of the HANGUP of this event's (callId, party): once it exists, nothing else may.
    pub fn hangup_key(&self) -> String {
        key(&self.call_id, self.party.as_deref(), Some("HANGUP"))
    }

    /// The event as the outbox keeps it: the body moves over as it is, with the keys.
    pub fn into_stored(self) -> StoredEvent {
        let dedup_key = self.dedup_key();
        let hangup_key = self.status.is_some().then(|| self.hangup_key());
        let body = self.body;
        StoredEvent { call_id: self.call_id, party: self.party, status: self.status, dedup_key, hangup_key, body }
    }

    /// The body subscribers receive, with `sequence` filled in for status events (the same
    /// bytes the outbox stores, see [`ValidEvent::into_stored`]).
    pub fn body_json(&self, sequence: Option<i64>) -> String {
        self.body.with_sequence(sequence).into_owned()
    }

    /// The normalized body parsed back into an object (a status event's `sequence` slot
    /// holds 0), for tests and tools that look at single fields; ingest never builds it.
    pub fn body(&self) -> Map<String, Value> {
        let json = self.body_json(self.status.is_some().then_some(0));
        // Read as ingest reads it: serde_json's raw-value marker is an ordinary name.
        match serde_json::from_str::<super::plain::Plain>(&json) {
            Ok(super::plain::Plain(Value::Object(body))) => body,
            _ => unreachable!("the normalized body is a JSON object"),
        }
    }
}

/// Writes `"name":value`, the value as serde_json serializes it (compact, its escaping):
/// strings that need no escape are copied as they are, which is the same bytes, faster.
fn write_member(out: &mut String, name: &str, value: &Value) {
    debug_assert!(!name.bytes().any(needs_escape), "field names are plain");
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    match value {
        Value::String(s) if !s.bytes().any(needs_escape) => {
            out.push('"');
            out.push_str(s);
            out.push('"');
        }
        _ => write!(out, "{value}").expect("writing to a String cannot fail"),
    }
}

/// Writes `"name":raw`, `raw` being JSON text copied as it was sent.
fn write_raw_member(out: &mut String, name: &str, raw: &str) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    out.push_str(raw);
}

/// The bytes serde_json escapes in a string: `"`, `\` and the control characters.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// A serialized body and where status-pusher puts `sequence` in it (for a CDR, which has
/// no slot: before the closing brace, and nothing is put there). One allocation per event.
#[derive(Debug, Clone)]
struct SplitBody {
    json: Box<str>,
    slot: usize,
}

impl SplitBody {
    /// The body with `sequence` put in its slot; without one (a CDR) the stored text itself.
    fn with_sequence(&self, sequence: Option<i64>) -> Cow<'_, str> {
        let (head, tail) = self.json.split_at(self.slot);
        match sequence {
            Some(seq) => Cow::Owned(format!("{head},\"sequence\":{seq}{tail}")),
            None => Cow::Borrowed(&self.json),
        }
    }
}

/// A validated event as the outbox keeps it: the routing facts and the body already
/// serialized, split where status-pusher puts `sequence` (after `timestamp`). Building the
/// body once, at validation, keeps ingest from holding a JSON tree per event while it waits
/// for the commit, and from serializing it again in the writer.
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
    body: SplitBody,
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

    /// The body subscribers receive, with `sequence` for status events (a CDR's is borrowed:
    /// the writer copies no body it does not change).
    pub fn body_json(&self, sequence: Option<i64>) -> Cow<'_, str> {
        self.body.with_sequence(sequence)
    }
}

/// `callId`, `party` and `status` (if any), joined by U+001F.
fn key(call_id: &str, party: Option<&str>, status: Option<&str>) -> String {
    let party = party.unwrap_or("");
    let mut key = String::with_capacity(call_id.len() + party.len() + status.map_or(1, |s| s.len() + 2));
    key.push_str(call_id);
    key.push('\u{1f}');
    key.push_str(party);
    if let Some(status) = status {
        key.push('\u{1f}');
        key.push_str(status);
    }
    key
}
