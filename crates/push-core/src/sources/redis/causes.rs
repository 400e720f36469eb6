//! FreeSWITCH's outcome vocabulary as mod_cti copies it from the channel: hangup cause names
//! (`switch_channel.c`'s cause table) and `sip_hangup_disposition` (who sent the BYE or
//! CANCEL on this leg).

/// The Q.850 cause of a FreeSWITCH cause name. FreeSWITCH's own causes above 127
/// (ORIGINATOR_CANCEL, LOSE_RACE, ALLOTTED_TIMEOUT, ...) are reported as 16, as
/// `switch_channel_cause_q850()` does.
pub fn q850(name: &str) -> Option<u16> {
    Some(match name {
        "UNSPECIFIED" => 0,
        "UNALLOCATED_NUMBER" => 1,
        "NO_ROUTE_TRANSIT_NET" => 2,
        "NO_ROUTE_DESTINATION" => 3,
        "NORMAL_CLEARING" => 16,
        "USER_BUSY" => 17,
        "NO_USER_RESPONSE" => 18,
        "NO_ANSWER" => 19,
        "SUBSCRIBER_ABSENT" => 20,
        "CALL_REJECTED" => 21,
        "NUMBER_CHANGED" => 22,
        "DESTINATION_OUT_OF_ORDER" => 27,
        "INVALID_NUMBER_FORMAT" => 28,
        "FACILITY_REJECTED" => 29,
        "NORMAL_UNSPECIFIED" => 31,
        "NORMAL_CIRCUIT_CONGESTION" => 34,
        "NETWORK_OUT_OF_ORDER" => 38,
        "NORMAL_TEMPORARY_FAILURE" => 41,
        "SWITCH_CONGESTION" => 42,
        "REQUESTED_CHAN_UNAVAIL" => 44,
        "OUTGOING_CALL_BARRED" => 52,
        "INCOMING_CALL_BARRED" => 54,
        "BEARERCAPABILITY_NOTAVAIL" => 58,
        "SERVICE_UNAVAILABLE" => 63,
        "INCOMPATIBLE_DESTINATION" => 88,
        "RECOVERY_ON_TIMER_EXPIRE" => 102,
        "PROTOCOL_ERROR" => 111,
        "INTERWORKING" => 127,
        "ORIGINATOR_CANCEL" | "LOSE_RACE" | "ALLOTTED_TIMEOUT" | "MANAGER_REQUEST" | "BLIND_TRANSFER"
        | "ATTENDED_TRANSFER" | "PICKED_OFF" | "USER_CHALLENGE" | "MEDIA_TIMEOUT" | "CRASH" | "SYSTEM_SHUTDOWN" => 16,
        _ => return None,
    })
}

/// `releaseDirection` from `sip_hangup_disposition` on one leg. On the a-leg (towards the
/// caller) a BYE or CANCEL received came from the caller, one sent was caused by the callee,
/// or by the platform when the leg was never bridged (an IVR, a queue); on the b-leg
/// (towards the callee) it is the other way round.
pub fn released_by(disposition: &str, b_leg: bool, bridged: bool) -> Option<&'static str> {
    let received = match disposition {
        "recv_bye" | "recv_cancel" | "recv_refuse" => true,
        "send_bye" | "send_cancel" | "send_refuse" => false,
        _ => return None,
    };
    Some(match (b_leg, received) {
        (false, true) => "CALLER",
        (true, true) => "CALLEE",
        (true, false) => "CALLER",
        (false, false) if bridged => "CALLEE",
        (false, false) => "PLATFORM",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_causes_are_normal_clearing_and_unknown_names_none() {
        assert_eq!(q850("USER_BUSY"), Some(17));
        assert_eq!(q850("ORIGINATOR_CANCEL"), Some(16));
        assert_eq!(q850("SOMETHING_NEW"), None);
    }

    #[test]
    fn who_released_depends_on_the_leg() {
        assert_eq!(released_by("recv_bye", false, true), Some("CALLER"));
        assert_eq!(released_by("send_bye", false, true), Some("CALLEE"));
        assert_eq!(released_by("send_bye", false, false), Some("PLATFORM"));
        assert_eq!(released_by("recv_bye", true, true), Some("CALLEE"));
        assert_eq!(released_by("send_cancel", true, true), Some("CALLER"));
        assert_eq!(released_by("whatever", true, true), None);
    }
}
