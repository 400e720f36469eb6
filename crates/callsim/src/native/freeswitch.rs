//! A leg's CDR as FreeSWITCH's mod_json_cdr posts it (`switch_ivr_generate_json_cdr`):
//! `core-uuid`, `switchname`, `channel_data`, `variables` (every value a string; times as
//! `*_epoch` seconds and `*_uepoch` µs, "0" when it did not happen), `callflow[]` with the
//! caller profile (a b-leg's names its a-leg in `originator.originator_caller_profiles`).
//!
//! The model: a one-leg call is the a-leg of a call FreeSWITCH received and bridged (its
//! b-leg not logged); a callback's legs are both originated by FreeSWITCH, A first, then B
//! bridged to it. The a-leg's uuid is the generated callId, the b-leg's [`super::b_leg_id`].
//! How a leg ended is written as FreeSWITCH reports it: the cause *text* of the Q.850 number
//! (ORIGINATOR_CANCEL for a cancelled leg, with `hangup_cause_q850` 16 as FreeSWITCH reports
//! for its causes above 127), `sip_term_status` = the SIP code, and `sip_hangup_disposition`
//! (relative to the leg: `recv_*` its own far end, `send_*` FreeSWITCH).

use serde_json::{json, Map, Value};

use super::b_leg_id;
use crate::model::{Cdr, Direction, Disposition, Party, ReleaseDirection, SUB_DUAL_CALL};

/// The `core-uuid` of the simulated switch.
pub const CORE_UUID: &str = "0f6c1c6e-2b1a-4c9e-9a57-ca11513e0001";
/// Its `switchname`.
pub const SWITCHNAME: &str = "callsim";

/// The leg's uuid: the callId on the a-leg, derived from it on the b-leg.
pub fn leg_uuid(cdr: &Cdr) -> String {
    match cdr.party {
        Some(Party::Callee) => b_leg_id(&cdr.common.call_id),
        _ => cdr.common.call_id.clone(),
    }
}

/// FreeSWITCH's cause name of a Q.850 cause (`switch_channel.c` cause table).
pub fn cause_name(q850: u8) -> &'static str {
    match q850 {
        1 => "UNALLOCATED_NUMBER",
        3 => "NO_ROUTE_DESTINATION",
        16 => "NORMAL_CLEARING",
        17 => "USER_BUSY",
        18 => "NO_USER_RESPONSE",
        19 => "NO_ANSWER",
        21 => "CALL_REJECTED",
        27 => "DESTINATION_OUT_OF_ORDER",
        31 => "NORMAL_UNSPECIFIED",
        34 => "NORMAL_CIRCUIT_CONGESTION",
        41 => "NORMAL_TEMPORARY_FAILURE",
        127 => "INTERWORKING",
        _ => "NORMAL_UNSPECIFIED",
    }
}

/// The leg as FreeSWITCH saw it: a callback's legs and every b-leg it placed (outbound);
/// the a-leg of a call it received (inbound).
fn fs_direction(cdr: &Cdr) -> &'static str {
    if cdr.sub_service_type == SUB_DUAL_CALL || cdr.party == Some(Party::Callee) {
        "outbound"
    } else {
        "inbound"
    }
}

