//! The mapping's branches that the integration tests' answered legs do not reach: calls that
//! were never answered, the outcome derived from less, local `*_stamp` times, bad values,
//! and `extra`'s budget.

use serde_json::{json, Value};

use super::mapping::Mapping;
use crate::sources::localtime::Zone;

fn mapping(zone: &str) -> Mapping {
    Mapping { service_type: 100, account_id: None, zone: Zone::named(zone).unwrap() }
}

fn cdr(record: Value) -> Value {
    let mapped = mapping("UTC").map(&record.to_string());
    let cdr = mapped.cdrs.expect("mapped").remove(0);
    let valid = crate::schema::validate_body(crate::config::Service::Cdr, &cdr);
    assert!(valid.is_ok(), "a valid CDR: {cdr} {:?}", valid.err());
    cdr
}

fn reason(record: &str) -> String {
    mapping("UTC").map(record).cdrs.expect_err("not mapped")
}

#[test]
fn a_b_leg_the_caller_cancelled_is_cancelled_with_487_and_no_talk_time() {
    let cdr = cdr(json!({
        "uuid": "b", "originator": "a", "caller_id_number": "1001", "destination_number": "1002",
        "start_epoch": "1701388800", "progress_epoch": "1701388801", "answer_epoch": "0",
        "end_epoch": "1701388820", "billsec": "0", "hangup_cause": "ORIGINATOR_CANCEL",
        "hangup_cause_q850": "16", "sip_term_status": "487", "sip_hangup_disposition": "send_cancel"
    }));
    assert_eq!((&cdr["callId"], &cdr["party"]), (&json!("a"), &json!("CALLEE")));
    assert_eq!(
        (&cdr["startTime"], &cdr["endTime"], &cdr["duration"]),
        (&json!(1701388820000_i64), &json!(1701388820000_i64), &json!(0))
    );
    assert_eq!(cdr["ringTime"], 1701388801000_i64);
    assert_eq!(
        (&cdr["disposition"], &cdr["hangupCause"], &cdr["sipCode"]),
        (&json!("CANCELLED"), &json!(16), &json!(487))
    );
    assert_eq!(cdr["releaseDirection"], "CALLER");
}

#[test]
fn the_outcome_comes_from_the_cause_text_when_numbers_are_missing() {
    let cdr = cdr(json!({
        "uuid": "a", "caller_id_number": "1001", "callee_id_number": "1002",
        "end_uepoch": 1701388820000000_i64, "hangup_cause": "USER_BUSY"
    }));
    assert_eq!((&cdr["disposition"], &cdr["hangupCause"], &cdr["sipCode"]), (&json!("BUSY"), &json!(17), &json!(486)));
    assert_eq!(cdr["party"], "CALLER", "no originator: the a-leg");
    assert_eq!(cdr["calleeNumber"], "1002", "callee_id_number when nothing better is there");
    assert_eq!(cdr["releaseDirection"], "UNKNOWN", "no sip_hangup_disposition");
    assert!(cdr.get("beginCallTime").is_none(), "{cdr}");
}

#[test]
fn an_unbridged_leg_released_by_freeswitch_was_released_by_the_platform() {
    let cdr = cdr(json!({
        "uuid": "ivr", "caller_id_number": "1001", "destination_number": "9999", "answer_epoch": 1701388801,
        "end_epoch": 1701388860, "hangup_cause_q850": 16, "sip_hangup_disposition": "send_bye"
    }));
    assert_eq!(
        (&cdr["releaseDirection"], &cdr["disposition"], &cdr["sipCode"]),
        (&json!("PLATFORM"), &json!("ANSWERED"), &json!(200))
    );
    assert_eq!(cdr["duration"], 59);
}

#[test]
fn local_stamps_are_read_in_the_zone_and_billsec_gives_the_answer_time() {
    let record = json!({
        "uuid": "a", "caller_id_number": "1001", "dial_number": "1002",
        "start_stamp": "2023-12-01 08:00:00", "end_stamp": "2023-12-01 08:05:10", "billsec": "300"
    });
    let cdr = mapping("Asia/Shanghai").map(&record.to_string()).cdrs.unwrap().remove(0);
    assert_eq!(cdr["beginCallTime"], 1701388800000_i64, "08:00 in Shanghai is 00:00 UTC");
    assert_eq!((&cdr["startTime"], &cdr["endTime"]), (&json!(1701388810000_i64), &json!(1701389110000_i64)));
    assert_eq!((&cdr["duration"], &cdr["disposition"]), (&json!(300), &json!("ANSWERED")));
}

#[test]
fn records_that_cannot_be_mapped_say_why() {
    assert!(reason("{\"uuid\":").starts_with("not JSON"));
    assert_eq!(reason("[1]"), "a mod_cti CDR is a JSON object");
    assert_eq!(
        reason(r#"{"uuid":"a","caller_id_number":"1","dial_number":"2"}"#),
        "end time: none of end_uepoch, end_epoch, end_stamp"
    );
    assert_eq!(
        reason(r#"{"uuid":"a","caller_id_number":"1","dial_number":"2","end_epoch":"soon"}"#),
        "end_epoch: not a number"
    );
    assert_eq!(reason(r#"{"uuid":"a","dial_number":"2","end_epoch":1}"#), "caller_id_number: missing");
}

#[test]
fn extra_keeps_other_scalars_within_its_budget_and_leaves_out_nested_values() {
    let cdr = cdr(json!({
        "uuid": "a", "caller_id_number": "1", "dial_number": "2", "end_epoch": 1701388820,
        "queue_name": "sales", "details": {"variables": {}}, "huge": "x".repeat(5000), "jsipid": "j-1"
    }));
    assert_eq!(cdr["extra"], json!({"uuid": "a", "queue_name": "sales", "jsipid": "j-1"}));
}
