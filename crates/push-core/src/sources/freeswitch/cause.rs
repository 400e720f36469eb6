//! How a FreeSWITCH leg ended, in the CDR's terms (INTEGRATIONS.md §1.1). Decided from the
//! cause *text* (`hangup_cause`), whether the leg was answered, `sip_term_status` and
//! `sip_hangup_disposition`, never from `hangup_cause_q850` alone: FreeSWITCH reports 16 for
//! every cause of its own above 127 (`switch_channel_cause_q850`), ORIGINATOR_CANCEL (487)
//! and LOSE_RACE (502) among them.

use crate::sources::outcome::{q850_for_sip, sip_for_q850, unanswered_disposition};

/// Which leg a CDR describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The caller's leg: the one FreeSWITCH received, or originated first.
    A,
    /// A leg originated for the a-leg (its caller profile has an originator).
    B,
}

/// What the CDR's outcome fields say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `disposition`.
    pub disposition: &'static str,
    /// `hangupCause` (Q.850, 0-127).
    pub hangup_cause: Option<u16>,
    /// `sipCode`.
    pub sip_code: Option<u16>,
    /// `releaseDirection`.
    pub release: &'static str,
}

impl Outcome {
    /// Puts the outcome's CDR fields into `cdr` (`hangupCause` and `sipCode` when known).
    pub fn write_into(&self, cdr: &mut serde_json::Map<String, serde_json::Value>) {
        cdr.insert("disposition".into(), self.disposition.into());
        cdr.insert("releaseDirection".into(), self.release.into());
        if let Some(c) = self.hangup_cause {
            cdr.insert("hangupCause".into(), c.into());
        }
        if let Some(s) = self.sip_code {
            cdr.insert("sipCode".into(), s.into());
        }
    }
}

/// The leg's facts the outcome is derived from.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    /// Which leg.
    pub leg: Leg,
    /// `hangup_cause` (NORMAL_CLEARING, USER_BUSY, ...).
    pub cause: Option<&'a str>,
    /// `sip_term_status`, when a SIP final status (100-699).
    pub sip_term: Option<u16>,
    /// `sip_hangup_disposition` (recv_bye, send_cancel, ...).
    pub how: Option<&'a str>,
    /// Answered (a non-zero answer time).
    pub answered: bool,
    /// The leg was bridged to, or tried to originate, another leg.
    pub had_other_leg: bool,
    /// `hangup_cause_q850`, used for `hangupCause` only when nothing better is known.
    pub reported_q850: Option<u16>,
}

