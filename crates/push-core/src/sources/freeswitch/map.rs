//! One mod_json_cdr leg to one SPEC §2.1 CDR.
//!
//! - `callId`: the a-leg's uuid on both legs; a b-leg (its caller profile has an
//!   `originator`) names it in `callflow[].caller_profile.originator.originator_caller_profiles`
//!   (else `originating_leg_uuid`). `party`: CALLER on the a-leg, CALLEE on the b-leg.
//! - Numbers from the current caller profile (`callflow[0]`): `caller_id_number`,
//!   `destination_number`.
//! - Times from the `*_uepoch` variables (µs, else `*_epoch` s) in ms: `beginCallTime` = start,
//!   `startTime` = answer (= end when never answered), `ringTime` = the first progress (180)
//!   or early media (183) when it lies between begin and answer.
//! - `direction`: the FusionPBX-style `call_direction` variable when set (inbound, outbound,
//!   local → INTERNAL), else the leg's own `channel_data.direction` as FreeSWITCH sees it
//!   (a call it received is INBOUND, a leg it placed OUTBOUND).
//! - Outcome: see `cause`.

use serde_json::{json, Map, Value};

use super::{
    body::{percent_decode, Document},
    cause::{self, Ending, Leg},
};
use crate::config::FreeswitchSettings;

/// The variables every mod_json_cdr CDR has, read as strings.
struct Variables<'a>(&'a Map<String, Value>);

impl Variables<'_> {
    /// A non-empty variable.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty())
    }

    /// A non-empty variable as FreeSWITCH wrote it (not trimmed), for `extra`.
    fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str).filter(|v| !v.is_empty())
    }

    /// A time in µs: `<name>_uepoch`, else `<name>_epoch` in seconds; 0 is "did not happen".
    fn micros(&self, name: &str) -> Option<i64> {
        let micros = self.get(&format!("{name}_uepoch")).and_then(|v| v.parse::<i64>().ok());
        let micros = micros.or_else(|| {
            let secs = self.get(&format!("{name}_epoch")).and_then(|v| v.parse::<i64>().ok());
            secs.map(|s| s.saturating_mul(1_000_000))
        });
        micros.filter(|us| *us > 0)
    }
}

/// Percent-decodes every value of `variables` (mod_json_cdr's `encode-values`).
pub fn decode_variables(doc: &mut Document) {
    if let Some(Value::Object(vars)) = doc.0.get_mut("variables") {
        for value in vars.values_mut() {
            if let Value::String(s) = value {
                if s.contains('%') {
                    *s = String::from_utf8_lossy(&percent_decode(s.as_bytes())).into_owned();
                }
            }
        }
    }
}

/// The CDR of one leg, or why it cannot be mapped.
pub fn to_cdr(doc: &Document, settings: &FreeswitchSettings, query_uuid: Option<&str>) -> Result<Value, String> {
    let vars = match doc.0.get("variables") {
        Some(Value::Object(vars)) => Variables(vars),
        _ => return Err("the CDR has no \"variables\" object".into()),
    };
    let profiles: Vec<&Value> = doc.0.get("callflow").and_then(Value::as_array).into_iter().flatten().collect();
    let profile = profiles.first().map(|p| &p["caller_profile"]).unwrap_or(&Value::Null);
    let text = |v: &Value| v.as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let uuid = vars.get("uuid").map(str::to_string).or_else(|| text(&profile["uuid"]));
    let uuid = uuid.or(query_uuid.map(str::to_string)).ok_or("the CDR names no leg uuid (variables.uuid)")?;
    let originator = profiles
        .iter()
        .find_map(|p| text(&p["caller_profile"]["originator"]["originator_caller_profiles"][0]["uuid"]))
        .or_else(|| vars.get("originating_leg_uuid").filter(|o| *o != uuid).map(str::to_string));
    let leg = if originator.is_some() { Leg::B } else { Leg::A };
    let caller = text(&profile["caller_id_number"])
        .or_else(|| ["caller_id_number", "ani", "sip_from_user"].iter().find_map(|n| vars.get(n).map(str::to_string)))
        .ok_or("the CDR has no caller number (caller_profile.caller_id_number)")?;
    let callee = text(&profile["destination_number"])
        .or_else(|| {
            ["destination_number", "sip_req_user", "sip_to_user"].iter().find_map(|n| vars.get(n).map(str::to_string))
        })
        .ok_or("the CDR has no destination number (caller_profile.destination_number)")?;
    let mut cdr = json!({
        "callId": originator.clone().unwrap_or_else(|| uuid.clone()),
        "serviceType": settings.service_type,
        "callerNumber": caller,
        "calleeNumber": callee,
        "party": if leg == Leg::A { "CALLER" } else { "CALLEE" },
    });
    let cdr_map = cdr.as_object_mut().expect("an object");
    times(&vars, cdr_map)?;
    if let Some(direction) = direction(doc, &vars) {
        cdr_map.insert("direction".into(), direction.into());
    }
    outcome(&vars, leg, cdr_map);
    let account = settings.account_variable.as_deref().and_then(|name| vars.get(name).map(str::to_string));
    if let Some(account) = account.or_else(|| settings.account_id.clone()) {
        cdr_map.insert("accountId".into(), account.into());
    }
    cdr_map.insert("extra".into(), extra(doc, &vars, &uuid, settings));
    Ok(cdr)
}