/// `hangup_cause`, `hangup_cause_q850`, `sip_term_status`, `sip_hangup_disposition`.
fn ending(cdr: &Cdr) -> [(&'static str, String); 4] {
    let r = &cdr.release;
    let b_leg = cdr.party == Some(Party::Callee);
    let received = fs_direction(cdr) == "inbound";
    let (cause, q850) = match r.disposition {
        Disposition::Cancelled => ("ORIGINATOR_CANCEL", 16),
        _ => (cause_name(r.hangup_cause), r.hangup_cause),
    };
    let how = match (r.disposition, r.release_direction) {
        (Disposition::Answered, dir) => {
            // Who sent the BYE, seen from this leg: its own far end, or FreeSWITCH.
            let far_end = if b_leg { ReleaseDirection::Callee } else { ReleaseDirection::Caller };
            if dir == far_end {
                "recv_bye"
            } else {
                "send_bye"
            }
        }
        (Disposition::Cancelled, _) if received => "recv_cancel",
        (Disposition::Cancelled, _) => "send_cancel",
        // FreeSWITCH refuses a call it received ...
        _ if received => "send_refuse",
        // ... cancels a leg it placed when its own no-answer timer fires ...
        (Disposition::NoAnswer, ReleaseDirection::Platform) => "send_cancel",
        // ... and a leg it placed is refused by the far end.
        _ => "recv_refuse",
    };
    [
        ("hangup_cause", cause.to_string()),
        ("hangup_cause_q850", q850.to_string()),
        ("sip_term_status", r.sip_code.to_string()),
        ("sip_hangup_disposition", how.to_string()),
    ]
}

/// `start`, `progress`, `answer`, `end` as `*_epoch`, `*_uepoch` (and `*_usec` durations).
fn times(cdr: &Cdr, vars: &mut Map<String, Value>) {
    let answered = cdr.release.disposition == Disposition::Answered;
    let moments = [
        ("start", Some(cdr.begin_call_time)),
        ("progress", cdr.ring_time),
        ("answer", answered.then_some(cdr.start_time)),
        ("end", Some(cdr.end_time)),
    ];
    for (name, ms) in moments {
        let ms = ms.unwrap_or(0);
        vars.insert(format!("{name}_epoch"), (ms / 1000).to_string().into());
        vars.insert(format!("{name}_uepoch"), (ms * 1000).to_string().into());
    }
    vars.insert("progress_media_epoch".into(), "0".into());
    vars.insert("progress_media_uepoch".into(), "0".into());
    let secs = |from: i64, to: i64| ((to - from) / 1000).to_string();
    vars.insert("duration".into(), secs(cdr.begin_call_time, cdr.end_time).into());
    let bill = if answered { secs(cdr.start_time, cdr.end_time) } else { "0".into() };
    vars.insert("billsec".into(), bill.into());
    vars.insert("billmsec".into(), (if answered { cdr.end_time - cdr.start_time } else { 0 }).to_string().into());
}

/// The leg's channel variables (strings, as mod_json_cdr writes them; mod_cti copies them).
pub fn variables(cdr: &Cdr) -> Map<String, Value> {
    let uuid = leg_uuid(cdr);
    let a_uuid = cdr.common.call_id.clone();
    let b_leg = cdr.party == Some(Party::Callee);
    let mut vars = Map::new();
    let mut set = |k: &str, v: String| {
        vars.insert(k.to_string(), Value::String(v));
    };
    set("direction", fs_direction(cdr).into());
    set("uuid", uuid.clone());
    set("call_uuid", a_uuid.clone());
    set("channel_name", format!("sofia/external/{}@10.0.0.20", cdr.callee_number));
    set("sip_from_user", cdr.caller_number.clone());
    set("sip_to_user", cdr.callee_number.clone());
    set("caller_id_number", cdr.caller_number.clone());
    set("destination_number", cdr.callee_number.clone());
    set("sip_call_id", format!("{uuid}@callsim"));
    if let Some(account) = &cdr.common.account_id {
        set("accountcode", account.clone());
    }
    if let Some(direction) = cdr.direction {
        // FusionPBX's call_direction: the call's direction for the carrier, not the leg's.
        set("call_direction", if direction == Direction::Inbound { "inbound" } else { "outbound" }.into());
    }
    let answered = cdr.release.disposition == Disposition::Answered;
    if b_leg {
        set("originating_leg_uuid", a_uuid.clone());
    } else if cdr.sub_service_type != SUB_DUAL_CALL && cdr.privacy.as_ref().is_none_or(|p| p.secret_call_type != 12) {
        // The a-leg of a call FreeSWITCH received tried to bridge it (an intercepted call
        // was refused before that).
        set("originate_disposition", cause_name(cdr.release.hangup_cause).into());
    }
    // A callback's A released by the platform (B failed) was never bridged.
    if answered && cdr.release.release_direction != ReleaseDirection::Platform {
        let other = if b_leg { a_uuid } else { b_leg_id(&cdr.common.call_id) };
        set("bridge_uuid", other.clone());
        set("last_bridge_to", other);
    }
    for (name, value) in ending(cdr) {
        set(name, value);
    }
    times(cdr, &mut vars);
    vars
}

/// `callflow[0].caller_profile`: numbers, uuid, and on a b-leg its originator.
fn caller_profile(cdr: &Cdr) -> Value {
    let mut profile = json!({
        "username": cdr.caller_number,
        "dialplan": "XML",
        "caller_id_name": cdr.caller_number,
        "ani": cdr.caller_number,
        "aniii": "",
        "caller_id_number": cdr.caller_number,
        "network_addr": "10.0.0.20",
        "rdnis": "",
        "destination_number": cdr.callee_number,
        "uuid": leg_uuid(cdr),
        "source": "mod_sofia",
        "context": "public",
        "chan_name": format!("sofia/external/{}@10.0.0.20", cdr.callee_number),
    });
    if cdr.party == Some(Party::Callee) {
        profile["originator"] = json!({"originator_caller_profiles": [{
            "username": cdr.caller_number,
            "caller_id_number": cdr.caller_number,
            "destination_number": cdr.caller_number,
            "uuid": cdr.common.call_id,
            "source": "mod_sofia",
            "context": "public",
        }]});
    }
    profile
}

/// `callflow[0].times`: µs strings, "0" when it did not happen.
fn profile_times(cdr: &Cdr) -> Value {
    let us = |ms: Option<i64>| (ms.unwrap_or(0) * 1000).to_string();
    let answered = (cdr.release.disposition == Disposition::Answered).then_some(cdr.start_time);
    json!({
        "created_time": us(Some(cdr.begin_call_time)),
        "profile_created_time": us(Some(cdr.begin_call_time)),
        "progress_time": us(cdr.ring_time),
        "progress_media_time": "0",
        "answered_time": us(answered),
        "bridged_time": us(answered),
        "last_hold_time": "0",
        "hold_accum_time": "0",
        "hangup_time": us(Some(cdr.end_time)),
        "resurrect_time": "0",
        "transfer_time": "0",
    })
}

/// The whole mod_json_cdr document of the leg `cdr` describes.
pub fn document(cdr: &Cdr) -> Value {
    let direction = fs_direction(cdr);
    json!({
        "core-uuid": CORE_UUID,
        "switchname": SWITCHNAME,
        "channel_data": {"state": "CS_REPORTING", "direction": direction, "state_number": "11",
                         "flags": "0=1;1=1;3=1;20=1;37=1;38=1;40=1;43=1;48=1;53=1", "caps": "1=1;2=1;3=1;4=1;5=1;6=1"},
        "variables": variables(cdr),
        "app_log": {"applications": [{"app_name": "bridge", "app_data": format!("sofia/gateway/carrier/{}", cdr.callee_number)}]},
        "callflow": [{
            "dialplan": "XML",
            "profile_index": "1",
            "extension": {"name": "callsim", "number": cdr.callee_number},
            "caller_profile": caller_profile(cdr),
            "times": profile_times(cdr),
        }],
    })
}