/// The Q.850 number of a FreeSWITCH cause name of 0-127 (`switch_channel.c`'s cause table);
/// `None` for FreeSWITCH's own causes (above 127) and unknown names.
fn q850_of(name: &str) -> Option<u16> {
    Some(match name {
        "UNSPECIFIED" => 0,
        "UNALLOCATED_NUMBER" => 1,
        "NO_ROUTE_TRANSIT_NET" => 2,
        "NO_ROUTE_DESTINATION" => 3,
        "CHANNEL_UNACCEPTABLE" => 6,
        "CALL_AWARDED_DELIVERED" => 7,
        "NORMAL_CLEARING" => 16,
        "USER_BUSY" => 17,
        "NO_USER_RESPONSE" => 18,
        "NO_ANSWER" => 19,
        "SUBSCRIBER_ABSENT" => 20,
        "CALL_REJECTED" => 21,
        "NUMBER_CHANGED" => 22,
        "REDIRECTION_TO_NEW_DESTINATION" => 23,
        "EXCHANGE_ROUTING_ERROR" => 25,
        "DESTINATION_OUT_OF_ORDER" => 27,
        "INVALID_NUMBER_FORMAT" => 28,
        "FACILITY_REJECTED" => 29,
        "RESPONSE_TO_STATUS_ENQUIRY" => 30,
        "NORMAL_UNSPECIFIED" => 31,
        "NORMAL_CIRCUIT_CONGESTION" => 34,
        "NETWORK_OUT_OF_ORDER" => 38,
        "NORMAL_TEMPORARY_FAILURE" => 41,
        "SWITCH_CONGESTION" => 42,
        "ACCESS_INFO_DISCARDED" => 43,
        "REQUESTED_CHAN_UNAVAIL" => 44,
        "PRE_EMPTED" => 45,
        "FACILITY_NOT_SUBSCRIBED" => 50,
        "OUTGOING_CALL_BARRED" => 52,
        "INCOMING_CALL_BARRED" => 54,
        "BEARERCAPABILITY_NOTAUTH" => 57,
        "BEARERCAPABILITY_NOTAVAIL" => 58,
        "SERVICE_UNAVAILABLE" => 63,
        "BEARERCAPABILITY_NOTIMPL" => 65,
        "CHAN_NOT_IMPLEMENTED" => 66,
        "FACILITY_NOT_IMPLEMENTED" => 69,
        "SERVICE_NOT_IMPLEMENTED" => 79,
        "INVALID_CALL_REFERENCE" => 81,
        "INCOMPATIBLE_DESTINATION" => 88,
        "INVALID_MSG_UNSPECIFIED" => 95,
        "MANDATORY_IE_MISSING" => 96,
        "MESSAGE_TYPE_NONEXIST" => 97,
        "WRONG_MESSAGE" => 98,
        "IE_NONEXIST" => 99,
        "INVALID_IE_CONTENTS" => 100,
        "WRONG_CALL_STATE" => 101,
        "RECOVERY_ON_TIMER_EXPIRE" => 102,
        "MANDATORY_IE_LENGTH_ERROR" => 103,
        "PROTOCOL_ERROR" => 111,
        "INTERWORKING" => 127,
        // FreeSWITCH's own causes that stand for a SIP 6xx: their Q.850 equivalents.
        "BUSY_EVERYWHERE" => 17,
        "DECLINE" => 21,
        "DOES_NOT_EXIST_ANYWHERE" => 1,
        _ => return None,
    })
}

/// The outcome of one leg.
pub fn outcome(e: &Ending<'_>) -> Outcome {
    let disposition = disposition(e);
    let hangup_cause = e
        .cause
        .and_then(q850_of)
        .or_else(|| e.sip_term.and_then(q850_for_sip))
        .or_else(|| (e.cause == Some("ORIGINATOR_CANCEL")).then_some(16))
        .or(e.reported_q850.filter(|c| *c <= 127));
    let sip_code = e.sip_term.or_else(|| match (e.cause, e.answered) {
        (Some("ORIGINATOR_CANCEL"), _) => Some(487),
        (_, true) => Some(200),
        // Unanswered normal clearing has no SIP pair of its own.
        _ => hangup_cause.filter(|c| *c != 16).and_then(sip_for_q850),
    });
    Outcome { disposition, hangup_cause, sip_code, release: release(e) }
}