fn times(vars: &Variables<'_>, cdr: &mut Map<String, Value>) -> Result<(), String> {
    let ms = |us: i64| us.div_euclid(1000);
    let begin = vars.micros("start").map(ms).ok_or("the CDR has no start time (start_uepoch)")?;
    let end = vars.micros("end").map(ms).ok_or("the CDR has no end time (end_uepoch)")?;
    let start = vars.micros("answer").map(ms).unwrap_or(end);
    let ring = [vars.micros("progress"), vars.micros("progress_media")].into_iter().flatten().min().map(ms);
    cdr.insert("beginCallTime".into(), begin.into());
    if let Some(ring) = ring.filter(|r| (begin..=start).contains(r)) {
        cdr.insert("ringTime".into(), ring.into());
    }
    cdr.insert("startTime".into(), start.into());
    cdr.insert("endTime".into(), end.into());
    cdr.insert("duration".into(), (end - start).div_euclid(1000).into());
    Ok(())
}

fn direction(doc: &Document, vars: &Variables<'_>) -> Option<&'static str> {
    let named = vars.get("call_direction").or_else(|| doc.0.get("channel_data")?.get("direction")?.as_str());
    match named?.to_ascii_lowercase().as_str() {
        "inbound" => Some("INBOUND"),
        "outbound" => Some("OUTBOUND"),
        "local" | "internal" => Some("INTERNAL"),
        _ => None,
    }
}

fn outcome(vars: &Variables<'_>, leg: Leg, cdr: &mut Map<String, Value>) {
    let had_other_leg =
        ["bridge_uuid", "last_bridge_to", "originate_disposition", "originated_legs", "originate_causes"]
            .iter()
            .any(|n| vars.get(n).is_some());
    let ending = Ending {
        leg,
        cause: vars.get("hangup_cause"),
        sip_term: vars.get("sip_term_status").and_then(|s| s.parse().ok()).filter(|c| (100..=699).contains(c)),
        how: vars.get("sip_hangup_disposition"),
        answered: vars.micros("answer").is_some(),
        had_other_leg,
        reported_q850: vars.get("hangup_cause_q850").and_then(|s| s.parse().ok()),
    };
    cause::outcome(&ending).write_into(cdr);
}

/// What a subscriber may want that the SPEC has no field for: where the record comes from,
/// the leg, FreeSWITCH's own outcome, and the configured variables.
fn extra(doc: &Document, vars: &Variables<'_>, uuid: &str, settings: &FreeswitchSettings) -> Value {
    let mut extra = Map::new();
    for key in ["core-uuid", "switchname"] {
        if let Some(v) = doc.0.get(key).and_then(Value::as_str) {
            extra.insert(key.into(), v.into());
        }
    }
    extra.insert("uuid".into(), uuid.into());
    for name in ["hangup_cause", "sip_hangup_disposition"] {
        if let Some(v) = vars.get(name) {
            extra.insert(name.into(), v.into());
        }
    }
    for name in &settings.variables {
        if let Some(v) = vars.raw(name) {
            extra.insert(name.clone(), v.into());
        }
    }
    Value::Object(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FreeswitchSettings {
        FreeswitchSettings {
            service_type: 100,
            account_id: Some("tenant".into()),
            account_variable: Some("accountcode".into()),
            encoded_values: false,
            variables: vec![],
        }
    }

    fn doc(vars: Value) -> Document {
        Document(json!({ "variables": vars, "callflow": [] }).as_object().unwrap().clone())
    }

    #[test]
    fn seconds_stand_in_for_missing_microseconds_and_the_query_names_the_leg() {
        let vars = json!({"caller_id_number": "1001", "destination_number": "1002", "start_epoch": "1700000000",
                          "answer_epoch": "0", "end_epoch": "1700000030", "progress_uepoch": "1700000031000000",
                          "hangup_cause": "NO_ANSWER"});
        let cdr = to_cdr(&doc(vars), &settings(), Some("leg-1")).unwrap();
        assert_eq!(cdr["callId"], "leg-1");
        assert_eq!(
            (cdr["beginCallTime"].as_i64(), cdr["startTime"].as_i64()),
            (Some(1_700_000_000_000), Some(1_700_000_030_000))
        );
        assert_eq!(cdr["duration"], 0);
        assert!(cdr.get("ringTime").is_none(), "a progress after the end is left out");
        assert_eq!(cdr["accountId"], "tenant", "accountcode unset: the configured account");
        assert!(cdr.get("direction").is_none());
    }

    #[test]
    fn a_record_without_what_a_cdr_needs_names_what_is_missing() {
        let no_end = json!({"uuid": "u", "caller_id_number": "1", "destination_number": "2", "start_uepoch": "1"});
        assert!(to_cdr(&doc(no_end), &settings(), None).unwrap_err().contains("end_uepoch"));
        let no_uuid = json!({"caller_id_number": "1"});
        assert!(to_cdr(&doc(no_uuid), &settings(), None).unwrap_err().contains("uuid"));
        let no_callee = json!({"uuid": "u", "caller_id_number": "1"});
        assert!(to_cdr(&doc(no_callee), &settings(), None).unwrap_err().contains("destination"));
    }
}
