//! One ESL event to one SPEC §2.2 status (INTEGRATIONS.md §1.2).
//!
//! - CHANNEL_CREATE → DIALING, CHANNEL_PROGRESS (180) and CHANNEL_PROGRESS_MEDIA (183) →
//!   RINGING (the second is a duplicate of the first: same callId, party and status),
//!   CHANNEL_ANSWER → ANSWERED, CHANNEL_HANGUP_COMPLETE → HANGUP; any other event gives no
//!   status (nothing is invented for an event that was not sent).
//! - `callId`: the a-leg's uuid, as the CDR sources key a call: a b-leg names it in
//!   `variable_originating_leg_uuid` (else `Channel-Call-UUID`); `party` CALLER on the
//!   a-leg, CALLEE on a b-leg.
//! - `timestamp`: `Event-Date-Timestamp` (µs) in ms.
//! - HANGUP's disposition, hangupCause, sipCode and releaseDirection come from the same
//!   rules as mod_json_cdr's CDRs (`freeswitch::cause`).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::frame::parse_headers;
use crate::sources::{
    freeswitch::{
        body::percent_decode,
        cause::{self, Ending, Leg},
    },
    Mapped,
};

/// An event's fields, by lower-cased name (header name case varies).
#[derive(Debug, Default, Clone)]
pub struct Fields(HashMap<String, String>);

impl Fields {
    /// A `text/event-json` body: a flat object of strings (`_body` left out).
    pub fn from_json(body: &[u8]) -> Result<Fields, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("an event that is not JSON: {e}"))?;
        let Value::Object(object) = value else { return Err("a JSON event that is not an object".into()) };
        let text = |v: Value| match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Ok(Fields(
            object.into_iter().filter(|(k, _)| k != "_body").map(|(k, v)| (k.to_ascii_lowercase(), text(v))).collect(),
        ))
    }

    /// A `text/event-plain` body: `Name: value` lines, values percent-encoded.
    pub fn from_plain(body: &[u8]) -> Result<Fields, String> {
        let end = body.windows(2).position(|w| w == b"\n\n").unwrap_or(body.len());
        let headers = parse_headers(&body[..end])?;
        let decode = |v: String| String::from_utf8_lossy(&percent_decode(v.as_bytes())).into_owned();
        Ok(Fields(headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), decode(v))).collect()))
    }

    /// A non-empty field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn number(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|v| v.parse().ok())
    }
}

/// What the statuses of this switch say that events do not.
#[derive(Debug, Clone)]
pub struct EslMapping {
    /// `serviceType`.
    pub service_type: u16,
    /// `accountId`, if configured.
    pub account_id: Option<String>,
}

impl EslMapping {
    /// The status of an event, `None` for an event that gives none (HEARTBEAT, ...).
    pub fn map(&self, raw: &str, fields: &Fields) -> Option<Mapped> {
        let status = match fields.get("Event-Name")? {
            "CHANNEL_CREATE" => "DIALING",
            "CHANNEL_PROGRESS" | "CHANNEL_PROGRESS_MEDIA" => "RINGING",
            "CHANNEL_ANSWER" => "ANSWERED",
            "CHANNEL_HANGUP_COMPLETE" => "HANGUP",
            _ => return None,
        };
        Some(Mapped::new(raw, self.status(fields, status).map(|s| vec![s])))
    }

    /// Parses a raw event again (a reject re-driven): JSON, else plain.
    pub fn parse(&self, raw: &str) -> Mapped {
        let fields = if raw.trim_start().starts_with('{') {
            Fields::from_json(raw.as_bytes())
        } else {
            Fields::from_plain(raw.as_bytes())
        };
        match fields {
            Ok(fields) => {
                self.map(raw, &fields).unwrap_or_else(|| Mapped::new(raw, Err("the event gives no status".into())))
            }
            Err(reason) => Mapped::new(raw, Err(reason)),
        }
    }

    fn status(&self, f: &Fields, status: &str) -> Result<Value, String> {
        let uuid = f.get("Unique-ID").ok_or("the event names no leg (Unique-ID)")?;
        let micros =
            f.number("Event-Date-Timestamp").filter(|t| *t > 0).ok_or("the event has no Event-Date-Timestamp")?;
        let call = f.get("variable_originating_leg_uuid").or_else(|| f.get("Channel-Call-UUID")).unwrap_or(uuid);
        let leg = if call == uuid { Leg::A } else { Leg::B };
        let mut event = json!({
            "callId": call,
            "serviceType": self.service_type,
            "status": status,
            "timestamp": micros.div_euclid(1000),
            "party": if leg == Leg::A { "CALLER" } else { "CALLEE" },
        });
        let out = event.as_object_mut().expect("an object");
        for (field, name) in
            [("callerNumber", "Caller-Caller-ID-Number"), ("calleeNumber", "Caller-Destination-Number")]
        {
            if let Some(v) = f.get(name) {
                out.insert(field.into(), v.into());
            }
        }
        if let Some(account) = &self.account_id {
            out.insert("accountId".into(), account.clone().into());
        }
        if status == "HANGUP" {
            outcome(f, leg, out);
        }
        Ok(event)
    }
}

fn outcome(f: &Fields, leg: Leg, out: &mut Map<String, Value>) {
    let answered =
        ["Caller-Channel-Answered-Time", "variable_answer_uepoch"].iter().any(|n| f.number(n).unwrap_or(0) > 0);
    let had_other_leg =
        ["Other-Leg-Unique-ID", "variable_bridge_uuid", "variable_last_bridge_to", "variable_originate_disposition"]
            .iter()
            .any(|n| f.get(n).is_some());
    let ending = Ending {
        leg,
        cause: f.get("Hangup-Cause").or_else(|| f.get("variable_hangup_cause")),
        sip_term: f.get("variable_sip_term_status").and_then(|s| s.parse().ok()).filter(|c| (100..=699).contains(c)),
        how: f.get("variable_sip_hangup_disposition"),
        answered,
        had_other_leg,
        reported_q850: f.get("variable_hangup_cause_q850").and_then(|s| s.parse().ok()),
    };
    cause::outcome(&ending).write_into(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPPING: EslMapping = EslMapping { service_type: 100, account_id: None };

    #[test]
    fn a_plain_event_is_percent_decoded_and_a_b_leg_keyed_by_its_a_leg() {
        let raw = "Event-Name: CHANNEL_PROGRESS_MEDIA\nUnique-ID: b\nvariable_originating_leg_uuid: a\n\
                   Event-Date-Timestamp: 1701388802250123\nCaller-Caller-ID-Number: %2B861001\n";
        let status = MAPPING.parse(raw).cdrs.unwrap().remove(0);
        assert_eq!(
            status,
            json!({"callId": "a", "serviceType": 100, "status": "RINGING", "timestamp": 1701388802250_i64,
                   "party": "CALLEE", "callerNumber": "+861001"})
        );
    }

    #[test]
    fn an_event_of_no_call_state_gives_nothing_and_one_without_a_leg_says_so() {
        let heartbeat = Fields::from_json(br#"{"Event-Name":"HEARTBEAT","Event-Date-Timestamp":"1"}"#).unwrap();
        assert!(MAPPING.map("", &heartbeat).is_none());
        let no_leg = MAPPING.parse(r#"{"Event-Name":"CHANNEL_ANSWER","Event-Date-Timestamp":"1000"}"#);
        assert!(no_leg.cdrs.unwrap_err().contains("Unique-ID"));
    }
}