fn disposition(e: &Ending<'_>) -> &'static str {
    if e.answered {
        return "ANSWERED";
    }
    match e.cause {
        Some("ORIGINATOR_CANCEL" | "LOSE_RACE" | "PICKED_OFF") => "CANCELLED",
        Some("USER_BUSY" | "BUSY_EVERYWHERE") => "BUSY",
        // The callee declined (SIP 603 Decline): busy, as Asterisk writes it; a rejection by
        // the network (403, say) stays FAILED.
        Some("CALL_REJECTED" | "DECLINE") if e.sip_term == Some(603) => "BUSY",
        Some("NO_ANSWER" | "NO_USER_RESPONSE" | "ALLOTTED_TIMEOUT" | "PROGRESS_TIMEOUT" | "NO_PICKUP") => "NO_ANSWER",
        Some(name) if q850_of(name).is_some() => unanswered_disposition(q850_of(name).unwrap_or_default()),
        _ => match e.sip_term {
            Some(487) => "CANCELLED",
            Some(code) => q850_for_sip(code).map_or("FAILED", unanswered_disposition),
            None => "FAILED",
        },
    }
}

/// Who released, from `sip_hangup_disposition`, which is relative to the leg: `recv_*` is
/// the leg's own far end (the caller on the a-leg, the callee on the b-leg); `send_*` is
/// FreeSWITCH ending the leg, because the other leg ended (the cause says how) or on its own.
fn release(e: &Ending<'_>) -> &'static str {
    if e.cause == Some("ORIGINATOR_CANCEL") {
        return "CALLER";
    }
    let Some(how) = e.how else { return "UNKNOWN" };
    if how.starts_with("recv_") {
        return match e.leg {
            Leg::A => "CALLER",
            Leg::B => "CALLEE",
        };
    }
    if !how.starts_with("send_") {
        return "UNKNOWN";
    }
    let ended_by_the_callee =
        matches!(e.cause, Some("NORMAL_CLEARING" | "USER_BUSY" | "CALL_REJECTED" | "BUSY_EVERYWHERE" | "DECLINE"));
    match e.leg {
        Leg::A if ended_by_the_callee && e.had_other_leg => "CALLEE",
        Leg::B if e.cause == Some("NORMAL_CLEARING") => "CALLER",
        _ => "PLATFORM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ending(leg: Leg, cause: &'static str, sip: Option<u16>, how: &'static str, answered: bool) -> Ending<'static> {
        Ending {
            leg,
            cause: Some(cause),
            sip_term: sip,
            how: Some(how),
            answered,
            had_other_leg: true,
            reported_q850: Some(16),
        }
    }

    fn o(d: &'static str, c: Option<u16>, s: Option<u16>, r: &'static str) -> Outcome {
        Outcome { disposition: d, hangup_cause: c, sip_code: s, release: r }
    }

    #[test]
    fn the_cause_text_decides_not_the_q850_number() {
        let cancel = ending(Leg::A, "ORIGINATOR_CANCEL", Some(487), "recv_cancel", false);
        assert_eq!(outcome(&cancel), o("CANCELLED", Some(16), Some(487), "CALLER"));
        let cancel_b =
            Ending { sip_term: None, how: Some("send_cancel"), ..ending(Leg::B, "ORIGINATOR_CANCEL", None, "", false) };
        assert_eq!(outcome(&cancel_b), o("CANCELLED", Some(16), Some(487), "CALLER"));
        let busy = ending(Leg::B, "USER_BUSY", Some(486), "recv_refuse", false);
        assert_eq!(outcome(&busy), o("BUSY", Some(17), Some(486), "CALLEE"));
        let busy_a = ending(Leg::A, "USER_BUSY", Some(486), "send_refuse", false);
        assert_eq!(outcome(&busy_a), o("BUSY", Some(17), Some(486), "CALLEE"));
        let timeout = ending(Leg::B, "NO_ANSWER", Some(487), "send_cancel", false);
        assert_eq!(outcome(&timeout), o("NO_ANSWER", Some(19), Some(487), "PLATFORM"));
        let nobody = ending(Leg::A, "UNALLOCATED_NUMBER", None, "send_refuse", false);
        assert_eq!(outcome(&Ending { had_other_leg: false, ..nobody }), o("FAILED", Some(1), Some(404), "PLATFORM"));
    }

    #[test]
    fn an_answered_leg_is_released_by_whoever_sent_the_bye() {
        let caller_hung_up = ending(Leg::A, "NORMAL_CLEARING", Some(200), "recv_bye", true);
        assert_eq!(outcome(&caller_hung_up), o("ANSWERED", Some(16), Some(200), "CALLER"));
        let callee_hung_up = ending(Leg::A, "NORMAL_CLEARING", Some(200), "send_bye", true);
        assert_eq!(outcome(&callee_hung_up).release, "CALLEE");
        let b_after_caller = ending(Leg::B, "NORMAL_CLEARING", None, "send_bye", true);
        assert_eq!(outcome(&b_after_caller), o("ANSWERED", Some(16), Some(200), "CALLER"));
        let ivr = Ending { had_other_leg: false, ..callee_hung_up };
        assert_eq!(outcome(&ivr).release, "PLATFORM");
    }
}
