//! How a call ended, in the CDR's terms (`disposition`, `hangupCause`, `sipCode`,
//! `releaseDirection`), from what switches report. The Q.850 / SIP pairs follow RFC 3398
//! section 7 (INTEGRATIONS.md §4). Each source decides from its own fields; these are the
//! tables they share.

/// The SIP final status RFC 3398 pairs with a Q.850 cause (16, normal clearing, is 200 for an
/// answered call: the caller of this decides).
pub fn sip_for_q850(cause: u16) -> Option<u16> {
    Some(match cause {
        16 => 200,
        17 => 486,
        18 => 408,
        19 => 480,
        21 => 603,
        1 | 3 => 404,
        27 => 502,
        28 => 484,
        31 => 480,
        34 | 38 | 41 | 42 => 503,
        127 => 500,
        _ => return None,
    })
}

/// The Q.850 cause RFC 3398 pairs with a SIP final status.
pub fn q850_for_sip(code: u16) -> Option<u16> {
    Some(match code {
        200 => 16,
        404 => 1,
        486 | 600 => 17,
        408 => 18,
        480 => 18,
        487 => 16,
        484 => 28,
        403 | 603 => 21,
        500 => 41,
        502 => 27,
        503 => 41,
        _ => return None,
    })
}

/// `disposition` from a Q.850 cause of a call that was never answered: 17 busy; 16 / 18 /
/// 19 no answer (the caller gave up, or nobody picked up); anything else failed, 31 normal
/// unspecified and 21 call rejected included (a source that knows the callee declined, SIP
/// 603, says BUSY). An answered call is `ANSWERED` whatever its cause.
pub fn unanswered_disposition(cause: u16) -> &'static str {
    match cause {
        17 => "BUSY",
        16 | 18 | 19 => "NO_ANSWER",
        _ => "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_3398_pairs_go_both_ways_where_they_are_one_to_one() {
        for (cause, sip) in [(17, 486), (1, 404), (28, 484), (21, 603), (27, 502)] {
            assert_eq!(sip_for_q850(cause), Some(sip));
            assert_eq!(q850_for_sip(sip), Some(cause));
        }
        assert_eq!(q850_for_sip(487), Some(16), "request terminated: the caller cancelled");
        assert_eq!(sip_for_q850(200), None);
    }

    #[test]
    fn an_unanswered_call_is_busy_no_answer_or_failed() {
        assert_eq!(unanswered_disposition(17), "BUSY");
        assert_eq!(unanswered_disposition(19), "NO_ANSWER");
        assert_eq!(unanswered_disposition(1), "FAILED");
        assert_eq!(unanswered_disposition(21), "FAILED", "rejected, by whom it does not say");
        assert_eq!(unanswered_disposition(31), "FAILED", "normal unspecified is no answer of anyone");
    }
}
